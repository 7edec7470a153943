"""``task: text-regression``: a number from a text column, in the target's own units."""

from __future__ import annotations

from tensorsmith.recipe import TextRegressionRecipe
from tensorsmith.tasks.text import TextTask

__all__ = ["TextRegressionTask"]


class TextRegressionTask(TextTask):
    name = "text-regression"
    target_kind = "number"
    metric_names = TextRegressionRecipe.metric_names
    key_metric = TextRegressionRecipe.key_metric
    losses = TextRegressionRecipe.losses
