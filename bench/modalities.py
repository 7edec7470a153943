"""Images and text: tensorsmith's training loop against a hand-written PyTorch loop of the same
model and batch, and bf16 against fp32, measured in the same run.

- digits CNN (examples/digits_cnn): ours reads the PNG folder through the image task (decoding
  in one DataLoader worker); the hand-written loop decodes the same PNGs with Pillow in a
  ``Dataset`` with one worker and trains the same CNN (``build_model`` of the same spec, same
  initial weights) with batch 64. Augmentation is off in both, so both do the same work.
- genre transformer (examples/shakespeare_genre/transformer.yaml): ours feeds length-bucketed
  batches cut to their longest passage; the hand-written loop trains the same encoder on the
  same token ids with batch 32, padded to max_length (what a plain loop does), and again on
  our batches (the same work: the loop overhead alone).

Ours is timed by run.json's ``train_seconds`` (the loop alone; no validation split, so no
evaluation inside it); the hand-written loops by a clock around their epochs. Runs alternate,
``--repeats`` times; medians. Training samples/s; ratio = our time / hand-written time.

    python bench/modalities.py [--repeats 3] [--cnn-epochs 3] [--text-epochs 1]
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rich.console import Console
from torch.utils.data import DataLoader, Dataset

import tensorsmith
from tensorsmith.models import build_model
from tensorsmith.recipe import load_recipe
from tensorsmith.tasks import create_task
from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
DIGITS = EXAMPLES / "digits_cnn" / "recipe.yaml"
GENRE = EXAMPLES / "shakespeare_genre" / "transformer.yaml"
QUIET = Console(file=io.StringIO())


def ours(recipe: Path, overrides: list[str], store: Path) -> float:
    """Training samples per second of ``tensorsmith train`` (run.json: the loop alone)."""
    model = tensorsmith.train(recipe, overrides, store=store, console=QUIET)
    return float(model.run["samples_per_second"])


Batches = Callable[[int], Iterable[tuple[torch.Tensor, ...]]]


def hand_loop(model: torch.nn.Module, batches: Batches, epochs: int, optimizer: Any) -> float:
    """A plain PyTorch loop (fp32, default AdamW): samples per second over ``epochs``."""
    torch.manual_seed(0)
    opt = torch.optim.AdamW(
        model.parameters(), lr=optimizer.lr, weight_decay=optimizer.weight_decay
    )
    model.train()
    seen = 0
    start = time.perf_counter()
    for epoch in range(epochs):
        for *inputs, y in batches(epoch):
            loss = F.cross_entropy(model(*inputs), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
    return seen / (time.perf_counter() - start)


# ----------------------------------------------------------------------------- digits


class Pngs(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """What one writes by hand: Pillow decodes each PNG, normalised with fixed statistics."""

    def __init__(self, paths: list[str], labels: list[int], mean: float, std: float) -> None:
        self.paths, self.labels, self.mean, self.std = paths, labels, mean, std

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        with Image.open(self.paths[i]) as img:
            pixels = np.asarray(img.convert("L"), dtype=np.float32) / 255.0
        x = (torch.from_numpy(pixels)[None] - self.mean) / self.std  # (1, 8, 8)
        return x, torch.tensor(self.labels[i])


DIGIT_SETTINGS = [
    "data.split.valid=0.0",
    "data.augment.crop_padding=0",
    "data.augment.rotation=0",
    "train.schedule.name=constant",
    "train.optimizer.weight_decay=0.0",
    "evaluate.plots=false",
]


def digits(store: Path, epochs: int) -> float:
    """The hand-written loop's samples/s on the digits CNN."""
    sets = [*DIGIT_SETTINGS, f"train.epochs={epochs}"]
    recipe = load_recipe(DIGITS, sets)
    task = create_task(recipe)
    prepared = task.prepare(store / ".cache", QUIET)
    data = prepared.train.dataset
    labels = data.labels.tolist()
    pngs = Pngs(data.refs, labels, task.mean_[0], task.std_[0])  # type: ignore[attr-defined]
    torch.manual_seed(recipe.train.seed)
    model = build_model(recipe.model, prepared.dims)

    def batches(epoch: int) -> Iterable[tuple[torch.Tensor, ...]]:
        gen = torch.Generator().manual_seed(epoch)
        return DataLoader(pngs, batch_size=64, shuffle=True, num_workers=1, generator=gen)

    return hand_loop(model, batches, epochs, recipe.train.optimizer)


