"""tensorsmith: from data to a trained, evaluated and stored neural network with one recipe."""

from tensorsmith.api import Model, evaluate, load, models, predict, train, validate
from tensorsmith.errors import DataError, ModelNotFoundError, RecipeError, TensorsmithError

__all__ = [
    "DataError",
    "Model",
    "ModelNotFoundError",
    "RecipeError",
    "TensorsmithError",
    "evaluate",
    "load",
    "models",
    "predict",
    "train",
    "validate",
]
__version__ = "0.1.0"
