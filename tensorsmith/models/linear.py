"""Linear regression, logistic regression and softmax regression: one affine map.

The loss picks the flavour: MSE gives linear regression, BCE on one logit gives logistic
regression, cross-entropy on K logits gives softmax regression.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tensorsmith.models.inputs import TabularInput, init_linear

__all__ = ["Linear"]


class Linear(nn.Module):
    def __init__(
        self,
        n_inputs: int,
        n_outputs: int,
        cardinalities: list[int] | None = None,
        embedding_dim: int | None = None,
        init: str = "default",
    ) -> None:
        super().__init__()
        self.inputs = TabularInput(n_inputs, cardinalities or [], embedding_dim)
        self.out = nn.Linear(self.inputs.n_features, n_outputs)
        init_linear(self.out, init)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> Linear:
        return cls(
            dims["n_inputs"],
            dims["n_outputs"],
            dims.get("cardinalities"),
            spec.embedding_dim,
            spec.init,
        )

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(self.inputs(x, cat))  # (B, n_outputs)
