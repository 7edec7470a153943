"""Tiny real data files for the image, sequence and text tasks (written into a test's tmp dir).

Each maker writes a small file (PNGs, CSVs, an .npz) with a learnable signal, so a model of a
few units fits it in a few epochs, and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

WORDS = {
    "up": "bright sunny warm glad happy joyful golden merry",
    "down": "dark cold grim sad gloomy bleak bitter weary",
}


def image_folder(
    folder: Path, per_class: int = 8, size: int = 6, classes: tuple[str, ...] = ("bar", "dot")
) -> Path:
    """``folder/<class>/<n>.png``: vertical bars vs centre dots, with noise (grayscale)."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (folder / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            img = rng.uniform(0, 60, (size, size))
            if c == 0:
                img[:, size // 2 - 1 : size // 2 + 1] += 180
            else:
                img[size // 2 - 1 : size // 2 + 1, size // 2 - 1 : size // 2 + 1] += 180
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(folder / name / f"{i}.png")
    return folder


def image_npz(path: Path, n: int = 24, size: int = 6) -> Path:
    """An .npz with ``x`` (n, size, size) uint8 and ``y`` labels 0/1 (bars vs dots)."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 60, (n, size, size))
    y = np.arange(n) % 2
    x[y == 0, :, size // 2] += 180
    x[y == 1, size // 2, :] += 180
    np.savez(path, x=np.clip(x, 0, 255).astype(np.uint8), y=y)
    return path


def series_csv(path: Path, n: int = 80) -> Path:
    """A noisy sine with a time column ``t`` and values ``y`` and ``x2``."""
    rng = np.random.default_rng(0)
    t = np.arange(n)
    df = pd.DataFrame(
        {
            "t": 2000 + t,
            "y": np.sin(t / 4) * 10 + 20 + rng.normal(0, 0.5, n),
            "x2": np.cos(t / 4) + rng.normal(0, 0.1, n),
        }
    )
    df.to_csv(path, index=False)
    return path


def sequences_csv(path: Path, n: int = 40) -> Path:
    """Labelled sequences (one row per step): rising vs falling, 4 to 9 steps, 2 values."""
    rng = np.random.default_rng(0)
    rows = []
    for s in range(n):
        label = "rise" if s % 2 == 0 else "fall"
        length = int(rng.integers(4, 10))
        slope = 1.0 if label == "rise" else -1.0
        for step in range(length):
            rows.append(
                {
                    "seq": f"s{s}",
                    "step": step,
                    "a": slope * step + rng.normal(0, 0.3),
                    "b": rng.normal(0, 1),
                    "y": label,
                }
            )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def texts_csv(path: Path, n: int = 60, number: bool = False) -> Path:
    """Short texts of happy or gloomy words; ``y`` is the mood (or a score when ``number``)."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        mood = "up" if i % 2 == 0 else "down"
        words = rng.choice(WORDS[mood].split(), size=int(rng.integers(3, 12)))
        filler = rng.choice(["the", "a", "of", "and", "to", "in"], size=3)
        text = " ".join([*words, *filler])
        score = (1.0 if mood == "up" else -1.0) * len(words) + rng.normal(0, 0.2)
        rows.append({"text": text, "y": round(score, 3) if number else mood, "grp": f"g{i % 6}"})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def text_recipe(
    source: Path,
    model: dict[str, object],
    name: str = "moods",
    epochs: int = 6,
    max_length: int = 16,
    **data: object,
) -> dict[str, object]:
    """A recipe classifying ``texts_csv``'s mood (``y``) with a tiny WordPiece vocabulary."""
    return {
        "name": name,
        "task": "text-classification",
        "data": {
            "source": str(source),
            "target": "y",
            "max_length": max_length,
            "tokenizer": {"kind": "wordpiece", "vocab_size": 80},
            **data,
        },
        "model": model,
        "train": {"epochs": epochs, "batch_size": 8, "optimizer": {"lr": 0.01}},
        "evaluate": {"plots": False},
    }
