"""The public ``Model``: a stored version that predicts, generates and evaluates."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd

from tensorsmith.data.fingerprint import what_changed
from tensorsmith.data.text import DataWarning
from tensorsmith.errors import DataError
from tensorsmith.evaluation.evaluate import evaluate as evaluate_split
from tensorsmith.evaluation.metrics import MetricValue, check_metrics
from tensorsmith.tasks.predictor import Predictor


class Model:
    """A stored model version: ``predict``, ``predict_proba``, ``generate``, ``evaluate``.

    A thin face over the :class:`~tensorsmith.tasks.predictor.Predictor` (which serving and
    compression use directly) that adds evaluation.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    path = property(lambda self: self.predictor.path)
    name = property(lambda self: self.predictor.name)
    recipe = property(lambda self: self.predictor.recipe)
    task = property(lambda self: self.predictor.task)
    module = property(lambda self: self.predictor.module)
    config = property(lambda self: self.predictor.config)
    run = property(lambda self: self.predictor.run)
    metrics = property(lambda self: self.predictor.metrics)
    version = property(lambda self: int(self.predictor.config["version"]))

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task.name!r}, path='{self.path}')"

    def predict(self, data: pd.DataFrame) -> pd.DataFrame:
        """Predictions, one row per input row: the label (or value) and class probabilities.

        Input values that preprocessing could not take as given (text in a number column, a
        value far outside the training range, an unseen category) are counted per column in
        ``result.attrs["notes"]`` and in a ``DataWarning``.
        """
        result = self.predictor.predict(data)
        for note in result.attrs.get("notes", []):
            warnings.warn(note, DataWarning, stacklevel=2)
        return result

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        return self.predictor.predict_proba(data)

    def stream(self, prompt: str, max_new_tokens: int = 200, **options: Any) -> Iterator[str]:
        return self.predictor.stream(prompt, max_new_tokens=max_new_tokens, **options)

    def generate(self, prompt: str, max_new_tokens: int = 200, **options: Any) -> str:
        return self.predictor.generate(prompt, max_new_tokens, **options)

    def evaluate(self, data: Any, metrics: list[str] | None = None) -> dict[str, MetricValue]:
        """The recipe's metrics on raw data with targets (a DataFrame, or text)."""
        names = metrics or self.recipe.evaluate.metrics
        check_metrics(names, self.task.metric_names, self.task.name)
        return evaluate_split(self.task, self.module, self.task.eval_split(data), names)

    def data_splits(self) -> dict[str, Any]:
        """The train / valid / test data of the recipe's own source, split as in training."""
        return self.task.read_splits()

    def evaluate_splits(self) -> dict[str, dict[str, MetricValue]]:
        """Re-read the recipe's own data and evaluate its valid and test splits.

        Refused when the data changed since training (``data.json``): a re-split of changed
        data would put rows the model trained on into the "test" split.
        """
        recorded = self.predictor.data
        changed = what_changed(recorded, self.task.data_files()) if recorded else []
        if changed:
            raise DataError(
                f"the data of {self.name} changed since it was trained: {'; '.join(changed)}; "
                "re-splitting it would mix rows the model trained on into the test split: "
                "evaluate new data with --data FILE, or train again"
            )
        splits = self.data_splits()
        digests = recorded.get("splits", {}) if recorded else {}
        moved = [k for k in splits if k in digests and self._digest(k, splits[k]) != digests[k]]
        if moved:
            raise DataError(
                f"the {', '.join(moved)} split of {self.name} holds other rows than in training; "
                "evaluate new data with --data FILE, or train again"
            )
        return {k: self.evaluate(v) for k, v in splits.items() if k != "train" and len(v)}

    def _digest(self, split: str, raw: Any) -> str:
        from tensorsmith.data.fingerprint import digest_text, digest_values

        return digest_text(raw) if isinstance(raw, str) else digest_values(raw.index)
