"""A recurrent encoder (RNN, LSTM or GRU) for token ids or numeric sequences, in one file.

Inputs are token ids (B, T) through an embedding, or values (B, T, F) fed to the cell directly,
with an optional ``mask`` (B, T) that is True on real steps: padded batches run as packed
sequences (``pack_padded_sequence``), so padding never reaches the cell. The sequence is pooled
into one vector — the last hidden state of the top layer (both directions when bidirectional)
or the mean of the outputs over real steps — and an MLP head maps it to the outputs.

Shapes: B batch, T steps, F features, E embedding, H hidden size, D directions, K outputs.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from tensorsmith.models.heads import mlp_head

__all__ = ["RNN"]

CELLS: dict[str, Any] = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class RNN(nn.Module):
    def __init__(
        self,
        n_outputs: int,
        cell: str = "lstm",
        hidden_size: int = 64,
        layers: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
        pooling: str = "last",
        head: list[int] | None = None,
        vocab_size: int | None = None,
        n_features: int | None = None,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        if vocab_size is None and n_features is None:
            raise ValueError("an RNN reads tokens (dims vocab_size) or values (dims n_features)")
        self.embed = (
            None if vocab_size is None else nn.Embedding(vocab_size, embedding_dim or hidden_size)
        )
        width = n_features if vocab_size is None else (embedding_dim or hidden_size)
        assert width is not None
        self.rnn = CELLS[cell](
            width,
            hidden_size,
            layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.directions = 2 if bidirectional else 1
        self.pooling = pooling
        self.drop = nn.Dropout(dropout)
        self.head = mlp_head(hidden_size * self.directions, head or [], n_outputs, dropout, nn.ReLU)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> RNN:
        return cls(
            dims["n_outputs"],
            spec.cell,
            spec.hidden_size,
            spec.layers,
            spec.bidirectional,
            spec.dropout,
            spec.pooling,
            list(spec.head),
            dims.get("vocab_size"),
            dims.get("n_features"),
            spec.embedding_dim,
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.drop(self.embed(x)) if self.embed is not None else x  # (B, T, E or F)
        B, T = h.shape[:2]
        if mask is None or bool(mask.all()):  # no padding: packing would change nothing
            out, state = self.rnn(h)  # (B, T, D*H); about 2x faster for a GRU on CPU
        else:
            lengths = mask.sum(dim=1).clamp(min=1).cpu()  # (B,); an empty sequence reads a pad
            packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, state = self.rnn(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, D*H)
        if self.pooling == "last":
            h_n = state[0] if isinstance(state, tuple) else state  # (layers*D, B, H)
            pooled = h_n[-self.directions :].transpose(0, 1).reshape(B, -1)  # (B, D*H)
        else:
            real = (torch.ones(B, T, device=h.device) if mask is None else mask.float())[..., None]
            real[:, 0] = 1.0  # as the packed lengths: at least one step
            pooled = (out * real).sum(dim=1) / real.sum(dim=1)  # (B, D*H)
        return self.head(pooled)  # (B, K)
