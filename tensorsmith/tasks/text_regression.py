"""``task: text-regression``: a number from a text column, in the target's own units."""

from __future__ import annotations

from tensorsmith.tasks.supervised import NUMBER_METRICS
from tensorsmith.tasks.text import TextTask

__all__ = ["TextRegressionTask"]


class TextRegressionTask(TextTask):
    name = "text-regression"
    target_kind = "number"
    metric_names = NUMBER_METRICS
    key_metric = "r2"
    losses = ("mse", "mae", "huber")
