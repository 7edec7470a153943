"""Numeric sequences in tables: a time series cut into windows, and labelled sequences.

A *time series* is a table with a time column and value columns, one row per step. It is checked
(numbers only, nothing missing, time in order without repeats; gaps are reported), split in time
order into train / valid / test parts, and each part is cut into windows of ``lookback`` steps
followed by ``horizon`` target steps that never cross into another part.

*Labelled sequences* are rows of steps with a sequence id and a label per sequence: grouped by
id (in time order), padded to a common length with their lengths kept, one label each.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from tensorsmith.data.preprocess import row_list
from tensorsmith.data.tables import check_columns
from tensorsmith.errors import DataError

__all__ = [
    "Sequences",
    "TimeSeries",
    "check_window",
    "group_sequences",
    "pad_sequences",
    "read_series",
    "split_series",
    "value_columns",
    "windows",
]


def value_columns(
    df: pd.DataFrame, features: list[str] | None, exclude: Sequence[str]
) -> list[str]:
    """The given feature columns, or every numeric column not in ``exclude``."""
    if features:
        return list(features)
    return [
        c
        for c in df.columns
        if c not in exclude and pd.to_numeric(df[c], errors="coerce").notna().mean() > 0.9
    ]


def _numbers(df: pd.DataFrame, columns: list[str], file: str) -> np.ndarray:
    values = df[columns].apply(pd.to_numeric, errors="coerce")
    for c in columns:
        bad = values[c].isna() | ~np.isfinite(values[c].fillna(0.0))
        if bad.any():
            raise DataError(
                f"column '{c}' of {file} has missing or non-numeric values in rows "
                f"{row_list(bad)} (counting data rows from 1); sequences need a number at "
                "every step: fill them in (or interpolate) or drop those rows"
            )
    return values.to_numpy(dtype=np.float64)


def _times(col: pd.Series, name: str, file: str) -> np.ndarray:
    """Times as float64 keys that order the rows: numbers as they are, dates in nanoseconds."""
    numeric = pd.to_numeric(col, errors="coerce")
    if numeric.notna().all():
        return numeric.to_numpy(dtype=np.float64)
    dates = pd.to_datetime(col, errors="coerce")
    if dates.isna().any():
        raise DataError(
            f"time column '{name}' (data.time) of {file} has values that are neither numbers nor "
            f"dates in rows {row_list(dates.isna())}, like {col[dates.isna()].iloc[0]!r}"
        )
    return dates.to_numpy().astype("datetime64[ns]").astype(np.int64).astype(np.float64)


@dataclass
class TimeSeries:
    """A checked series: ``frame`` in time order, the value ``columns`` (the target among them)."""

    frame: pd.DataFrame
    columns: list[str]
    target: str
    time: str | None
    notes: list[str] = field(default_factory=list)

    @property
    def target_index(self) -> int:
        return self.columns.index(self.target)

    def values(self) -> np.ndarray:
        return self.frame[self.columns].to_numpy(dtype=np.float64)  # (N, F)

    def times(self) -> np.ndarray:
        if self.time is None:
            return np.arange(len(self.frame), dtype=float)
        return np.asarray(self.frame[self.time])


def _order(frame: pd.DataFrame, time: str, file: str) -> tuple[pd.DataFrame, list[str]]:
    """Sort by time (said so), refuse repeated times, report gaps."""
    notes: list[str] = []
    t = _times(frame[time], time, file)
    back = np.flatnonzero(np.diff(t) < 0)
    if len(back):
        first = int(back[0]) + 1
        notes.append(
            f"time column '{time}' of {file} is not in order (row {first + 1}: "
            f"{frame[time].iloc[first]} comes after {frame[time].iloc[first - 1]}); the rows "
            "were sorted by time"
        )
        order = np.argsort(t, kind="stable")
        frame, t = frame.iloc[order], t[order]
    repeated = pd.Series(t).duplicated(keep=False).to_numpy()
    if repeated.any():
        raise DataError(
            f"time column '{time}' of {file} repeats times ({frame[time][repeated].iloc[0]} "
            "and others); a series has one row per step: aggregate or drop the repeated rows"
        )
    steps = np.diff(t)
    if len(steps) > 1:
        step = np.median(steps)
        gaps = np.flatnonzero(steps > step * 1.5)
        if len(gaps):
            where = ", ".join(f"after {frame[time].iloc[i]}" for i in gaps[:5])
            notes.append(
                f"time column '{time}' of {file} has {len(gaps)} gap{'s' if len(gaps) > 1 else ''} "
                f"longer than its usual step ({where}); the rows on either side are treated as "
                "consecutive steps"
            )
    return frame, notes


def read_series(
    df: pd.DataFrame, time: str | None, target: str, features: list[str] | None, file: str
) -> TimeSeries:
    """Check a time-series table and put it in time order."""
    check_columns(df, [target, *(features or []), *([time] if time else [])], "data", file)
    columns = value_columns(df, features, [c for c in (time,) if c])
    if target not in columns:
        columns = [target, *columns]
    _numbers(df, columns, file)
    frame = df.copy()
    frame[columns] = frame[columns].apply(pd.to_numeric)
    notes: list[str] = []
    if time is not None:
        frame, notes = _order(frame, time, file)
    return TimeSeries(frame, columns, target, time, notes)


def split_series(series: TimeSeries, valid: float, test: float) -> dict[str, pd.DataFrame]:
    """Train, valid and test parts in time order: the last ``test`` fraction is test."""
    n = len(series.frame)
    n_test, n_valid = round(n * test), round(n * valid)
    cut = [n - n_test - n_valid, n - n_test]
    frame = series.frame
    return {
        "train": frame.iloc[: cut[0]],
        "valid": frame.iloc[cut[0] : cut[1]],
        "test": frame.iloc[cut[1] :],
    }


def check_window(n: int, lookback: int, horizon: int, what: str) -> None:
    if n < lookback + horizon:
        raise DataError(
            f"{what} has {n} steps, fewer than data.lookback + data.horizon = "
            f"{lookback} + {horizon}: no window fits in it; lower data.lookback or "
            "data.horizon, or give that part more steps (data.split fractions)"
        )


def windows(
    values: np.ndarray, target: int, lookback: int, horizon: int
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (M, lookback, F) and targets (M, horizon) of every window of a part, in order."""
    n = len(values)
    starts = np.arange(n - lookback - horizon + 1)
    x = values[starts[:, None] + np.arange(lookback)]  # (M, L, F)
    y = values[starts[:, None] + lookback + np.arange(horizon), target]  # (M, h)
    return x.astype(np.float32), y.astype(np.float32)


