"""Starter recipes for ``tensorsmith init``: what the table tasks share in recognising their data.

Each task's ``starter`` classmethod says whether a data file is its kind and returns a starter
recipe (a dict) if so. The rules do not overlap: a folder is images, a table with ``--time`` is
a time series, a table whose features are text (and no numbers) is text, any other table with
``--target`` is a table task (regression for a numeric target with many values).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from tensorsmith.data.preprocess import infer_type
from tensorsmith.data.tables import TABLE_FORMATS, check_columns, read_table

__all__ = ["is_numeric_target", "read_starter_table", "starter_name", "table_starter"]


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


def table_starter(
    task: str, path: Path, target: str | None, time: str | None
) -> dict[str, Any] | None:
    """The starter recipe of a table task (regression or classification), or None."""
    found = read_starter_table(path, target) if time is None else None
    if found is None:
        return None
    df, types = found
    assert target is not None
    numeric = is_numeric_target(df[target])
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
