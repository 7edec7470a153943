"""Tasks: one file per ``task:`` value, and the one inference object, ``Predictor``.

``TASKS`` maps a recipe's ``task`` to its :class:`~tensorsmith.tasks.base.Task`. A new task is
a new file here and a line below (and its recipe class in ``recipe/``); nothing outside this
package asks which task it holds.
"""

from tensorsmith.registry import Registry
from tensorsmith.tasks.base import Batch, EvalSplit, LossOf, Outputs, Prepared, Task
from tensorsmith.tasks.classification import ClassificationTask
from tensorsmith.tasks.image_classification import ImageClassificationTask
from tensorsmith.tasks.language_modeling import LanguageModelingTask
from tensorsmith.tasks.regression import RegressionTask
from tensorsmith.tasks.sequence_classification import SequenceClassificationTask
from tensorsmith.tasks.sequence_regression import SequenceRegressionTask
from tensorsmith.tasks.text_classification import TextClassificationTask
from tensorsmith.tasks.text_regression import TextRegressionTask

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
TASKS.register("image-classification", ImageClassificationTask)
TASKS.register("sequence-regression", SequenceRegressionTask)
TASKS.register("sequence-classification", SequenceClassificationTask)
TASKS.register("text-classification", TextClassificationTask)
TASKS.register("text-regression", TextRegressionTask)


def create_task(recipe: object) -> Task:
    """The task of a parsed recipe, not yet fitted."""
    from tensorsmith.recipe import Recipe

    assert isinstance(recipe, Recipe)
    return TASKS.get(recipe.task)(recipe)
