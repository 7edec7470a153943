"""``task: classification`` on a table: a label and class probabilities per row."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from torch import nn

from tensorsmith.errors import RecipeError
from tensorsmith.recipe import ClassificationRecipe
from tensorsmith.tasks.base import Outputs
from tensorsmith.tasks.table import TableTask

__all__ = ["ClassificationTask", "class_sections", "probabilities"]


def probabilities(scores: np.ndarray) -> np.ndarray:
    """(N, 1) logits (sigmoid → P(class 1)) or (N, K) scores (softmax) → (N, K) probabilities."""
    if scores.shape[1] == 1:
        from scipy.special import expit

        p1 = expit(scores[:, 0].astype(np.float64))
        return np.stack([1.0 - p1, p1], axis=1)
    z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def class_sections(outputs: Outputs | None, classes: list[str], split: str) -> list[str]:
    """Card sections of a classifier: per-class precision, recall and F1, and the confusion
    matrix of the reported split."""
    if outputs is None or outputs.y_true is None or outputs.y_pred is None:
        return []
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    k = list(range(len(classes)))
    cm = confusion_matrix(outputs.y_true, outputs.y_pred, labels=k)
    p, r, f, n = precision_recall_fscore_support(
        outputs.y_true, outputs.y_pred, labels=k, zero_division=0
    )
    lines = ["## Per class", "", "| class | precision | recall | F1 | rows |"]
    lines += ["|---|---|---|---|---|"]
    lines += [
        f"| {c} | {p[i]:.3f} | {r[i]:.3f} | {f[i]:.3f} | {int(n[i]):,} |"
        for i, c in enumerate(classes)
    ]
    lines += ["", f"## Confusion matrix ({split} split; rows: true class, columns: predicted)", ""]
    lines += ["| true \\ predicted | " + " | ".join(classes) + " |"]
    lines += ["|---|" + "---|" * len(classes)]
    lines += [
        f"| {c} | " + " | ".join(f"{v:,}" for v in cm[i]) + " |" for i, c in enumerate(classes)
    ]
    return [*lines, ""]


class ClassificationTask(TableTask):
    name = "classification"
    target_kind = "label"
    metric_names = ClassificationRecipe.metric_names
    key_metric = ClassificationRecipe.key_metric
    losses = ClassificationRecipe.losses

    @property
    def labels(self) -> list[str]:
        return self.preprocessor.classes

    def _resolve_loss(self) -> str:
        k = self.preprocessor.n_classes
        if self.loss_name_ == "bce" and k > 2:
            raise RecipeError(
                f"train.loss bce is for two classes; the target has {k}: use cross_entropy"
            )
        return self.loss_name_ or ("bce" if k == 2 else "cross_entropy")

    def loss_label(self) -> str:
        name = "binary cross-entropy" if self._resolve_loss() == "bce" else "cross-entropy"
        return name + (", class-weighted" if self.class_weights_ is not None else "")

    def card_sections(self, module: nn.Module, outputs: Outputs | None, split: str) -> list[str]:
        return class_sections(outputs, self.preprocessor.classes, split)

    def _n_outputs(self) -> int:
        return 1 if self._resolve_loss() == "bce" else self.preprocessor.n_classes

    def outputs(self, arrays: dict[str, np.ndarray], loss: float) -> Outputs:
        proba = probabilities(arrays["scores"])
        return Outputs(
            loss,
            y_true=arrays["y"].astype(np.int64),
            y_pred=proba.argmax(axis=1),
            proba=proba,
            n_classes=self.preprocessor.n_classes,
        )

    def predict_proba(self, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
        return probabilities(self._scores(module, self.encode(records, with_target=False)))

    def _decode(self, scores: np.ndarray, index: pd.Index) -> pd.DataFrame:
        proba = probabilities(scores)
        classes = self.preprocessor.classes
        out = pd.DataFrame(index=index)
        out[f"{self.preprocessor.target}_predicted"] = [classes[i] for i in proba.argmax(axis=1)]
        for i, c in enumerate(classes):
            out[f"proba_{c}"] = proba[:, i]
        return out

    def plots(self, module: nn.Module, outputs: Outputs) -> dict[str, dict[str, Any]]:
        labels = self.preprocessor.classes
        out: dict[str, dict[str, Any]] = {
            "confusion_matrix": {
                "y_true": outputs.y_true,
                "y_pred": outputs.y_pred,
                "labels": labels,
            },
            "roc": {"y_true": outputs.y_true, "proba": outputs.proba, "labels": labels},
        }
        prep = self.preprocessor
        two_numbers = len(prep.feature_names()) == 2 and all(
            prep.types[f] == "number" for f in prep.features
        )
        frame = getattr(self, "train_frame_", None)
        if two_numbers and frame is not None:  # the decision boundary of a 2-D problem
            out["decision_boundary"] = {
                "predict_proba": lambda grid: self.predict_proba(
                    module, pd.DataFrame(grid, columns=prep.features)
                ),
                "X": frame[prep.features].to_numpy(dtype=float),
                "y": prep.encode_target(frame[prep.target]),
                "feature_names": prep.features,
                "labels": labels,
                "split": "train",  # the points drawn are the train rows
            }
        return out
