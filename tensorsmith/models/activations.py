"""Activation functions by name, for the architectures that take ``model.activation``.

Names resolve to ``torch.nn`` classes on first use, so the recipe's names are checked without
importing torch.
"""

from __future__ import annotations

from typing import Any

from tensorsmith.registry import Registry

__all__ = ["ACTIVATIONS"]

ACTIVATIONS: Registry[Any] = Registry("activation", "model.activation")
ACTIVATIONS.register_lazy("sigmoid", "torch.nn:Sigmoid")
ACTIVATIONS.register_lazy("tanh", "torch.nn:Tanh")
ACTIVATIONS.register_lazy("relu", "torch.nn:ReLU")
ACTIVATIONS.register_lazy("gelu", "torch.nn:GELU")
