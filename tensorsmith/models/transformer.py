"""A transformer encoder for token ids or numeric sequences, in one file, top to bottom.

Token ids (B, T) go through an embedding, values (B, T, F) through a linear projection; learned
or sinusoidal (Vaswani et al., 2017) positions are added; pre-LayerNorm blocks of bidirectional
self-attention (``F.scaled_dot_product_attention`` with a boolean padding mask: no query ever
attends to a padded key) and a GELU MLP follow; the sequence is pooled by a learned CLS vector
put in front of it, or by the mean over real positions, and an MLP head maps it to the outputs.

Shapes: B batch, T time (sequence), C = n_embd channels, nh heads, hs = C // nh head size
(or ``head_size``), A = nh · hs attention width, F features, K outputs. ``head_size`` and
``mlp_width`` are set by structured pruning, which removes heads and MLP units but keeps C.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tensorsmith.models.heads import mlp_head

__all__ = ["Encoder", "sinusoidal_positions"]


def sinusoidal_positions(length: int, channels: int) -> torch.Tensor:
    """(length, channels): sin on even channels, cos on odd, wavelengths 2π … 10000·2π."""
    pos = torch.arange(length, dtype=torch.float32)[:, None]  # (L, 1)
    rate = torch.exp(
        torch.arange(0, channels, 2, dtype=torch.float32) * (-math.log(10000.0) / channels)
    )
    table = torch.zeros(length, channels)
    table[:, 0::2] = torch.sin(pos * rate)
    table[:, 1::2] = torch.cos(pos * rate)[:, : channels // 2]
    return table


class SelfAttention(nn.Module):
    def __init__(
        self, n_embd: int, n_head: int, dropout: float, bias: bool, head_size: int | None = None
    ) -> None:
        super().__init__()
        self.n_head = n_head
        self.head_size = head_size or n_embd // n_head
        inner = n_head * self.head_size  # A: the attention width (n_embd unless heads were pruned)
        self.qkv = nn.Linear(n_embd, 3 * inner, bias=bias)
        self.proj = nn.Linear(inner, n_embd, bias=bias)
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """x (B, T, C); keys (B, 1, 1, T) True where a key may be attended."""
        B, T, _ = x.shape
        nh, hs = self.n_head, self.head_size
        q, k, v = self.qkv(x).split(nh * hs, dim=2)  # 3 × (B, T, A)
        q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=keys, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return self.drop(self.proj(y.transpose(1, 2).reshape(B, T, nh * hs)))


class Block(nn.Module):
    def __init__(
        self,
        n_embd: int,
        n_head: int,
        mlp_width: int,
        dropout: float,
        bias: bool,
        head_size: int | None = None,
    ):
        super().__init__()
        self.ln_1 = nn.LayerNorm(n_embd, bias=bias)
        self.attn = SelfAttention(n_embd, n_head, dropout, bias, head_size)
        self.ln_2 = nn.LayerNorm(n_embd, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(n_embd, mlp_width, bias=bias),
            nn.GELU(),
            nn.Linear(mlp_width, n_embd, bias=bias),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), keys)  # pre-LayerNorm residual blocks
        return x + self.mlp(self.ln_2(x))


class Encoder(nn.Module):
    def __init__(
        self,
        n_outputs: int,
        max_length: int,
        n_layer: int = 2,
        n_head: int = 4,
        n_embd: int = 64,
        mlp_ratio: int = 4,
        dropout: float = 0.1,
        positions: str = "learned",
        pooling: str = "mean",
        bias: bool = True,
        head: list[int] | None = None,
        vocab_size: int | None = None,
        n_features: int | None = None,
        head_size: int | None = None,
        mlp_width: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size is None and n_features is None:
            raise ValueError(
                "an encoder reads tokens (dims vocab_size) or values (dims n_features)"
            )
        self.inputs: nn.Module = (
            nn.Embedding(vocab_size, n_embd)
            if vocab_size is not None
            else nn.Linear(n_features or 1, n_embd)
        )
        self.cls = nn.Parameter(torch.zeros(1, 1, n_embd)) if pooling == "cls" else None
        length = max_length + (1 if self.cls is not None else 0)
        self.max_length = max_length
        if positions == "learned":
            self.pos: nn.Embedding | None = nn.Embedding(length, n_embd)
        else:
            self.pos = None
            self.register_buffer("table", sinusoidal_positions(length, n_embd), persistent=False)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(
            Block(n_embd, n_head, mlp_width or mlp_ratio * n_embd, dropout, bias, head_size)
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.head = mlp_head(n_embd, head or [], n_outputs, 0.0, nn.GELU)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> Encoder:
        return cls(
            dims["n_outputs"],
            dims["max_length"],
            spec.n_layer,
            spec.n_head,
            spec.n_embd,
            spec.mlp_ratio,
            spec.dropout,
            spec.positions,
            spec.pooling,
            spec.bias,
            list(spec.head),
            dims.get("vocab_size"),
            dims.get("n_features"),
            spec.head_size,
            spec.mlp_width,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T) ids or (B, T, F) values; mask (B, T) True on real positions → (B, K)."""
        B, T = x.shape[:2]
        if self.max_length < T:
            raise ValueError(f"sequence of {T} steps is longer than max_length={self.max_length}")
        h = self.inputs(x)  # (B, T, C)
        real = torch.ones(B, T, dtype=torch.bool, device=h.device) if mask is None else mask.clone()
        real[:, 0] = (
            True  # an empty sequence attends to its first (padding) position, not to nothing
        )
        if self.cls is not None:
            h = torch.cat([self.cls.expand(B, 1, -1).to(h.dtype), h], dim=1)  # (B, 1 + T, C)
            real = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=h.device), real], dim=1)
        n = h.shape[1]
        table = self.pos.weight if self.pos is not None else self.get_buffer("table")
        pos = table[:n]  # (T', C)
        h = self.drop(h + pos)
        keys = real[:, None, None, :]  # (B, 1, 1, T'): padded keys are never attended
        for block in self.blocks:
            h = block(h, keys)
        h = self.ln_f(h)  # (B, T', C)
        if self.cls is not None:
            pooled = h[:, 0]  # (B, C)
        else:
            weights = real[..., None].to(h.dtype)  # (B, T, 1)
            pooled = (h * weights).sum(dim=1) / weights.sum(dim=1)
        return self.head(pooled)  # (B, K)
