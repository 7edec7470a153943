"""Architectures, one per file, found by name through ``MODELS``.

Each class has ``from_spec(spec, dims)``: ``spec`` is the recipe's ``model`` section, ``dims``
the sizes the data decides (``n_inputs``/``n_outputs``/``cardinalities`` for tables,
``vocab_size`` for text, ``channels``/``height``/``width`` for images, ``n_features`` or
``vocab_size`` with ``max_length`` for sequences). The artifact's ``config.json`` stores
``dims`` so loading rebuilds the same module. A class may have ``check_spec(spec)`` for the
names it looks up in a registry.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from tensorsmith.models.cnn import CNN
from tensorsmith.models.gpt import GPT
from tensorsmith.models.linear import Linear
from tensorsmith.models.mlp import MLP
from tensorsmith.models.rnn import RNN
from tensorsmith.models.transformer import Encoder
from tensorsmith.registry import Registry

__all__ = ["MODELS", "build_model", "check_model"]

MODELS: Registry[Any] = Registry("architecture", "model.arch")
MODELS.register("linear", Linear)
MODELS.register("mlp", MLP)
MODELS.register("gpt", GPT)
MODELS.register("cnn", CNN)
MODELS.register("rnn", RNN)
MODELS.register("transformer", Encoder)


def check_model(spec: Any) -> None:
    """The recipe's model section names things that exist (no data needed)."""
    cls = MODELS.get(spec.arch)
    check = getattr(cls, "check_spec", None)
    if check is not None:
        check(spec)


def build_model(spec: Any, dims: dict[str, Any]) -> nn.Module:
    module: nn.Module = MODELS.get(spec.arch).from_spec(spec, dims)
    return module
