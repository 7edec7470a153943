"""Fitted encodings of targets and values for images, sequences and text, saved as JSON.

``Labels`` maps class names to indices (classes sorted, counted on the train split); ``Scaler``
standardises or min-max scales columns with statistics of the train split. Fitted state ends in
``_`` and round-trips through ``to_dict`` / ``from_dict``; nothing is pickled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tensorsmith.errors import DataError

__all__ = ["Labels", "Scaler"]


class Labels:
    """Class names ↔ indices; ``counts_`` are the train split's class counts."""

    def __init__(self, where: str) -> None:
        self.where = where  # names the labels in messages: "data.target 'genre'"

    def fit(self, labels: Sequence[Any] | pd.Series) -> Labels:
        values = pd.Series(labels).astype(str)
        counts = values.value_counts()
        if len(counts) < 2:
            only = counts.index[0] if len(counts) else "nothing"
            raise DataError(
                f"{self.where} has one class ({only!r}) in the train split; a classifier needs "
                "at least two classes: add data of another class"
            )
        self.classes_: list[str] = sorted(counts.index.tolist())
        self.counts_: list[int] = [int(counts[c]) for c in self.classes_]
        return self

    @property
    def n_classes(self) -> int:
        return len(self.classes_)

    def encode(self, labels: Sequence[Any] | pd.Series, file: str) -> np.ndarray:
        """(N,) int64 class indices; a label not seen in training is an error naming it."""
        values = pd.Series(labels).astype(str).reset_index(drop=True)
        index = {c: i for i, c in enumerate(self.classes_)}
        codes = values.map(index)
        if codes.isna().any():
            unseen = sorted(values[codes.isna()].unique())
            raise DataError(
                f"{self.where} in {file} has classes the model was not trained on: "
                f"{', '.join(map(repr, unseen[:5]))}; classes are: {', '.join(self.classes_)}"
            )
        return np.array(codes.to_numpy(dtype=np.int64))  # writable: torch shares its memory

    def to_dict(self) -> dict[str, Any]:
        return {"classes": self.classes_, "counts": self.counts_}

    @classmethod
    def from_dict(cls, state: dict[str, Any], where: str) -> Labels:
        labels = cls(where)
        labels.classes_ = [str(c) for c in state["classes"]]
        labels.counts_ = [int(c) for c in state["counts"]]
        return labels


class Scaler:
    """Per-column ``standard`` (mean 0, std 1), ``minmax`` ([0, 1]) or ``none`` scaling."""

    def __init__(self, kind: str = "standard") -> None:
        self.kind = kind

    def fit(self, values: np.ndarray) -> Scaler:
        """``values`` (N, F) of the train split."""
        v = np.asarray(values, dtype=np.float64)
        if self.kind == "standard":
            center, spread = v.mean(axis=0), v.std(axis=0)
        elif self.kind == "minmax":
            center, spread = v.min(axis=0), v.max(axis=0) - v.min(axis=0)
        else:
            center, spread = np.zeros(v.shape[1]), np.ones(v.shape[1])
        self.center_ = center.astype(np.float64)
        self.spread_ = np.where(spread > 0, spread, 1.0).astype(np.float64)  # constant columns
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        return ((np.asarray(values, dtype=np.float64) - self.center_) / self.spread_).astype(
            np.float32
        )

    def inverse(self, values: np.ndarray, column: int | None = None) -> np.ndarray:
        """Scaled values back to original units: every column, or one column's values."""
        v = np.asarray(values, dtype=np.float64)
        if column is None:
            return v * self.spread_ + self.center_
        return v * self.spread_[column] + self.center_[column]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "center": self.center_.tolist(), "spread": self.spread_.tolist()}

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Scaler:
        scaler = cls(str(state["kind"]))
        scaler.center_ = np.asarray(state["center"], dtype=np.float64)
        scaler.spread_ = np.asarray(state["spread"], dtype=np.float64)
        return scaler