# ----------------------------------------------------------------------------- labelled


@dataclass
class Sequences:
    """Labelled sequences: ``steps[i]`` (T_i, F) in time order, ``labels[i]``, ``ids[i]``."""

    steps: list[np.ndarray]
    labels: list[str]
    ids: list[str]
    columns: list[str]


def group_sequences(
    df: pd.DataFrame,
    id_column: str,
    time: str | None,
    target: str | None,
    features: list[str] | None,
    file: str,
) -> Sequences:
    """Group rows into sequences by ``id_column`` (first-seen order), steps in time order."""
    needed = [
        id_column,
        *([time] if time else []),
        *([target] if target else []),
        *(features or []),
    ]
    check_columns(df, needed, "data", file)
    columns = value_columns(df, features, [c for c in (id_column, time, target) if c])
    if not columns:
        raise DataError(f"{file} has no numeric value columns besides {', '.join(needed)}")
    values = _numbers(df, columns, file)
    ids = df[id_column].astype(str).to_numpy()
    order = np.argsort(pd.factorize(ids)[0], kind="stable")
    if time is not None:
        t = _times(df[time], time, file)
        order = np.lexsort((t, pd.factorize(ids)[0]))
    steps, labels, names = [], [], []
    for name, group in pd.Series(order).groupby(ids[order], sort=False):
        rows = group.to_numpy()
        steps.append(values[rows])
        names.append(str(name))
        if target is not None:
            found = df[target].iloc[rows].astype(str).unique()
            if len(found) > 1:
                raise DataError(
                    f"sequence {name!r} ({id_column}) has several labels in '{target}' of "
                    f"{file}: {', '.join(found[:5])}; a sequence has one label on all its rows"
                )
            labels.append(str(found[0]))
    return Sequences(steps, labels, names, columns)


def pad_sequences(steps: Sequence[np.ndarray], max_length: int) -> tuple[np.ndarray, np.ndarray]:
    """(N, max_length, F) float32 with each sequence's last ``max_length`` steps at the start,
    zeros after; and the (N,) lengths."""
    features = steps[0].shape[1] if steps else 0
    x = np.zeros((len(steps), max_length, features), dtype=np.float32)
    lengths = np.zeros(len(steps), dtype=np.int64)
    for i, s in enumerate(steps):
        kept = s[-max_length:]
        x[i, : len(kept)] = kept
        lengths[i] = len(kept)
    return x, lengths
