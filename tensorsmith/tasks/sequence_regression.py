"""``task: sequence-regression``: forecast the next ``horizon`` steps of a time series.

The series is checked and put in time order, split into train / valid / test parts in time
order, scaled with statistics of the train part only, and each part is cut into windows of
``lookback`` steps that never cross into another part. The model reads a window (B, T, F) and
outputs the ``horizon`` next values of the target, decoded to the target's own units. The
naive forecast — every next step equals the last observed one — is scored on the same windows
as a baseline (``naive_rmse`` …).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.data.loading import EpochFeed, Tensors, sequential
from tensorsmith.data.series import TimeSeries, check_window, read_series, split_series, windows
from tensorsmith.data.tables import read_table
from tensorsmith.data.targets import Scaler
from tensorsmith.data.text import DataWarning
from tensorsmith.errors import DataError
from tensorsmith.recipe import ForecastData, Recipe, SequenceRegressionRecipe
from tensorsmith.tasks.base import Batch, EvalSplit, Outputs, Prepared
from tensorsmith.tasks.files import damaged, read_json_file
from tensorsmith.tasks.supervised import SupervisedTask

__all__ = ["ForecastSplit", "SequenceRegressionTask"]

EVAL_WINDOWS = 1024


class ForecastSplit:
    """The windows of one part of the series, with the naive forecast and times for plots."""

    def __init__(
        self, x: np.ndarray, y: np.ndarray, naive: np.ndarray, times: np.ndarray, series: tuple
    ) -> None:
        self.data = Tensors(torch.from_numpy(x), torch.from_numpy(y))
        self.naive = naive  # (M, h) in the target's units
        self.times = times  # (M, h) time of each target step
        self.series = series  # (times, target values) of the whole part, for the plot

    def __len__(self) -> int:
        return len(self.data)

    def batches(self, limit: int | None = None) -> Iterable[Batch]:
        starts = range(0, len(self.data), EVAL_WINDOWS)
        if limit is not None:
            starts = starts[:limit]
        return sequential(self.data, [slice(s, s + EVAL_WINDOWS) for s in starts])


def _times(series: TimeSeries) -> np.ndarray:
    if series.time is None:
        return np.arange(len(series.frame), dtype=float)
    col = series.frame[series.time]
    numeric = pd.to_numeric(col, errors="coerce")
    return numeric.to_numpy(float) if numeric.notna().all() else pd.to_datetime(col).to_numpy()


class SequenceRegressionTask(SupervisedTask):
    name = "sequence-regression"
    target_kind = "number"
    metric_names = SequenceRegressionRecipe.metric_names
    key_metric = SequenceRegressionRecipe.key_metric
    losses = SequenceRegressionRecipe.losses

    def __init__(self, recipe: Recipe) -> None:
        super().__init__(recipe)
        self.columns_: list[str] = []
        self.scaler_: Scaler | None = None
        self._notes: list[str] = []

    @property
    def data_spec(self) -> ForecastData:
        assert isinstance(self.recipe.data, ForecastData)
        return self.recipe.data

    @property
    def scaler(self) -> Scaler:
        if self.scaler_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.scaler_

    @property
    def target_index(self) -> int:
        return self.columns_.index(self.data_spec.target)

    def n_outputs(self) -> int:
        return self.data_spec.horizon

    def decode_numbers(self, scaled: np.ndarray) -> np.ndarray:
        return self.scaler.inverse(scaled, column=self.target_index)

    # ------------------------------------------------------------------ data

    def _series(self, df: pd.DataFrame, file: str) -> TimeSeries:
        spec = self.data_spec
        features = self.columns_ or spec.features
        series = read_series(df, spec.time, spec.target, features, file)
        self._notes = series.notes
        return series

    def read_splits(self) -> dict[str, pd.DataFrame]:
        path = self.recipe.path(self.data_spec.source)
        series = self._series(read_table(path), path.name)
        split = self.data_spec.split
        return split_series(series, split.valid, split.test)

    def read_file(self, path: Path) -> pd.DataFrame:
        return read_table(path)

    def _split(self, frame: pd.DataFrame, what: str) -> ForecastSplit:
        spec = self.data_spec
        series = self._series(frame, what)
        check_window(len(series.frame), spec.lookback, spec.horizon, what)
        values = self.scaler.transform(series.values())  # (N, F)
        x, y = windows(values, self.target_index, spec.lookback, spec.horizon)
        raw = series.values()[:, self.target_index]  # (N,) original units
        n = len(x)
        naive = np.repeat(raw[spec.lookback - 1 : spec.lookback - 1 + n, None], spec.horizon, 1)
        times = _times(series)
        target_times = times[np.arange(n)[:, None] + spec.lookback + np.arange(spec.horizon)]
        return ForecastSplit(x, y, naive, target_times, (times, raw))

    def prepare(self, cache: Path, console: Console) -> Prepared:
        spec, file = self.data_spec, Path(self.data_spec.source).name
        parts = self.read_splits()
        notes = list(self._notes)
        train = read_series(parts["train"], spec.time, spec.target, spec.features, file)
        self.columns_ = train.columns
        check_window(len(train.frame), spec.lookback, spec.horizon, f"the train part of {file}")
        self.scaler_ = Scaler(spec.scale).fit(train.values())
        self.target_scaler_ = self.scaler_
        x, y = windows(
            self.scaler.transform(train.values()), self.target_index, spec.lookback, spec.horizon
        )
        batch = (
            len(x) if self.recipe.train.batch_size == "full" else int(self.recipe.train.batch_size)
        )
        feed = EpochFeed(
            Tensors(torch.from_numpy(x), torch.from_numpy(y)), batch, self.recipe.train.seed
        )
        splits = {
            k: self._split(parts[k], f"the {k} part of {file}")
            for k in ("valid", "test")
            if len(parts[k])
        }
        dims = {
            "n_features": len(self.columns_),
            "n_outputs": spec.horizon,
            "max_length": spec.lookback,
        }
        sizes = {"train": len(x), **{k: len(v) for k, v in splits.items()}}
        steps = ", ".join(f"{k} {len(v)}" for k, v in parts.items())
        notes.append(f"steps {steps}; windows of {spec.lookback} steps forecast {spec.horizon}")
        return Prepared(feed, dict(splits), dims, sizes, "windows", notes)

    def eval_split(self, raw: pd.DataFrame) -> ForecastSplit:
        return self._split(raw, "the data")

    # ------------------------------------------------------------------ state

    def state(self) -> dict[str, Any]:
        return {
            "preprocess.json": {
                "columns": self.columns_,
                "target": self.data_spec.target,
                "lookback": self.data_spec.lookback,
                "horizon": self.data_spec.horizon,
                "scaler": self.scaler.to_dict(),
            }
        }

    @classmethod
    def from_state(cls, recipe: Recipe, folder: Path) -> SequenceRegressionTask:
        state = read_json_file(folder / "preprocess.json")
        task = cls(recipe)
        try:
            task.columns_ = [str(c) for c in state["columns"]]
            task.scaler_ = task.target_scaler_ = Scaler.from_dict(state["scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise damaged(folder / "preprocess.json", f"is damaged ({exc})") from None
        return task

    # ------------------------------------------------------------------ evaluation and reports

    def reference_outputs(self, split: EvalSplit, outputs: Outputs) -> dict[str, Outputs]:
        if not isinstance(split, ForecastSplit):
            return {}
        return {
            "naive": Outputs(float("nan"), y_true=outputs.y_true, y_pred=split.naive.reshape(-1))
        }

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        out = super().plots(module, outputs)
        split = outputs.split
        if isinstance(split, ForecastSplit) and outputs.y_pred is not None:
            h = self.data_spec.horizon
            out["forecast"] = {
                "time": split.series[0],
                "actual": split.series[1],
                "forecast_time": split.times[:, 0],
                "forecast": outputs.y_pred.reshape(-1, h)[:, 0],
                "naive": split.naive[:, 0],
                "name": self.data_spec.target,
                "time_name": self.data_spec.time or "step",
            }
        return out

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        part = outputs.split if outputs is not None else None
        if not isinstance(part, ForecastSplit) or outputs is None or outputs.y_pred is None:
            return []
        assert outputs.y_true is not None
        ours = float(np.sqrt(np.mean((outputs.y_true - outputs.y_pred) ** 2)))
        naive = float(np.sqrt(np.mean((outputs.y_true - part.naive.reshape(-1)) ** 2)))
        change = (1 - ours / naive) if naive > 0 else 0.0
        return [
            "## Against the naive forecast",
            "",
            f"RMSE {ours:.4g} against {naive:.4g} for the naive forecast (each step equals the "
            f"last observed one) on the same windows: {abs(change):.0%} "
            f"{'lower' if change >= 0 else 'higher'}.",
            "",
        ]

    def card_lines(self, run: dict[str, Any]) -> list[str]:
        spec = self.data_spec
        sizes = ", ".join(f"{k} {v:,}" for k, v in run.get("windows", {}).items())
        return [
            f"- data: {Path(spec.source).name}, forecast `{spec.target}` {spec.horizon} step(s) "
            f"ahead from {spec.lookback} steps of {', '.join(self.columns_)}",
            f"- windows (split in time order, none crossing a split): {sizes}",
        ]

    # ------------------------------------------------------------------ inference

    def input_schema(self) -> dict[str, Any]:
        """Rows of the series in time order; each forecast reads the ``lookback`` rows ending
        at its row."""
        spec = self.data_spec
        columns = ([spec.time] if spec.time else []) + list(self.columns_)
        return {"kind": "windows", "columns": columns, "lookback": spec.lookback}

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        """Row i gets ``<target>_forecast_k``: the forecast k steps after it, from the
        ``lookback`` rows ending at it (empty for the first lookback - 1 rows)."""
        spec = self.data_spec
        if not isinstance(records, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(records).__name__}")
        series = self._series(records, "the data")
        for note in series.notes:
            warnings.warn(note, DataWarning, stacklevel=2)
        if len(series.frame) < spec.lookback:
            raise DataError(
                f"the data has {len(series.frame)} rows; a forecast needs at least data.lookback "
                f"= {spec.lookback} rows of history"
            )
        values = self.scaler.transform(series.values())
        starts = np.arange(len(values) - spec.lookback + 1)
        x = torch.from_numpy(values[starts[:, None] + np.arange(spec.lookback)])  # (M, L, F)
        chunks = [(x[s : s + EVAL_WINDOWS],) for s in range(0, len(x), EVAL_WINDOWS)]
        forecast = self.decode_numbers(self.scores(module, chunks))  # (M, h)
        out = pd.DataFrame(index=series.frame.index)
        for k in range(spec.horizon):
            column = np.full(len(values), np.nan)
            column[spec.lookback - 1 :] = forecast[:, k]
            out[f"{spec.target}_forecast_{k + 1}"] = column
        return out.reindex(records.index)

    # ------------------------------------------------------------------ init
