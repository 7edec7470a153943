"""Tabular data for a recipe: read, check, split (seeded), preprocess, batch."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from tensorsmith.data.preprocess import Encoded, Preprocessor, _rows, infer_type
from tensorsmith.data.sources import check_columns, read_table
from tensorsmith.errors import DataError
from tensorsmith.recipe import Recipe

__all__ = [
    "Batches",
    "TabularData",
    "check_target",
    "load_tabular",
    "read_splits",
    "resolve_types",
    "split_frame",
]


@dataclass
class TabularData:
    """The three splits of a table, the fitted preprocessor and the encoded arrays."""

    frames: dict[str, pd.DataFrame]  # "train", "valid", "test" (a split may be empty)
    preprocessor: Preprocessor
    encoded: dict[str, Encoded]
    source: str
    dropped_text: list[str]


def resolve_types(df: pd.DataFrame, features: list[str], given: dict[str, str]) -> dict[str, str]:
    check_columns(df, list(given), "data.types", "the data")
    return {f: given.get(f) or infer_type(df[f]) for f in features}


def check_target(df: pd.DataFrame, target: str, task: str, file: str) -> None:
    """The target exists, has no missing values and fits the task."""
    check_columns(df, [target], "data.target", file)
    col = df[target]
    if col.isna().any():
        raise DataError(
            f"target '{target}' is missing in rows {_rows(col.isna())} of {file} (counting data "
            "rows from 1); drop those rows or fill them in"
        )
    if task == "regression":
        numeric = pd.to_numeric(col, errors="coerce")
        bad = numeric.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in col[bad].astype(str).unique()[:3])
            raise DataError(
                f"regression target '{target}' is not numeric: values like {examples} in rows "
                f"{_rows(bad)}; use task: classification for labels, or clean the column"
            )
        if not np.isfinite(numeric.to_numpy(dtype=float)).all():
            raise DataError(
                f"target '{target}' has infinite values in rows "
                f"{_rows(~np.isfinite(numeric.to_numpy(dtype=float)))}"
            )
    elif task == "classification" and col.astype(str).nunique() < 2:
        raise DataError(
            f"classification target '{target}' has one class ({col.iloc[0]!r}) in {file}; a "
            "classifier needs at least two classes"
        )


def split_frame(df: pd.DataFrame, recipe: Recipe) -> dict[str, pd.DataFrame]:
    """Random, stratified or grouped split into train / valid / test, fixed by the seed."""
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    spec = recipe.data.split
    test = float(spec.test or 0.0)
    valid = float(spec.valid)
    target = recipe.data.target or ""
    stratify = spec.stratify if spec.stratify is not None else recipe.task == "classification"
    if spec.group is not None:
        check_columns(df, [spec.group], "data.split.group", "the data")

    def cut(frame: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
        if fraction <= 0:
            return frame, frame.iloc[:0]
        if spec.group is not None:
            splitter = GroupShuffleSplit(n_splits=1, test_size=fraction, random_state=seed)
            keep, held = next(splitter.split(frame, groups=frame[spec.group].astype(str)))
            return frame.iloc[keep], frame.iloc[held]
        labels = frame[target].astype(str) if stratify else None
        if labels is not None and labels.value_counts().min() < 2:
            labels = None  # a class with one row cannot be stratified: fall back to random
        try:
            a, b = train_test_split(frame, test_size=fraction, random_state=seed, stratify=labels)
        except ValueError as exc:
            raise DataError(
                f"cannot split {len(frame)} rows with data.split fractions: {exc}"
            ) from None
        return a, b

    rest, test_df = cut(df, test, spec.seed)
    share = valid / (1.0 - test) if test < 1 else 0.0
    train_df, valid_df = cut(rest, share, spec.seed + 1)
    if len(train_df) == 0:
        raise DataError(f"the train split is empty ({len(df)} rows); lower data.split fractions")
    return {"train": train_df, "valid": valid_df, "test": test_df}


def _explicit_splits(recipe: Recipe) -> dict[str, pd.DataFrame]:
    spec = recipe.data.split
    out = {}
    for name in ("train", "valid", "test"):
        value = getattr(spec, name)
        out[name] = read_table(recipe.path(str(value))) if isinstance(value, str) else None
    train = out["train"]
    assert train is not None
    return {k: (v if v is not None else train.iloc[:0]) for k, v in out.items()}


def read_splits(recipe: Recipe) -> dict[str, pd.DataFrame]:
    """The train / valid / test rows of the recipe's data: its split files, or its table split
    with its seed (the same rows every time)."""
    if recipe.data.split.train is not None:
        return _explicit_splits(recipe)
    return split_frame(read_table(recipe.path(recipe.data.source)), recipe)


def load_tabular(recipe: Recipe) -> TabularData:
    """Read the recipe's table, check it, split it and fit preprocessing on the train split."""
    target = recipe.data.target or ""
    explicit = recipe.data.split.train is not None
    source = recipe.path(recipe.data.source)
    if explicit:
        frames = _explicit_splits(recipe)
        df = frames["train"]
    else:
        df = read_table(source)
    file = source.name
    check_target(df, target, recipe.task, file)
    features = recipe.data.features or [c for c in df.columns if c != target]
    if recipe.data.features:
        check_columns(df, features, "data.features", file)
    if target in features:
        raise DataError(f"data.features lists the target '{target}'; remove it from the features")
    types = resolve_types(df, features, dict(recipe.data.types))
    dropped = [f for f, t in types.items() if t == "text"]
    features = [f for f in features if types[f] != "text"]
    if not features:
        raise DataError(f"no usable feature columns in {file}: text columns need a text model")
    if not explicit:
        frames = split_frame(df, recipe)
    for name, frame in frames.items():
        if len(frame) and name != "train":
            check_columns(frame, [*features, target], f"data.split.{name}", name)
            check_target(frame, target, "any", name)
    prep = Preprocessor(
        recipe.task,
        target,
        features,
        {f: types[f] for f in features},
        recipe.data.impute,
        recipe.data.scale,
        recipe.data.categorical,
        recipe.data.target_transform,
        dict(recipe.data.transforms),
    ).fit(frames["train"])
    encoded = {name: prep.transform(frame) for name, frame in frames.items()}
    bad = ~np.isfinite(encoded["train"].x).all(axis=0)
    if bad.any():
        names = [n for n, b in zip(prep.feature_names(), bad, strict=True) if b]
        raise DataError(
            f"columns {', '.join(names)} overflow after scaling (values too large); "
            "rescale them, or set data.scale: minmax"
        )
    return TabularData(frames, prep, encoded, str(source), dropped)


class Batches:
    """Shuffled mini-batches whose order depends only on (seed, epoch), so resume is exact."""

    def __init__(self, enc: Encoded, batch_size: int | str, seed: int, shuffle: bool = True):
        self.x = torch.as_tensor(np.array(enc.x))
        self.cat = torch.as_tensor(np.array(enc.cat)) if enc.cat is not None else None
        assert enc.y is not None
        self.y = torch.as_tensor(np.array(enc.y))
        self.n = len(self.x)
        self.batch_size = self.n if batch_size == "full" else min(int(batch_size), self.n)
        self.seed = seed
        self.shuffle = shuffle and self.batch_size < self.n

    def __len__(self) -> int:
        return -(-self.n // self.batch_size)

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, ...]]:
        if not self.shuffle:
            order = None
        else:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            order = torch.randperm(self.n, generator=gen)
        for start in range(0, self.n, self.batch_size):
            if order is None and self.batch_size == self.n:
                idx: torch.Tensor | slice = slice(None)
            elif order is None:
                idx = slice(start, start + self.batch_size)
            else:
                idx = order[start : start + self.batch_size]
            inputs = (self.x[idx],) if self.cat is None else (self.x[idx], self.cat[idx])
            yield (*inputs, self.y[idx])
