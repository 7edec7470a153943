"""Tabular data for a recipe: read, check, split (seeded), fit preprocessing on train."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from tensorsmith.data.preprocess import Encoded, Preprocessor, infer_type, non_numbers, row_list
from tensorsmith.data.tables import check_columns, read_table
from tensorsmith.errors import DataError, did_you_mean, shorten
from tensorsmith.recipe import SplitSpec, TableData

__all__ = [
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
    dropped_text: list[str]
    notes: list[str]


def resolve_types(df: pd.DataFrame, features: list[str], given: dict[str, str]) -> dict[str, str]:
    check_columns(df, list(given), "data.types", "the data")
    return {f: given.get(f) or infer_type(df[f]) for f in features}


def check_target(df: pd.DataFrame, target: str, kind: str, file: str) -> None:
    """The target exists, has no missing values and fits its kind: ``number`` (regression),
    ``label`` (classification) or ``any``."""
    check_columns(df, [target], "data.target", file)
    col = df[target]
    if col.isna().any():
        raise DataError(
            f"target '{target}' is missing in rows {row_list(col.isna())} of {file} (counting data "
            "rows from 1); drop those rows or fill them in"
        )
    if kind == "number":
        numeric = pd.to_numeric(col, errors="coerce")
        bad = numeric.isna()
        if bad.any():
            examples = ", ".join(repr(v) for v in col[bad].astype(str).unique()[:3])
            raise DataError(
                f"regression target '{target}' is not numeric: values like {examples} in rows "
                f"{row_list(bad)}; use task: classification for labels, or clean the column"
            )
        if not np.isfinite(numeric.to_numpy(dtype=float)).all():
            raise DataError(
                f"target '{target}' has infinite values in rows "
                f"{row_list(~np.isfinite(numeric.to_numpy(dtype=float)))}"
            )
    elif kind == "label" and col.astype(str).nunique() < 2:
        raise DataError(
            f"classification target '{target}' has one class ({col.iloc[0]!r}) in {file}; a "
            "classifier needs at least two classes"
        )


def _named_groups(
    df: pd.DataFrame, spec: SplitSpec
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The rows of the groups that data.split.valid / test name, and the rows left over."""
    named: dict[str, pd.DataFrame] = {}
    for key in ("test", "valid"):
        names = getattr(spec, key)
        if not isinstance(names, list):
            continue
        assert spec.group is not None  # the recipe requires it with named groups
        values = df[spec.group].astype(str)
        present = sorted(values.unique())
        missing = [n for n in names if n not in set(present)]
        if missing:
            raise DataError(
                f"data.split.{key} names {spec.group} {missing[0]!r}, which is not in column "
                f"'{spec.group}'{did_you_mean(missing[0], present) or ';'} values are: "
                f"{', '.join(present[:20])}{' …' if len(present) > 20 else ''}"
            )
        chosen = values.isin(names)
        named[key], df = df[chosen], df[~chosen]
    return df, named


def split_frame(
    df: pd.DataFrame, spec: SplitSpec, target: str, stratify: bool
) -> dict[str, pd.DataFrame]:
    """Random, stratified or grouped split into train / valid / test, fixed by the seed.

    Groups named in data.split.valid / test go to that split whole; fractions split the rest.
    """
    from sklearn.model_selection import GroupShuffleSplit, train_test_split

    test = 0.0 if isinstance(spec.test, list) else float(spec.test or 0.0)
    valid = 0.0 if isinstance(spec.valid, list) else float(spec.valid)
    stratify = spec.stratify if spec.stratify is not None else stratify
    if spec.group is not None:
        check_columns(df, [spec.group], "data.split.group", "the data")
    df, named = _named_groups(df, spec)

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
                f"cannot split {len(frame)} rows with data.split fractions: "
                f"{shorten(str(exc), 200)}"
            ) from None
        return a, b

    rest, test_df = (df, named["test"]) if "test" in named else cut(df, test, spec.seed)
    share = valid / (1.0 - test) if test < 1 else 0.0
    if "valid" in named:
        train_df, valid_df = rest, named["valid"]
    else:
        train_df, valid_df = cut(rest, share, spec.seed + 1)
    if len(train_df) == 0:
        raise DataError(f"the train split is empty ({len(df)} rows); lower data.split fractions")
    return {"train": train_df, "valid": valid_df, "test": test_df}


