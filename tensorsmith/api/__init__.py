"""The Python API, and the only package that knows every stage; the CLI is a thin face over it.

model = tensorsmith.train("recipe.yaml")
model.predict(df); model.evaluate(df)
tensorsmith.load("windsor-housing@2")

No stage here asks which task it holds: the task, the evaluation path, the training run and
the store each do their part through the ``Task`` interface. One module per verb group:
``recipes`` (validate, init), ``training`` (train), ``use`` (load, evaluate, predict,
generate, models), ``model`` (the public ``Model``). Names are imported on first use: the
light verbs (validate, init, models) import no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tensorsmith.api.compression import compress
    from tensorsmith.api.finetuning import finetune
    from tensorsmith.api.listing import lineage, models, promote
    from tensorsmith.api.model import Model
    from tensorsmith.api.planning import plan
    from tensorsmith.api.recipes import check_recipe, init_recipe, validate
    from tensorsmith.api.serving import serve
    from tensorsmith.api.training import train
    from tensorsmith.api.use import evaluate, generate, load, predict

__all__ = [
    "Model",
    "check_recipe",
    "compress",
    "evaluate",
    "finetune",
    "generate",
    "init_recipe",
    "lineage",
    "load",
    "models",
    "plan",
    "predict",
    "promote",
    "serve",
    "train",
    "validate",
]
_WHERE = {
    "Model": "model",
    "check_recipe": "recipes",
    "init_recipe": "recipes",
    "validate": "recipes",
    "train": "training",
    "finetune": "finetuning",
    "compress": "compression",
    "evaluate": "use",
    "generate": "use",
    "load": "use",
    "models": "listing",
    "promote": "listing",
    "lineage": "listing",
    "plan": "planning",
    "predict": "use",
    "serve": "serving",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"tensorsmith.api.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'tensorsmith.api' has no attribute {name!r}")
