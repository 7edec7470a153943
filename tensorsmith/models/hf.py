"""Hugging Face architectures, built by ``transformers`` from a checkpoint's ``config.json``.

The architecture code is transformers' own; this file adapts it to the rest of tensorsmith:
``HFCausalLM`` (GPT-2, Llama … through ``AutoModelForCausalLM``) takes token ids and returns
logits and generates with the model's key/value cache; ``HFEncoder`` (BERT and its family
through ``AutoModel``) pools the encoder's hidden states (mean over real tokens, or the first
token) into a task head. Both are built from the config alone (``from_config``): no network, no
``trust_remote_code``; the weights are loaded by the fine-tune from the checkpoint's
safetensors, or from a stored version's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from tensorsmith.models.gpt import GPT

__all__ = ["HFCausalLM", "HFEncoder", "hf_config"]


def hf_config(config: dict[str, Any]) -> Any:
    """A ``transformers`` config object from the dict of a checkpoint's config.json."""
    from transformers import AutoConfig

    values = {k: v for k, v in config.items() if k not in ("auto_map", "architectures")}
    return AutoConfig.for_model(**values)


def _layers(model: nn.Module) -> list[nn.Module]:
    """A ``transformers`` model's layers: the modules its ``_no_split_modules`` names."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


class HFCausalLM(nn.Module):
    """A decoder-only language model: idx (B, T) → logits (B, T, V)."""

    def __init__(self, config: dict[str, Any], block_size: int) -> None:
        super().__init__()
        from transformers import AutoModelForCausalLM

        self.model = AutoModelForCausalLM.from_config(hf_config(config))
        self.block_size = block_size

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> HFCausalLM:
        return cls(dict(spec.config), spec.block_size)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=idx).logits

    def fsdp_blocks(self) -> list[nn.Module]:
        return _layers(self.model)

    @torch.no_grad()
    def generate_tokens(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[int]:
        """New token ids one at a time, with the model's own key/value cache; a context past
        ``block_size`` is recomputed from its last ``block_size`` tokens."""
        self.eval()
        context = idx[:, -self.block_size :]
        past = None
        last = context
        for _ in range(max_new_tokens):
            out = self.model(input_ids=last, past_key_values=past, use_cache=True)
            token = GPT._sample(
                out.logits[0, -1].float(), temperature, top_k, top_p, generator, False
            )
            yield token
            context = torch.cat([context, torch.tensor([[token]])], dim=1)
            if context.size(1) > self.block_size:  # past the window: start again from its tail
                context, past, last = (
                    context[:, -self.block_size :],
                    None,
                    context[:, -self.block_size :],
                )
            else:
                past, last = out.past_key_values, context[:, -1:]


class HFEncoder(nn.Module):
    """An encoder with a task head: (input_ids, attention_mask) → (B, n_outputs)."""

    def __init__(
        self, config: dict[str, Any], n_outputs: int, pooling: str = "mean", dropout: float = 0.1
    ) -> None:
        super().__init__()
        from transformers import AutoModel

        cfg = hf_config(config)
        try:  # BERT-like encoders build a pooler the mean pooling never uses
            self.encoder = AutoModel.from_config(cfg, add_pooling_layer=False)
        except TypeError:
            self.encoder = AutoModel.from_config(cfg)
        self.pooling = pooling
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(self.encoder.config.hidden_size), n_outputs)

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> HFEncoder:
        return cls(dict(spec.config), dims["n_outputs"], spec.pooling, spec.dropout)

    def fsdp_blocks(self) -> list[nn.Module]:
        return _layers(self.encoder)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]  # (B, H)
        else:  # the mean over real tokens, as sentence-transformers pools MiniLM
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return self.head(self.dropout(pooled))  # (B, n_outputs)
