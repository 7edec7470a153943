"""Column typing and preprocessing, fitted on the train split only and saved as JSON.

Fitted state lives in attributes ending in ``_`` (scikit-learn's habit) and round-trips through
:meth:`Preprocessor.to_dict` / :meth:`Preprocessor.from_dict`; nothing is pickled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from tensorsmith.errors import DataError, listing

__all__ = ["Encoded", "Preprocessor", "describe_issues", "infer_type", "non_numbers", "row_list"]

# a text column whose values are numbers but for a few (a "?" among 500 numbers) is a number
# column with those cells missing; more than this share of non-numbers makes it a category
MOSTLY_NUMERIC = 0.05

_TRUE = {"yes", "true", "y", "t", "1", "1.0"}
_FALSE = {"no", "false", "n", "f", "0", "0.0"}


def infer_type(series: pd.Series) -> str:
    """number, binary (yes/no, true/false, 0/1), category or text (long free-form strings)."""
    values = series.dropna()
    if pd.api.types.is_bool_dtype(series):
        return "binary"
    if pd.api.types.is_numeric_dtype(series):
        return "binary" if len(values) and set(values.unique()) <= {0, 1} else "number"
    lowered = {str(v).strip().lower() for v in values.unique()}
    if lowered and lowered <= (_TRUE | _FALSE) and len(lowered) <= 2:
        return "binary"
    numeric = pd.to_numeric(values, errors="coerce")
    if len(values) and numeric.notna().all():
        return "number"
    if len(values) >= 20 and numeric.isna().mean() <= MOSTLY_NUMERIC:
        return "number"
    text = values.astype(str)
    many = values.nunique() > max(50, 0.5 * len(values))
    if many and (text.str.len().mean() > 20 or text.str.contains(" ").mean() > 0.5):
        return "text"
    return "category"


def non_numbers(col: pd.Series) -> pd.Series:
    """True where a cell holds something that is not a number (missing cells are not)."""
    return pd.to_numeric(col, errors="coerce").isna() & col.notna()


def describe_issues(issues: dict[str, dict[str, int]]) -> list[str]:
    """One line per column of the values that preprocessing could not take as they were."""
    return [
        f"column '{name}': " + ", ".join(f"{n} {what}" for what, n in kinds.items())
        for name, kinds in issues.items()
    ]


def row_list(mask: np.ndarray | pd.Series) -> str:
    idx = np.flatnonzero(np.asarray(mask)) + 1
    if isinstance(mask, pd.Series) and pd.api.types.is_integer_dtype(mask.index):
        idx = np.sort(mask.index[np.asarray(mask, dtype=bool)].to_numpy()) + 1  # rows of the file
    shown = ", ".join(str(i) for i in idx[:10])
    more = f" and {len(idx) - 10} more" if len(idx) > 10 else ""
    return f"{shown}{more}"


def _count(issues: dict[str, dict[str, int]], column: str, what: str, mask: Any) -> None:
    n = int(np.asarray(mask, dtype=bool).sum())
    if n:
        issues.setdefault(column, {})[what] = n


def _binary_codes(series: pd.Series) -> pd.Series:
    """1.0 / 0.0 / NaN for yes-no style values (unknown words become NaN, then imputed)."""
    if pd.api.types.is_bool_dtype(series) or pd.api.types.is_numeric_dtype(series):
        return pd.to_numeric(series, errors="coerce").astype(float).where(lambda s: s.isin([0, 1]))
    low = series.astype("string").str.strip().str.lower()
    out = pd.Series(np.nan, index=series.index, dtype=float)
    out[low.isin(_TRUE)] = 1.0
    out[low.isin(_FALSE)] = 0.0
    return out


@dataclass
class Encoded:
    """Model inputs for a frame: numeric matrix and category indices (embedding mode)."""

    x: np.ndarray  # (N, D) float32
    cat: np.ndarray | None  # (N, C) int64, 0 = unknown category
    y: np.ndarray | None  # (N,) float32 (regression, scaled) or int64 (class index)
    # column → {what: count} of values that could not be used as given (imputed, or unseen)
    issues: dict[str, dict[str, int]] = field(default_factory=dict)


class Preprocessor:
    """Imputation, scaling, category and target encoding, fitted on the train split."""

    def __init__(
        self,
        target_kind: str,
        target: str,
        features: list[str],
        types: dict[str, str],
        impute: str = "median",
        scale: str = "standard",
        categorical: str = "onehot",
        target_transform: str = "none",
        transforms: dict[str, str] | None = None,
    ) -> None:
        self.target_kind = target_kind  # "label" (classification) or "number" (regression)
        self.target = target
        self.features = features
        self.types = types
        self.impute = impute
        self.scale = scale
        self.categorical = categorical
        self.target_transform = target_transform
        self.transforms = transforms or {}

    # ------------------------------------------------------------------ fitting

    def fit(self, df: pd.DataFrame) -> Preprocessor:
        self.columns_: list[dict[str, Any]] = []
        for name in self.features:
            kind = self.types[name]
            col = df[name]
            if kind == "number":
                self.columns_.append(self._fit_number(name, col))
            elif kind == "binary":
                codes = _binary_codes(col)
                fill = float(codes.mode().iloc[0]) if codes.notna().any() else 0.0
                self.columns_.append({"name": name, "type": "binary", "fill": fill})
            elif kind == "category":
                values = col.dropna().astype(str)
                cats = sorted(values.unique().tolist())
                most = str(values.mode().iloc[0]) if len(values) else None
                self.columns_.append(
                    {"name": name, "type": "category", "categories": cats, "fill": most}
                )
        self.target_ = self._fit_target(df[self.target])
        return self

    def _numbers(self, name: str, col: pd.Series, fitting: bool) -> pd.Series:
        """Numeric values with the column's log / log1p transform applied."""
        values = pd.to_numeric(col, errors="coerce").astype(float)
        kind = self.transforms.get(name)
        if kind is None:
            return values
        low = 0.0 if kind == "log" else -1.0
        bad = values <= low
        if bad.any() and fitting:
            raise DataError(
                f"data.transforms.{name}: {kind} needs values > {low:g}, but "
                f"'{name}' has values <= {low:g} in rows {row_list(bad)}"
            )
        values = values.where(~bad)  # at predict time a bad value is treated as missing
        return pd.Series(np.log(values) if kind == "log" else np.log1p(values), index=col.index)

    def _fit_number(self, name: str, col: pd.Series) -> dict[str, Any]:
        values = self._numbers(name, col, fitting=True)
        if not np.isfinite(values.dropna()).all():
            raise DataError(
                f"column '{name}' has infinite values in rows {row_list(np.isinf(values))}"
            )
        present = values.dropna()
        if present.empty:
            raise DataError(f"column '{name}' has no numeric values in the train split")
        fill = float(present.median() if self.impute == "median" else present.mean())
        filled = values.fillna(fill)
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is checked just below
            if self.scale == "standard":
                center, spread = float(filled.mean()), float(filled.std(ddof=0))
            elif self.scale == "minmax":
                center, spread = float(filled.min()), float(filled.max() - filled.min())
            else:
                center, spread = 0.0, 1.0
        if not (np.isfinite(center) and np.isfinite(spread)):
            huge = values.abs() > np.sqrt(np.finfo(float).max / max(len(values), 1))
            raise DataError(
                f"column '{name}' has values too large to scale (largest "
                f"{values.abs().max():.3g}) in rows {row_list(huge)}; rescale the column, or set "
                f"data.transforms.{name}: log"
            )
        raw = pd.to_numeric(col, errors="coerce")
        return {
            "name": name,
            "type": "number",
            "fill": fill,
            "missing_indicator": bool(values.isna().any()),
            "center": center,
            "scale": spread if spread > 0 else 1.0,
            "min": float(raw.min()),  # the training range, to say when an input is far outside
            "max": float(raw.max()),
        }

    def _fit_target(self, col: pd.Series) -> dict[str, Any]:
        if self.target_kind == "label":
            classes = sorted(col.astype(str).unique().tolist())
            if len(classes) < 2:
                raise DataError(
                    f"classification target '{self.target}' has one class ({classes[0]!r}) in the "
                    "train split; a classifier needs at least two classes"
                )
            return {"name": self.target, "classes": classes}
        y = self._regression_values(col)
        if self.target_transform == "log":
            y = np.log(y)
        with np.errstate(over="ignore", invalid="ignore"):
            mean, std = float(y.mean()), float(y.std())
        if not (np.isfinite(mean) and np.isfinite(std)):
            raise DataError(
                f"target '{self.target}' has values too large to scale (largest "
                f"{np.abs(y).max():.3g}); rescale it (for example to thousands), or set "
                "data.target_transform: log"
            )
        return {
            "name": self.target,
            "transform": self.target_transform,
            "mean": mean,
            "std": std or 1.0,
        }

    def _regression_values(self, col: pd.Series) -> np.ndarray:
        y = pd.to_numeric(col, errors="coerce").to_numpy(dtype=float)
        if self.target_transform == "log" and (y <= 0).any():
            raise DataError(
                f"data.target_transform: log needs a positive target, but '{self.target}' has "
                f"values <= 0 in rows {row_list(y <= 0)}; set data.target_transform: none"
            )
        return y

    # ------------------------------------------------------------------ transforming

    @property
    def n_classes(self) -> int:
        return len(self.target_["classes"]) if self.target_kind == "label" else 0

    @property
    def classes(self) -> list[str]:
        return list(self.target_.get("classes", []))

    def feature_names(self) -> list[str]:
        """Names of the columns of the numeric matrix, in order."""
        names: list[str] = []
        for c in self.columns_:
            if c["type"] == "category":
                if self.categorical == "onehot":
                    names += [f"{c['name']}={v}" for v in c["categories"]]
            else:
                names.append(c["name"])
                if c.get("missing_indicator"):
                    names.append(f"{c['name']}_missing")
        return names

    def cardinalities(self) -> list[int]:
        """Sizes of the embedding tables (index 0 = unknown) in embedding mode."""
        if self.categorical != "embedding":
            return []
        return [len(c["categories"]) + 1 for c in self.columns_ if c["type"] == "category"]

    def transform(self, df: pd.DataFrame, with_target: bool = True) -> Encoded:
        n = len(df)
        blocks: list[np.ndarray] = []
        cats: list[np.ndarray] = []
        issues: dict[str, dict[str, int]] = {}
        for c in self.columns_:
            col = df[c["name"]]
            if c["type"] == "number":
                blocks += self._number_block(c, col, issues)
            elif c["type"] == "binary":
                codes = _binary_codes(col)
                _count(issues, c["name"], "values not yes/no (imputed)", codes.isna() & col.notna())
                blocks.append(codes.fillna(c["fill"]).to_numpy(dtype=float)[:, None])
            else:
                values = col.astype(object).where(col.notna(), c["fill"]).astype(str)
                lookup = {v: i + 1 for i, v in enumerate(c["categories"])}
                idx = values.map(lookup).fillna(0).to_numpy(dtype=np.int64)  # 0 = unseen
                _count(issues, c["name"], "categories not seen in training", idx == 0)
                if self.categorical == "embedding":
                    cats.append(idx)
                else:
                    onehot = np.zeros((n, len(c["categories"]) + 1))
                    onehot[np.arange(n), idx] = 1.0
                    blocks.append(onehot[:, 1:])  # an unseen category is all zeros
        x = np.concatenate(blocks, axis=1) if blocks else np.zeros((n, 0))
        cat = np.stack(cats, axis=1) if cats else None
        y = self.encode_target(df[self.target]) if with_target else None
        return Encoded(x.astype(np.float32), cat, y, issues)

    def _number_block(
        self, c: dict[str, Any], col: pd.Series, issues: dict[str, dict[str, int]]
    ) -> list[np.ndarray]:
        """The scaled column (and its missing indicator), counting values it could not take."""
        name = c["name"]
        raw = pd.to_numeric(col, errors="coerce")
        _count(issues, name, "values that are not numbers (imputed)", raw.isna() & col.notna())
        values = self._numbers(name, col, fitting=False).to_numpy(dtype=float)
        values = np.where(np.isinf(values), np.nan, values)
        missing = np.isnan(values)
        if self.transforms.get(name):
            _count(
                issues,
                name,
                f"values {self.transforms[name]} cannot take (imputed)",
                missing & raw.notna(),
            )
        if "min" in c:
            span = max(c["max"] - c["min"], 1e-12)
            far = (raw < c["min"] - span) | (raw > c["max"] + span)
            _count(
                issues,
                name,
                f"values far outside the training range [{c['min']:.4g}, {c['max']:.4g}]",
                far,
            )
        values = (np.where(missing, c["fill"], values) - c["center"]) / c["scale"]
        block = [values[:, None]]
        if c["missing_indicator"]:
            block.append(missing[:, None].astype(float))
        return block

    def encode_target(self, col: pd.Series) -> np.ndarray:
        if self.target_kind == "label":
            lookup = {v: i for i, v in enumerate(self.target_["classes"])}
            idx = col.astype(str).map(lookup)
            if idx.isna().any():
                unknown = sorted(col[idx.isna()].astype(str).unique().tolist())[:5]
                raise DataError(
                    f"target '{self.target}' has labels the model was not trained on: "
                    f"{listing(unknown)} (rows {row_list(idx.isna())}); known: "
                    f"{listing(self.target_['classes'])}"
                )
            return idx.to_numpy(dtype=np.int64)
        y = self._regression_values(col)
        if self.target_["transform"] == "log":
            y = np.log(y)
        return ((y - self.target_["mean"]) / self.target_["std"]).astype(np.float32)

    def decode_regression(self, scaled: np.ndarray) -> np.ndarray:
        """Model outputs → target units (undo scaling and the log transform)."""
        y = scaled.astype(float) * self.target_["std"] + self.target_["mean"]
        return np.exp(y) if self.target_["transform"] == "log" else y

    # ------------------------------------------------------------------ JSON

    def to_dict(self) -> dict[str, Any]:
        return {
            "target_kind": self.target_kind,
            "target": self.target,
            "features": self.features,
            "types": self.types,
            "impute": self.impute,
            "scale": self.scale,
            "categorical": self.categorical,
            "target_transform": self.target_transform,
            "transforms": self.transforms,
            "columns": self.columns_,
            "target_encoding": self.target_,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessor:
        p = cls(
            d["target_kind"],
            d["target"],
            d["features"],
            d["types"],
            d["impute"],
            d["scale"],
            d["categorical"],
            d["target_transform"],
            d.get("transforms"),
        )
        p.columns_ = d["columns"]
        p.target_ = d["target_encoding"]
        return p
