"""Counting a model: parameters, FLOPs of a training step, activation memory.

Parameters are counted on the built module (on the ``meta`` device for a large one: shapes, no
storage), never by formula alone. FLOPs of a step come from PyTorch's own
``torch.utils.flop_counter.FlopCounterMode`` over a real forward and backward pass of one batch;
a GPT uses the PaLM paper's closed form (Chowdhery et al. 2022, Appendix B: 6·N + 12·L·H·Q·T
per token, what nanoGPT's MFU estimate uses), which a test checks against the counter.
Activation memory is the tensors autograd saves for the backward pass: Korthikanti et al. 2022
("Reducing Activation Recomputation in Large Transformer Models") per layer for a GPT, measured
with ``torch.autograd.graph.saved_tensors_hooks`` on a batch for every other architecture.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from tensorsmith.models.gpt import GPT

__all__ = [
    "Counts",
    "Parameters",
    "activation_bytes",
    "as_gpt",
    "count_flops",
    "gpt_activation_bytes",
    "measure_flops",
    "parameters",
]

Batch = tuple[torch.Tensor, ...]
LossOf = Callable[[nn.Module, Batch], torch.Tensor]


@dataclass
class Parameters:
    total: int
    trainable: int
    embedding: int  # nn.Embedding weights (a GPT's token embedding is also its output layer)

    @property
    def non_embedding(self) -> int:
        return self.total - self.embedding


def parameters(module: nn.Module) -> Parameters:
    """Distinct parameters (a tied weight counts once), trainable ones, embedding ones."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)}
    total = trainable = embedding = 0
    for p in module.parameters():  # yields a tied tensor once
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
        embedding += p.numel() if id(p) in embeddings else 0
    return Parameters(total, trainable, embedding)


@dataclass
class Counts:
    """FLOPs of one training step (forward + backward) and of its forward alone, per batch."""

    step: float
    forward: float
    method: str  # how they were counted


def as_gpt(module: nn.Module) -> GPT | None:
    """The GPT ``module`` is (or wraps, as a peft adapter does), else None."""
    for m in module.modules():
        if isinstance(m, GPT):
            return m
    return None


def count_flops(module: nn.Module, loss_of: LossOf, batch: Batch) -> Counts:
    """A step's FLOPs: the GPT's closed form, else the counter over forward and backward."""
    gpt = as_gpt(module)
    if gpt is not None and all(p.requires_grad for p in module.parameters()):
        tokens = batch[0].numel()
        per_token = float(gpt.flops_per_token())
        how = "6N + 12·L·H·Q·T per token (PaLM)"
        return Counts(per_token * tokens, per_token * tokens / 3, how)
    return measure_flops(module, loss_of, batch)


def measure_flops(module: nn.Module, loss_of: LossOf, batch: Batch) -> Counts:
    """``FlopCounterMode`` over one forward and one backward pass of ``batch``. Attention runs
    through the math kernel here: the counter sees its matrix products (it has no formula for
    the CPU's fused kernel), and counts them whole, as the PaLM form does."""
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss = loss_of(module, batch)
    forward = float(counter.get_total_flops())
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        loss.backward()
    module.zero_grad(set_to_none=True)
    backward = float(counter.get_total_flops())
    return Counts(forward + backward, forward, "FlopCounterMode, forward + backward of one batch")


def gpt_activation_bytes(gpt: GPT, batch: int, precision: str) -> float:
    """Korthikanti et al. (2022), eq. 1 per layer: s·b·h·(34 + 5·a·s/h) bytes in 16-bit.

    Adapted to this GPT: attention runs through ``scaled_dot_product_attention``'s fused
    kernel, which keeps no s×s matrix (the 5·a·s/h term) unless dropout needs one; with no
    dropout there are no masks (2 of the 34 bytes); fp32 doubles the rest. Plus the embedding
    output, the final LayerNorm input and the fp32 logits with their softmax (2·s·b·V·4 bytes).
    """
    c = gpt.config
    s, h, a, b = c.block_size, c.n_embd, c.n_head, batch
    width = 2 if precision == "bf16" else 4
    per_layer = s * b * h * 16 * width  # 16 saved values per position and channel
    if c.dropout > 0:
        per_layer += s * b * h * 2 + 5 * a * s * s * b  # masks; the s×s scores, probabilities
    edges = 2 * s * b * h * width + 2 * s * b * c.vocab_size * 4
    return float(c.n_layer * per_layer + edges)


def activation_bytes(module: nn.Module, loss_of: LossOf, batch: Batch) -> float:
    """Bytes autograd saves for backward over one forward pass of ``batch`` (a real batch on
    the CPU): each storage counted once, the parameters' own storage left out."""
    weights = {p.untyped_storage().data_ptr() for p in module.parameters()}
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> Any:
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        if ptr not in weights:
            storages[ptr] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = loss_of(module, batch)
    loss.backward()
    module.zero_grad(set_to_none=True)
    return float(sum(storages.values()))
