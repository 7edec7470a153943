"""``task: regression`` on a table: a number per row, in the target's own units."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from tensorsmith.recipe import RegressionData, RegressionRecipe
from tensorsmith.tasks.base import Outputs
from tensorsmith.tasks.table import TableTask

__all__ = ["RegressionTask"]


class RegressionTask(TableTask):
    name = "regression"
    target_kind = "number"
    metric_names = RegressionRecipe.metric_names
    key_metric = RegressionRecipe.key_metric
    losses = RegressionRecipe.losses

    def loss_label(self) -> str:
        name = {"mse": "MSE", "mae": "MAE", "huber": "Huber loss"}.get(self._resolve_loss(), "loss")
        target = self.preprocessor.target
        shown = f"log({target})" if self._target_transform() == "log" else target
        return f"{name} on {shown}, standardized"

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

    def _decode(self, scores: np.ndarray, index: pd.Index) -> pd.DataFrame:
        out = pd.DataFrame(index=index)
        prep = self.preprocessor
        out[f"{prep.target}_predicted"] = prep.decode_regression(scores[:, 0])
        return out

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        pair = {
            "y_true": outputs.y_true,
            "y_pred": outputs.y_pred,
            "target": self.preprocessor.target,
        }
        return {"predicted_vs_actual": pair, "residuals": pair}