# ----------------------------------------------------------------------------- genre


GENRE_SETTINGS = [
    "data.split.valid=0.0",
    "train.early_stopping=null",
    "train.grad_clip=null",
    "evaluate.plots=false",
]


def genre(store: Path, epochs: int) -> tuple[float, float]:
    """Hand-written samples/s: padded to max_length, and on our bucketed batches."""
    sets = [*GENRE_SETTINGS, f"train.epochs={epochs}"]
    recipe = load_recipe(GENRE, sets)
    task = create_task(recipe)
    prepared = task.prepare(store / ".cache", QUIET)
    data = prepared.train.dataset  # Padded: ids (N, 256), lengths, labels
    ids, lengths, y = data.x.long(), data.lengths, data.targets[0]
    full = (ids, torch.arange(ids.shape[1]) < lengths[:, None], y)
    opt = recipe.train.optimizer

    def padded(epoch: int) -> Iterable[tuple[torch.Tensor, ...]]:
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch))
        for b in order.split(32):
            yield tuple(t[b] for t in full)

    def same_as_ours(epoch: int) -> Iterable[tuple[torch.Tensor, ...]]:
        return prepared.train.batches(epoch)

    torch.manual_seed(recipe.train.seed)
    a = hand_loop(build_model(recipe.model, prepared.dims), padded, epochs, opt)
    torch.manual_seed(recipe.train.seed)
    b = hand_loop(build_model(recipe.model, prepared.dims), same_as_ours, epochs, opt)
    return a, b


def measure(tmp: Path, r: int, cnn_epochs: int, text_epochs: int) -> dict[str, float]:
    """One repeat: each measurement once, alternating ours and the hand-written loops."""
    out: dict[str, float] = {}
    cnn = [*DIGIT_SETTINGS, f"train.epochs={cnn_epochs}"]
    text = [*GENRE_SETTINGS, f"train.epochs={text_epochs}"]
    out["cnn ours fp32"] = ours(DIGITS, cnn, tmp / f"{r}a")
    out["cnn hand"] = digits(tmp / f"{r}b", cnn_epochs)
    out["cnn ours bf16"] = ours(DIGITS, [*cnn, "train.precision=bf16"], tmp / f"{r}c")
    out["text ours fp32"] = ours(GENRE, text, tmp / f"{r}d")
    out["text hand padded"], out["text hand same"] = genre(tmp / f"{r}e", text_epochs)
    out["text ours bf16"] = ours(GENRE, [*text, "train.precision=bf16"], tmp / f"{r}f")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cnn-epochs", type=int, default=3)
    parser.add_argument("--text-epochs", type=int, default=1)
    args = parser.parse_args()
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for key, value in measure(Path(tmp), r, args.cnn_epochs, args.text_epochs).items():
                rows.setdefault(key, []).append(value)
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rows.items()))
    m = {k: statistics.median(v) for k, v in rows.items()}
    print(
        f"\n{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}; median of "
        f"{args.repeats}; training samples/s; ratio = our time / the hand-written loop's time"
    )
    print(f"{'model':<19}{'ours fp32':>10}{'hand-written':>14}{'ratio':>8}  hand-written loop")
    for name, key, hand, what in (
        ("digits CNN", "cnn", "cnn hand", "Pillow Dataset, 1 worker, batch 64"),
        ("genre transformer", "text", "text hand padded", "batch 32 padded to max_length"),
        ("genre transformer", "text", "text hand same", "our length-bucketed batches"),
    ):
        mine, theirs = m[f"{key} ours fp32"], m[hand]
        print(f"{name:<19}{mine:>10.0f}{theirs:>14.0f}{theirs / mine:>8.3f}  {what}")
    for name, key in (("digits CNN", "cnn"), ("genre transformer", "text")):
        fp32, bf16 = m[f"{key} ours fp32"], m[f"{key} ours bf16"]
        print(f"{name}: bf16 {bf16:.0f} vs fp32 {fp32:.0f} samples/s: {bf16 / fp32:.3f}x")


if __name__ == "__main__":
    main()
