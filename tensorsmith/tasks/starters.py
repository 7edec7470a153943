"""Starter recipes for ``tensorsmith init``, one function per task in ``STARTERS``.

Each starter says whether a data file is its task's kind and returns a starter recipe (a dict)
if so. The rules do not overlap: a folder is images, a table with ``--time`` is a time series, a
table whose features are text (and no numbers) is text, any other table with ``--target`` is a
table task (regression for a numeric target with many values). Starters read files with pandas
and Pillow only: ``init`` imports no torch. A new task adds its function and a line below.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tensorsmith.data.image_files import common_shape, list_images, probe
from tensorsmith.data.preprocess import infer_type
from tensorsmith.data.series import read_series
from tensorsmith.data.tables import TABLE_FORMATS, check_columns, read_table
from tensorsmith.errors import DataError
from tensorsmith.registry import Registry

__all__ = ["STARTERS", "Starter", "starter_name"]

# (data path, --target, --time) → a starter recipe, or None when the data is not the task's kind
Starter = Callable[[Path, str | None, str | None], dict[str, Any] | None]


def starter_name(path: Path) -> str:
    """A model name from a file or folder name: lower case, other characters as dashes."""
    name = "".join(ch if ch.isalnum() else "-" for ch in path.stem.lower()).strip("-")
    return name or "model"


def read_starter_table(
    path: Path, target: str | None
) -> tuple[pd.DataFrame, dict[str, str]] | None:
    """The table and its inferred feature types, or None when ``path`` is not a table."""
    if target is None or path.is_dir() or path.suffix.lower() not in TABLE_FORMATS:
        return None
    df = read_table(path)
    check_columns(df, [target], "--target", path.name)
    return df, {c: infer_type(df[c]) for c in df.columns if c != target}


def is_numeric_target(column: pd.Series) -> bool:
    """A number with more than 20 distinct values is regressed; anything else is classified."""
    return infer_type(column) == "number" and column.nunique() > 20


def is_text_table(types: dict[str, str]) -> bool:
    """Text features and no number features: the text is what the model must read."""
    values = set(types.values())
    return "text" in values and not values & {"number", "binary"}


def _target_table(
    path: Path, target: str | None, time: str | None
) -> tuple[pd.DataFrame, dict[str, str], bool] | None:
    """A table with ``--target`` and no ``--time``: the table, its feature types and whether the
    target is a number to regress; None for any other data."""
    found = read_starter_table(path, target) if time is None else None
    if found is None:
        return None
    df, types = found
    assert target is not None
    return df, types, is_numeric_target(df[target])


def table_starter(
    task: str, path: Path, target: str | None, time: str | None
) -> dict[str, Any] | None:
    """The starter recipe of a table task (regression or classification), or None."""
    found = _target_table(path, target, time)
    if found is None:
        return None
    _, types, numeric = found
    if is_text_table(types) or (task == "regression") != numeric:
        return None
    categories = {c: t for c, t in types.items() if t == "category"}
    recipe: dict[str, Any] = {
        "name": starter_name(path),
        "task": task,
        "data": {
            "source": str(path.resolve()),
            "target": target,
            "types": categories,
            "split": {"valid": 0.15, "test": 0.15, "seed": 0},
        },
        "model": {"arch": "mlp", "hidden": [64, 32], "activation": "relu"},
        "train": {
            "epochs": 200,
            "batch_size": 32,
            "optimizer": {"name": "adam", "lr": 0.001},
            "early_stopping": {"monitor": "valid_loss", "patience": 20},
            "seed": 0,
        },
        "evaluate": {"gate": {"r2": ">= 0.5"} if numeric else {"accuracy": ">= 0.8"}},
    }
    if not categories:
        del recipe["data"]["types"]
    return recipe


def image_starter(path: Path, target: str | None, time: str | None) -> dict[str, Any] | None:
    """A folder with one sub-folder of images per class: a small CNN."""
    if not path.is_dir():
        return None
    found = list_images(path)
    probes = [p for p in (probe(r) for r in found.frame["path"][:200]) if not isinstance(p, str)]
    (h, w), _, _ = common_shape(probes) if probes else ((32, 32), False, None)
    side = max(h, w)
    return {
        "name": starter_name(path),
        "task": "image-classification",
        "data": {
            "source": str(path.resolve()),
            "image": {"size": [h, w], "mode": "auto"},
            "augment": {"crop_padding": max(1, side // 8), "flip": False},
            "split": {"valid": 0.15, "test": 0.15, "seed": 0},
        },
        "model": {
            "arch": "cnn",
            "channels": [32, 64] if side <= 16 else [32, 64, 128],
            "batch_norm": True,
            "head": [64],
            "dropout": 0.2,
        },
        "train": {
            "epochs": 20,
            "batch_size": 64,
            "optimizer": {"name": "adam", "lr": 0.001},
            "seed": 0,
        },
        "evaluate": {"gate": {"accuracy": ">= 0.8"}},
    }


def series_starter(path: Path, target: str | None, time: str | None) -> dict[str, Any] | None:
    """A table with a time column (``--time``) and a series to forecast (``--target``)."""
    if time is None:
        return None
    if target is None:
        raise DataError("--time needs --target COL: the column of the series to forecast")
    found = read_starter_table(path, target)
    if found is None:
        return None
    series = read_series(found[0], time, target, None, path.name)
    return {
        "name": starter_name(path),
        "task": "sequence-regression",
        "data": {
            "source": str(path.resolve()),
            "time": time,
            "target": target,
            "lookback": max(2, min(16, len(series.frame) // 10)),
            "horizon": 1,
            "split": {"valid": 0.15, "test": 0.15},
        },
        "model": {"arch": "rnn", "cell": "lstm", "hidden_size": 32, "layers": 1},
        "train": {
            "epochs": 200,
            "batch_size": 16,
            "optimizer": {"name": "adam", "lr": 0.003},
            "seed": 0,
        },
    }


def text_starter(
    task: str, path: Path, target: str | None, time: str | None
) -> dict[str, Any] | None:
    """A table whose features are text: a small transformer over WordPiece tokens."""
    found = _target_table(path, target, time)
    if found is None:
        return None
    df, types, numeric = found
    if not is_text_table(types) or numeric != (task == "text-regression"):
        return None
    texts = [c for c, t in types.items() if t == "text"]
    column = max(texts, key=lambda c: df[c].astype(str).str.len().mean())
    words = [len(str(t).split()) for t in df[column]]
    return {
        "name": starter_name(path),
        "task": task,
        "data": {
            "source": str(path.resolve()),
            "text_column": column,
            "target": target,
            "max_length": int(min(512, max(16, np.percentile(words, 95) * 1.3))),
            "tokenizer": {"kind": "wordpiece", "vocab_size": 8000},
            "split": {"valid": 0.15, "test": 0.15, "seed": 0},
        },
        "model": {"arch": "transformer", "n_layer": 2, "n_head": 4, "n_embd": 64},
        "train": {"epochs": 10, "batch_size": 32, "seed": 0},
    }


STARTERS: Registry[Starter] = Registry("starter", "init")
STARTERS.register("image-classification", image_starter)
STARTERS.register("sequence-regression", series_starter)
STARTERS.register("text-classification", partial(text_starter, "text-classification"))
STARTERS.register("text-regression", partial(text_starter, "text-regression"))
STARTERS.register("regression", partial(table_starter, "regression"))
STARTERS.register("classification", partial(table_starter, "classification"))
