"""What the image, sequence and text tasks share: batches of ``(*inputs, y)`` fed to a model that
ends in a head, and a target that is a class or a number.

A class target is encoded by ``Labels`` fitted on the train split and trained with cross-entropy
on K scores (with optional class weights); a number is scaled with the train split's mean and
std, trained with ``train.loss`` (mse, mae, huber) and decoded back to its own units for the
metrics and predictions. Each task adds how it reads its data and what its inputs are.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch
from torch import nn

from tensorsmith.data.tabular import check_target
from tensorsmith.data.targets import Labels, Scaler
from tensorsmith.errors import StoreError
from tensorsmith.tasks.base import Batch, LossOf, Outputs, Task
from tensorsmith.tasks.classification import class_sections, probabilities
from tensorsmith.tasks.losses import LossFn, build_loss, class_weights

__all__ = ["SupervisedTask"]


class SupervisedTask(Task):
    """Base of the tasks whose model maps inputs to a class or a number."""

    target_kind: ClassVar[str]  # "label" or "number"

    def __init__(self, recipe: Any) -> None:
        super().__init__(recipe)
        self.labels_: Labels | None = None
        self.target_scaler_: Scaler | None = None
        self.class_weights_: torch.Tensor | None = None
        self._loss: LossFn | None = None

    def data_files(self) -> list[Path]:
        """The one table the data comes from (image tasks read many files)."""
        return [self.recipe.path(str(self.recipe.data.source))]

    @property
    def target_name(self) -> str:
        """The target's column name: predictions are ``<target>_predicted``."""
        return str(getattr(self.recipe.data, "target", "target"))

    @property
    def labels(self) -> list[str] | None:
        return None if self.labels_ is None else self.labels_.classes_

    @property
    def classes(self) -> Labels:
        if self.labels_ is None:
            raise RuntimeError("the task is not fitted: call prepare() or from_state()")
        return self.labels_

    # ------------------------------------------------------------------ the target

    def fit_target(self, train: pd.Series, file: str) -> np.ndarray:
        """Fit the target's encoding on the train split and encode it."""
        frame = pd.DataFrame({self.target_name: train.reset_index(drop=True)})
        check_target(frame, self.target_name, self.target_kind, file)
        if self.target_kind == "label":
            self.labels_ = Labels(f"target '{self.target_name}'").fit(train)
            codes = self.labels_.encode(train, file)
            spec = getattr(self.recipe.train, "class_weights", None)
            self.class_weights_ = class_weights(
                spec, self.labels_.n_classes, torch.from_numpy(codes), self.labels_.classes_
            )
            return codes
        values = pd.to_numeric(train).to_numpy(dtype=np.float64)[:, None]
        self.target_scaler_ = Scaler("standard").fit(values)
        return self.target_scaler_.transform(values)[:, 0]

    def encode_target(self, values: pd.Series, file: str) -> np.ndarray:
        """Targets of another split: class indices, or scaled numbers."""
        frame = pd.DataFrame({self.target_name: values.reset_index(drop=True)})
        check_target(
            frame, self.target_name, "number" if self.target_kind == "number" else "any", file
        )
        if self.target_kind == "label":
            return self.classes.encode(values, file)
        assert self.target_scaler_ is not None
        numbers = pd.to_numeric(values).to_numpy(dtype=np.float64)[:, None]
        return self.target_scaler_.transform(numbers)[:, 0]

    def decode_numbers(self, scaled: np.ndarray) -> np.ndarray:
        """Model outputs (or scaled targets) in the target's own units."""
        assert self.target_scaler_ is not None
        return self.target_scaler_.inverse(scaled, column=0)

    def n_outputs(self) -> int:
        return self.classes.n_classes if self.target_kind == "label" else 1

    def target_state(self) -> dict[str, Any]:
        if self.target_kind == "label":
            weights = self.class_weights_
            return {
                "labels": self.classes.to_dict(),
                "class_weights": None if weights is None else weights.tolist(),
            }
        assert self.target_scaler_ is not None
        return {"target_scaler": self.target_scaler_.to_dict()}

    def load_target_state(self, state: dict[str, Any], file: str) -> None:
        try:
            if self.target_kind == "label":
                self.labels_ = Labels.from_dict(state["labels"], f"target '{self.target_name}'")
                weights = state["class_weights"]
                self.class_weights_ = None if weights is None else torch.tensor(weights)
            else:
                self.target_scaler_ = Scaler.from_dict(state["target_scaler"])
        except (KeyError, TypeError, ValueError) as exc:
            raise StoreError(
                f"{file} is damaged ({type(exc).__name__}: {exc}); train the model again"
            ) from None

    # ------------------------------------------------------------------ training and evaluation

    def loss_name(self) -> str:
        if self.target_kind == "label":
            return "cross_entropy"
        return str(getattr(self.recipe.train, "loss", None) or "mse")

    def loss_label(self) -> str:
        if self.target_kind == "label":
            weighted = ", class-weighted" if self.class_weights_ is not None else ""
            return f"cross-entropy{weighted}"
        return f"{self.loss_name().upper()} on the standardised target"

    def _loss_fn(self) -> LossFn:
        if self._loss is None:
            fn = build_loss(self.loss_name(), self.class_weights_)
            if self.target_kind == "label":
                self._loss = fn
            else:  # (B, h) outputs against (B, h) or (B,) targets; one output squeezes to (B,)
                self._loss = lambda out, y: fn(
                    out.reshape(len(y), -1), y.reshape(len(y), -1).squeeze(-1)
                )
        return self._loss

    def loss(self) -> LossOf:
        fn = self._loss_fn()
        return lambda module, batch: fn(module(*batch[:-1]), batch[-1])

    def batch_outputs(self, module: nn.Module, batch: Batch) -> dict[str, torch.Tensor]:
        scores = module(*batch[:-1])
        y = batch[-1]
        n = torch.tensor(y.shape[0])
        return {"loss_sum": self._loss_fn()(scores, y) * n, "count": n, "scores": scores, "y": y}

    def outputs(self, arrays: dict[str, np.ndarray], loss: float) -> Outputs:
        if self.target_kind == "label":
            proba = probabilities(arrays["scores"])
            return Outputs(
                loss,
                y_true=arrays["y"].astype(np.int64),
                y_pred=proba.argmax(axis=1),
                proba=proba,
                n_classes=self.classes.n_classes,
            )
        y_true = self.decode_numbers(arrays["y"]).reshape(-1)
        return Outputs(
            loss, y_true=y_true, y_pred=self.decode_numbers(arrays["scores"]).reshape(-1)
        )

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        if self.target_kind == "label":
            return {
                "confusion_matrix": {
                    "y_true": outputs.y_true,
                    "y_pred": outputs.y_pred,
                    "labels": self.classes.classes_,
                }
            }
        pair = {"y_true": outputs.y_true, "y_pred": outputs.y_pred}
        return {"predicted_vs_actual": pair, "residuals": pair}

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        if self.target_kind != "label":
            return []
        return class_sections(outputs, self.classes.classes_, split)

    # ------------------------------------------------------------------ inference

    def scores(self, module: nn.Module, batches: Iterable[Batch]) -> np.ndarray:
        """The model's raw outputs over input-only batches, concatenated: (N, K)."""
        parts = []
        with torch.no_grad():
            for batch in batches:
                parts.append(module(*batch).float())
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.n_outputs()), np.float32)

    def predictions(self, scores: np.ndarray, index: pd.Index) -> pd.DataFrame:
        """``<target>_predicted`` (and ``proba_<class>`` for classes), one row per input."""
        out = pd.DataFrame(index=index)
        if self.target_kind == "label":
            proba = probabilities(scores)
            classes = self.classes.classes_
            out[f"{self.target_name}_predicted"] = [classes[i] for i in proba.argmax(axis=1)]
            for i, c in enumerate(classes):
                out[f"proba_{c}"] = proba[:, i]
            return out
        out[f"{self.target_name}_predicted"] = self.decode_numbers(scores[:, 0])
        return out
