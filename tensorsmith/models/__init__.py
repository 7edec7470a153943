"""Architectures, one per file, found by name through ``MODELS``.

Each class has ``from_spec(spec, dims)``: ``spec`` is the recipe's ``model`` section, ``dims``
the sizes the data decides (``n_inputs``/``n_outputs``/``cardinalities`` for tables,
``vocab_size`` for text, ``channels``/``height``/``width`` for images, ``n_features`` or
``vocab_size`` with ``max_length`` for sequences). The artifact's ``config.json`` stores
``dims`` so loading rebuilds the same module. Entries are imported on first use: checking a
recipe's names imports no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tensorsmith.models.activations import ACTIVATIONS
from tensorsmith.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ACTIVATIONS", "MODELS", "build_model", "check_model", "shardable"]

MODELS: Registry[Any] = Registry("architecture", "model.arch")
MODELS.register_lazy("linear", "tensorsmith.models.linear:Linear")
MODELS.register_lazy("mlp", "tensorsmith.models.mlp:MLP")
MODELS.register_lazy("gpt", "tensorsmith.models.gpt:GPT")
MODELS.register_lazy("hf-causal", "tensorsmith.models.hf:HFCausalLM")
MODELS.register_lazy("hf-encoder", "tensorsmith.models.hf:HFEncoder")
MODELS.register_lazy("cnn", "tensorsmith.models.cnn:CNN")
MODELS.register_lazy("rnn", "tensorsmith.models.rnn:RNN")
MODELS.register_lazy("transformer", "tensorsmith.models.transformer:Encoder")


def check_model(spec: Any) -> None:
    """The recipe's model section names things that exist (no data, no torch needed)."""
    MODELS.check(spec.arch)
    activation = getattr(spec, "activation", None)
    if activation is not None:
        ACTIVATIONS.check(activation)


def build_model(spec: Any, dims: dict[str, Any]) -> nn.Module:
    module: nn.Module = MODELS.get(spec.arch).from_spec(spec, dims)
    return module


def shardable(arch: str) -> bool:
    """Whether FSDP can shard the architecture: its class names its blocks (``fsdp_blocks``)."""
    return callable(getattr(MODELS.get(arch), "fsdp_blocks", None))
