"""``task: regression`` on a table: a number per row, in the target's own units."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from tensorsmith.recipe import RegressionData
from tensorsmith.tasks.base import Outputs
from tensorsmith.tasks.starters import table_starter
from tensorsmith.tasks.table import TableTask

__all__ = ["RegressionTask"]


class RegressionTask(TableTask):
    name = "regression"
    target_kind = "number"
    metric_names = ("rmse", "mae", "r2", "mape", "mse")
    key_metric = "r2"
    losses = ("mse", "mae", "huber")

    def _target_transform(self) -> str:
        assert isinstance(self.recipe.data, RegressionData)
        return self.recipe.data.target_transform

    def _resolve_loss(self) -> str:
        return self.loss_name_ or "mse"

    def outputs(self, arrays: dict[str, np.ndarray], loss: float) -> Outputs:
        prep = self.preprocessor
        return Outputs(
            loss,
            y_true=prep.decode_regression(arrays["y"]),
            y_pred=prep.decode_regression(arrays["scores"][:, 0]),
        )

    def predict(self, module: nn.Module, records: pd.DataFrame) -> pd.DataFrame:
        scores = self._scores(module, self.encode(records, with_target=False))
        out = pd.DataFrame(index=records.index)
        out[f"{self.preprocessor.target}_predicted"] = self.preprocessor.decode_regression(
            scores[:, 0]
        )
        return out

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        pair = {"y_true": outputs.y_true, "y_pred": outputs.y_pred}
        return {"predicted_vs_actual": pair, "residuals": pair}

    @classmethod
    def starter(cls, path: Path, target: str | None, time: str | None) -> dict[str, Any] | None:
        return table_starter(cls.name, path, target, time)
