"""Tasks: one file per ``task:`` value, and the one inference object, ``Predictor``.

``TASKS`` maps a recipe's ``task`` to its :class:`~tensorsmith.tasks.base.Task`. A new task is
a new file here and a line below (and its recipe class in ``recipe/``); nothing outside this
package asks which task it holds.
"""

from tensorsmith.registry import Registry
from tensorsmith.tasks.base import Batch, EvalSplit, LossOf, Outputs, Prepared, Task
from tensorsmith.tasks.classification import ClassificationTask
from tensorsmith.tasks.language_modeling import LanguageModelingTask
from tensorsmith.tasks.regression import RegressionTask

__all__ = [
    "TASKS",
    "Batch",
    "EvalSplit",
    "LossOf",
    "Outputs",
    "Prepared",
    "Task",
    "create_task",
]

TASKS: Registry[type[Task]] = Registry("task", "task")
TASKS.register("regression", RegressionTask)
TASKS.register("classification", ClassificationTask)
TASKS.register("language-modeling", LanguageModelingTask)


def create_task(recipe: object) -> Task:
    """The task of a parsed recipe, not yet fitted."""
    from tensorsmith.recipe import Recipe

    assert isinstance(recipe, Recipe)
    return TASKS.get(recipe.task)(recipe)
