"""tensorsmith: from data to a trained, evaluated and stored neural network with one recipe.

The public names are imported on first use (PEP 562), so that ``tensorsmith --help``,
``validate``, ``models`` and ``init`` answer without importing torch.
"""

import importlib as _importlib
import typing as _typing

# the subpackages tensorsmith.models and tensorsmith.finetune first (their __init__ imports no
# torch): importing a submodule binds its name on the package, so the public functions
# `models` and `finetune` must be bound after them, not before
from tensorsmith import finetune as _finetuning  # noqa: F401
from tensorsmith import models as _architectures  # noqa: F401
from tensorsmith.errors import DataError, ModelNotFoundError, RecipeError, TensorsmithError

if _typing.TYPE_CHECKING:
    from tensorsmith.api import (
        Model,
        compress,
        evaluate,
        generate,
        lineage,
        load,
        plan,
        predict,
        promote,
        train,
        validate,
    )

__all__ = [
    "DataError",
    "Model",
    "ModelNotFoundError",
    "RecipeError",
    "TensorsmithError",
    "compress",
    "evaluate",
    "finetune",
    "generate",
    "lineage",
    "load",
    "models",
    "plan",
    "predict",
    "promote",
    "train",
    "validate",
]
__version__ = "0.1.0"
_API = {
    "Model",
    "compress",
    "evaluate",
    "generate",
    "lineage",
    "load",
    "plan",
    "predict",
    "promote",
    "train",
    "validate",
}


def models(name: str | None = None, store: str | None = None) -> list[dict[str, _typing.Any]]:
    """The stored versions (name, version, task, arch, key metric, gate, date), newest last."""
    from tensorsmith.api.listing import models as listing

    return listing(name, store)


def finetune(recipe: _typing.Any, source: str | None = None, **options: _typing.Any) -> _typing.Any:
    """Fine-tune from ``source`` (or ``finetune.from``) in rounds until the gate holds; see
    :func:`tensorsmith.api.finetuning.finetune`."""
    from tensorsmith.api.finetuning import finetune as run

    return run(recipe, source, **options)


def __getattr__(name: str) -> _typing.Any:
    if name in _API:
        return getattr(_importlib.import_module("tensorsmith.api"), name)
    raise AttributeError(f"module 'tensorsmith' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
