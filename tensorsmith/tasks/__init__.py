"""Tasks: one file per ``task:`` value, and the one inference object, ``Predictor``.

``TASKS`` maps a recipe's ``task`` to its :class:`~tensorsmith.tasks.base.Task`. A new task is
a new file here and a line below (and its recipe class in ``recipe/``); nothing outside this
package asks which task it holds. Entries and names are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tensorsmith.registry import Registry

if TYPE_CHECKING:
    from tensorsmith.tasks.base import (
        Batch,
        EvalSplit,
        LossOf,
        Outputs,
        Prepared,
        Task,
        Workload,
        batches_of,
    )

__all__ = [
    "TASKS",
    "Batch",
    "EvalSplit",
    "LossOf",
    "Outputs",
    "Prepared",
    "Task",
    "Workload",
    "batches_of",
    "create_task",
]

TASKS: Registry[type[Task]] = Registry("task", "task")
TASKS.register_lazy("regression", "tensorsmith.tasks.regression:RegressionTask")
TASKS.register_lazy("classification", "tensorsmith.tasks.classification:ClassificationTask")
TASKS.register_lazy("language-modeling", "tensorsmith.tasks.language_modeling:LanguageModelingTask")
TASKS.register_lazy(
    "image-classification", "tensorsmith.tasks.image_classification:ImageClassificationTask"
)
TASKS.register_lazy(
    "sequence-regression", "tensorsmith.tasks.sequence_regression:SequenceRegressionTask"
)
TASKS.register_lazy(
    "sequence-classification",
    "tensorsmith.tasks.sequence_classification:SequenceClassificationTask",
)
TASKS.register_lazy(
    "text-classification", "tensorsmith.tasks.text_classification:TextClassificationTask"
)
TASKS.register_lazy("text-regression", "tensorsmith.tasks.text_regression:TextRegressionTask")
_BASE = {"Batch", "EvalSplit", "LossOf", "Outputs", "Prepared", "Task", "Workload", "batches_of"}


def create_task(recipe: Any) -> Task:
    """The task of a parsed recipe, not yet fitted."""
    return TASKS.get(recipe.task)(recipe)


def __getattr__(name: str) -> Any:
    if name in _BASE:
        return getattr(importlib.import_module("tensorsmith.tasks.base"), name)
    raise AttributeError(f"module 'tensorsmith.tasks' has no attribute {name!r}")
