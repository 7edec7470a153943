"""The input block shared by the tabular architectures: numbers plus embedded categories."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TabularInput", "init_linear"]


class TabularInput(nn.Module):
    """Concatenates the numeric matrix with one embedding per category column.

    ``cardinalities[i]`` is the size of column i's table; index 0 is the unknown category.
    """

    def __init__(self, n_numeric: int, cardinalities: list[int], embedding_dim: int | None):
        super().__init__()
        dims = [embedding_dim or min(16, (c + 1) // 2) for c in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(c, d) for c, d in zip(cardinalities, dims, strict=True)
        )
        self.n_features = n_numeric + sum(dims)

    def forward(self, x: torch.Tensor, cat: torch.Tensor | None = None) -> torch.Tensor:
        if cat is None or not len(self.embeddings):
            return x
        parts = [x, *(emb(cat[:, i]) for i, emb in enumerate(self.embeddings))]
        return torch.cat(parts, dim=1)


def init_linear(layer: nn.Linear, scheme: str, activation: str = "relu") -> None:
    """Weight initialisation by name; biases start at zero except for the default scheme."""
    if scheme == "default":
        return  # PyTorch's own (Kaiming-uniform with a = sqrt(5))
    w = layer.weight
    if scheme == "gaussian":
        nn.init.normal_(w, mean=0.0, std=0.1)
    elif scheme == "uniform":
        bound = 1.0 / w.shape[1] ** 0.5
        nn.init.uniform_(w, -bound, bound)
    elif scheme == "xavier":
        gain = nn.init.calculate_gain(
            "sigmoid" if activation == "sigmoid" else "tanh" if activation == "tanh" else "relu"
        )
        nn.init.xavier_uniform_(w, gain=gain)
    elif scheme == "kaiming":
        nn.init.kaiming_normal_(w, nonlinearity="relu")
    else:
        raise ValueError(f"unknown init scheme {scheme!r}")
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