def read_splits(
    data: TableData, resolve: Callable[[str], Path], stratify: bool
) -> dict[str, pd.DataFrame]:
    """The train / valid / test rows of a recipe's table: its split files, or the table split
    with its seed (the same rows every time)."""
    spec = data.split
    if spec.train is None:
        df = read_table(resolve(data.source))
        check_target(df, data.target, "any", resolve(data.source).name)
        return split_frame(df, spec, data.target, stratify)
    out = {}
    for name in ("train", "valid", "test"):
        value = getattr(spec, name)
        out[name] = read_table(resolve(str(value))) if isinstance(value, str) else None
    train = out["train"]
    assert train is not None
    return {k: (v if v is not None else train.iloc[:0]) for k, v in out.items()}


def load_tabular(
    data: TableData,
    resolve: Callable[[str], Path],
    target_kind: str,
    target_transform: str = "none",
    base: Preprocessor | None = None,
) -> TabularData:
    """Read a recipe's table, check it, split it and fit preprocessing on the train split
    (or, fine-tuning, reuse ``base``: the parent's fitted features, a target fitted anew)."""
    target = data.target
    file = resolve(data.source).name
    if data.split.train is None:  # the whole table: rows are named as they are in the file
        check_target(read_table(resolve(data.source)), target, target_kind, file)
    frames = read_splits(data, resolve, stratify=target_kind == "label")
    df = frames["train"]
    check_target(df, target, target_kind, file)
    if base is not None:
        prep, notes = _inherited(base, frames, file)
        encoded = {name: prep.transform(frame) for name, frame in frames.items()}
        return TabularData(frames, prep, encoded, [], notes)
    features = data.features or [c for c in df.columns if c != target]
    if data.features:
        check_columns(df, features, "data.features", file)
    if target in features:
        raise DataError(f"data.features lists the target '{target}'; remove it from the features")
    types = resolve_types(df, features, dict(data.types))
    notes = _dirty_numbers(frames, [f for f in features if types[f] == "number"], data.strict)
    dropped = [f for f, t in types.items() if t == "text"]
    features = [f for f in features if types[f] != "text"]
    if not features:
        raise DataError(f"no usable feature columns in {file}: text columns need a text model")
    for name, frame in frames.items():
        if len(frame) and name != "train":
            check_columns(frame, [*features, target], f"data.split.{name}", name)
            check_target(frame, target, "any", name)
    prep = Preprocessor(
        target_kind,
        target,
        features,
        {f: types[f] for f in features},
        data.impute,
        data.scale,
        data.categorical,
        target_transform,
        dict(data.transforms),
    ).fit(frames["train"])
    encoded = {name: prep.transform(frame) for name, frame in frames.items()}
    bad = ~np.isfinite(encoded["train"].x).all(axis=0)
    if bad.any():
        names = [n for n, b in zip(prep.feature_names(), bad, strict=True) if b]
        raise DataError(
            f"columns {', '.join(names)} overflow after scaling (values too large); "
            "rescale them, or set data.scale: minmax"
        )
    return TabularData(frames, prep, encoded, dropped, notes)


def _inherited(
    base: Preprocessor, frames: dict[str, pd.DataFrame], file: str
) -> tuple[Preprocessor, list[str]]:
    """The parent's fitted features; the target fitted on this data (new labels, new scale)."""
    train = frames["train"]
    for frame in frames.values():
        if len(frame):
            check_columns(frame, base.features, "features the parent model was trained on", file)
    prep = Preprocessor.from_dict(base.to_dict())
    prep.target_ = prep._fit_target(train[prep.target])
    notes = []
    unused = [c for c in train.columns if c not in base.features and c != prep.target]
    if unused:
        notes.append(
            f"columns {', '.join(unused)} are not used: the parent model was trained without them"
        )
    new = sorted(set(prep.classes) - set(base.classes)) if base.classes else []
    if new:
        notes.append(
            f"labels the parent never saw: {', '.join(new)}; the output layer starts fresh"
        )
    return prep, notes


def _dirty_numbers(frames: dict[str, pd.DataFrame], columns: list[str], strict: bool) -> list[str]:
    """Number columns with a few cells that are not numbers: said (or refused when strict)."""
    table = pd.concat([f for f in frames.values() if len(f)])
    notes = []
    for column in columns:
        bad = non_numbers(table[column])
        if not bad.any():
            continue
        shown = ", ".join(repr(v) for v in table[column][bad].astype(str).unique()[:5])
        what = (
            f"column '{column}' is numeric but for {int(bad.sum())} cells ({shown}) in rows "
            f"{row_list(bad)}"
        )
        if strict:
            raise DataError(
                f"{what}; data.strict is true: clean those cells, or set "
                f"data.types.{column}: category"
            )
        notes.append(
            f"warning: {what}: read as missing and imputed; set data.strict: true to refuse "
            "such data"
        )
    return notes
