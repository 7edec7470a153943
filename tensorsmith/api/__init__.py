"""The Python API, and the only package that knows every stage; the CLI is a thin face over it.

model = tensorsmith.train("recipe.yaml")
model.predict(df); model.evaluate(df)
tensorsmith.load("windsor-housing@2")

No stage here asks which task it holds: the task, the evaluation path, the training run and
the store each do their part through the ``Task`` interface. One module per verb group:
``recipes`` (validate, init), ``training`` (train), ``use`` (load, evaluate, predict,
generate, models), ``model`` (the public ``Model``).
"""

from tensorsmith.api.model import Model
from tensorsmith.api.recipes import check_recipe, init_recipe, validate
from tensorsmith.api.training import train
from tensorsmith.api.use import evaluate, generate, load, models, predict

__all__ = [
    "Model",
    "check_recipe",
    "evaluate",
    "generate",
    "init_recipe",
    "load",
    "models",
    "predict",
    "train",
    "validate",
]
