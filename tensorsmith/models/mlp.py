"""A multi-layer perceptron: [Linear → (BatchNorm) → activation → (Dropout)] × n → Linear.

``hidden: [3]`` with ``activation: sigmoid`` and one output is the classic 2-3-1 network (the
output sigmoid lives in the loss, as BCE-with-logits, and in ``predict``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tensorsmith.models.activations import ACTIVATIONS
from tensorsmith.models.inputs import TabularInput, init_linear

__all__ = ["ACTIVATIONS", "MLP"]


class MLP(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        hidden: list[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = False,
        init: str = "default",
        cardinalities: list[int] | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.inputs = TabularInput(n_inputs, cardinalities or [], embedding_dim)
        layers: list[nn.Module] = []
        width = self.inputs.n_features
        for size in hidden:
            linear = nn.Linear(width, size)
            init_linear(linear, init, activation)
            layers.append(linear)
            if batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers.append(ACTIVATIONS.get(activation)())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = size
        out = nn.Linear(width, n_outputs)
        init_linear(out, init, activation)
        layers.append(out)
        self.net = nn.Sequential(*layers)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> MLP:
        return cls(
            dims["n_inputs"],
            dims["n_outputs"],
            list(spec.hidden),
            spec.activation,
            spec.dropout,
            spec.batch_norm,
            spec.init,
            dims.get("cardinalities"),
            spec.embedding_dim,
        )

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        h = x if cat is None else self.inputs(x, cat)  # (B, n_features)
        return self.net(h)  # (B, n_outputs)
