"""A convolutional network for images, in one file, top to bottom.

Conv blocks (one per entry of ``channels``): convolution → BatchNorm → activation, or with
``residual`` a ResNet basic block (two convolutions and a skip connection, He et al. 2016), each
followed by 2×2 pooling; then global average (or max) pooling over the remaining positions and
an MLP head.

Shapes: B batch, C channels, H height, W width, K outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from tensorsmith.errors import RecipeError
from tensorsmith.models.activations import ACTIVATIONS
from tensorsmith.models.heads import mlp_head

__all__ = ["CNN", "ConvBlock"]


class ConvBlock(nn.Module):
    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int,
        stride: int,
        padding: int,
        batch_norm: bool,
        activation: type[nn.Module],
        residual: bool,
        pool: str,
    ) -> None:
        super().__init__()

        def norm() -> nn.Module:
            return nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()

        self.conv1 = nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=not batch_norm)
        self.norm1 = norm()
        self.act = activation()
        self.residual = residual
        if residual:
            # the second convolution keeps the size; the skip projects when the shape changes
            self.conv2 = nn.Conv2d(c_out, c_out, kernel, 1, kernel // 2, bias=not batch_norm)
            self.norm2 = norm()
            same = c_in == c_out and stride == 1
            self.skip: nn.Module = (
                nn.Identity()
                if same
                else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm())
            )
        # ceil_mode: an odd side keeps its last row instead of dropping it (and 1 stays 1)
        self.pool: nn.Module = nn.Identity()
        if pool == "max":
            self.pool = nn.MaxPool2d(2, ceil_mode=True)
        elif pool == "avg":
            self.pool = nn.AvgPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(self.conv1(x)))  # (B, C_out, H', W')
        if self.residual:
            h = self.act(self.norm2(self.conv2(h)) + self.skip(x))
        return self.pool(h)  # (B, C_out, ceil(H'/2), ceil(W'/2))


def _side(n: int, kernel: int, stride: int, padding: int, pooled: bool) -> int:
    n = (n + 2 * padding - kernel) // stride + 1
    return -(-n // 2) if pooled and n > 0 else n


class CNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        size: tuple[int, int],
        n_outputs: int,
        channels: list[int],
        kernel: int = 3,
        stride: int = 1,
        padding: int | None = None,
        batch_norm: bool = True,
        activation: str = "relu",
        pool: str = "max",
        residual: bool = False,
        global_pool: str = "avg",
        head: list[int] | None = None,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        pad = kernel // 2 if padding is None else padding
        act = ACTIVATIONS[activation]
        blocks, width, (h, w) = [], in_channels, size
        for i, c in enumerate(channels):
            blocks.append(ConvBlock(width, c, kernel, stride, pad, batch_norm, act, residual, pool))
            h = _side(h, kernel, stride, pad, pool != "none")
            w = _side(w, kernel, stride, pad, pool != "none")
            if h < 1 or w < 1:
                raise RecipeError(
                    f"model.channels: block {i + 1} of {len(channels)} shrinks {size[0]}×"
                    f"{size[1]} images to nothing; use fewer blocks, model.pool: none, a smaller "
                    "model.stride, or a larger data.image.size"
                )
            width = c
        self.blocks = nn.Sequential(*blocks)
        self.global_pool = (
            nn.AdaptiveAvgPool2d(1) if global_pool == "avg" else nn.AdaptiveMaxPool2d(1)
        )
        self.head = mlp_head(width, head or [], n_outputs, dropout, act)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> CNN:
        return cls(
            dims["channels"],
            (dims["height"], dims["width"]),
            dims["n_outputs"],
            list(spec.channels),
            spec.kernel,
            spec.stride,
            spec.padding,
            spec.batch_norm,
            spec.activation,
            spec.pool,
            spec.residual,
            spec.global_pool,
            list(spec.head),
            spec.dropout,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.blocks(x)  # (B, C_last, h, w)
        h = self.global_pool(h).flatten(1)  # (B, C_last)
        return self.head(h)  # (B, K)
