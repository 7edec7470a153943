"""The MLP head that the image and sequence encoders end in: features → task outputs."""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

__all__ = ["mlp_head"]


def mlp_head(
    width: int, hidden: Sequence[int], n_outputs: int, dropout: float, activation: type[nn.Module]
) -> nn.Sequential:
    """[Dropout → Linear → activation] per hidden size, then Dropout → Linear to the outputs."""
    layers: list[nn.Module] = []
    for size in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(width, size), activation()]
        width = size
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(width, n_outputs))
    return nn.Sequential(*layers)
