"""A GPT-2 style decoder-only transformer, in one file, top to bottom.

Follows nanoGPT's ``model.py``: token + learned position embeddings, pre-LayerNorm blocks of
causal self-attention (through ``F.scaled_dot_product_attention``) and a 4x GELU MLP, a final
LayerNorm and a language-model head tied to the token embedding.

Shapes: B batch, T time (sequence), C = n_embd channels, nh heads, hs = C // nh head size
(or ``head_size``), A = nh · hs attention width, V vocabulary. ``head_size`` and ``mlp_width``
are set by structured pruning, which removes heads and MLP units but keeps C.

Generation (:meth:`GPT.generate_tokens`) yields token ids one at a time and keeps a key/value
cache per layer, so each new token costs one position instead of the whole context.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["GPT", "GPTConfig", "KVCache"]


@dataclass
class GPTConfig:
    vocab_size: int
    block_size: int  # longest context the position embedding covers
    n_layer: int
    n_head: int
    n_embd: int
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms (GPT-2 has them)
    tie_weights: bool = True  # lm_head.weight is wte.weight
    head_size: int | None = None  # set by structured pruning; None: n_embd // n_head
    mlp_width: int | None = None  # set by structured pruning; None: 4 * n_embd

    @property
    def hs(self) -> int:
        return self.head_size or self.n_embd // self.n_head

    def __post_init__(self) -> None:
        if self.head_size is None and self.n_embd % self.n_head != 0:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}; "
                "the head size is n_embd // n_head, so choose n_embd as a multiple of n_head"
            )


class KVCache:
    """Keys and values of one layer, preallocated to (B, nh, max_len, hs) on first use.

    ``length`` positions are filled; :meth:`append` writes new ones and returns the filled views.
    The buffers take the dtype of the first keys written (so the cache also works under autocast).
    """

    def __init__(self, max_len: int) -> None:
        self.max_len = max_len
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.k is None or self.v is None:
            B, nh, _, hs = k.shape
            self.k = k.new_empty(B, nh, self.max_len, hs)  # (B, nh, max_len, hs)
            self.v = v.new_empty(B, nh, self.max_len, hs)
        t0, t1 = self.length, self.length + k.size(2)
        self.k[:, :, t0:t1] = k
        self.v[:, :, t0:t1] = v
        self.length = t1
        return self.k[:, :, :t1], self.v[:, :, :t1]  # (B, nh, t1, hs)


class CausalSelfAttention(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.head_size = config.hs
        self.inner = config.n_head * config.hs  # A: n_embd unless heads were pruned
        self.dropout = config.dropout
        # query, key and value projections for all heads in one matmul
        self.c_attn = nn.Linear(config.n_embd, 3 * self.inner, bias=config.bias)
        self.c_proj = nn.Linear(self.inner, config.n_embd, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        B, T, _ = x.size()
        hs = self.head_size
        q, k, v = self.c_attn(x).split(self.inner, dim=2)  # 3 x (B, T, A)
        q = q.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, hs).transpose(1, 2)  # (B, nh, T, hs)
        is_causal = True
        if cache is not None:
            if cache.length > 0 and T != 1:
                # is_causal=True aligns the mask top-left, which is wrong with a prefix
                raise ValueError("a non-empty KV cache accepts one new position at a time")
            is_causal = cache.length == 0  # a single new query may attend to every cached key
            k, v = cache.append(k, v)  # (B, nh, T_past + T, hs)
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, self.inner)  # re-assemble heads: (B, T, A)
        return self.resid_dropout(self.c_proj(y))

    def step(self, x: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """One new position of B independent sequences: x (B, 1, C), ``caches[b]`` the cache of
        sequence b (lengths may differ). Projections run batched; attention per sequence."""
        B = x.size(0)
        hs = self.head_size
        qkv = self.c_attn(x).view(B, 1, 3, self.n_head, hs)  # (B, 1, 3, nh, hs)
        q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # 3 x (B, nh, 1, hs)
        ys = []
        for b, cache in enumerate(caches):
            kb, vb = cache.append(k[b : b + 1], v[b : b + 1])  # (1, nh, t, hs)
            ys.append(F.scaled_dot_product_attention(q[b : b + 1], kb, vb))  # (1, nh, 1, hs)
        y = torch.cat(ys).transpose(1, 2).reshape(B, 1, self.inner)  # (B, 1, A)
        return self.c_proj(y)


class MLP(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        hidden = config.mlp_width or 4 * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), cache)  # pre-LayerNorm residual blocks
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList([Block(config) for _ in range(config.n_layer)])
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            # one tensor serves as input embedding and output projection (Press & Wolf, 2017)
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2 scales the residual projections by 1/sqrt(2 * n_layer): each block adds two
        # residual branches, so the residual stream's variance stays O(1) with depth
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @classmethod
    def from_spec(cls, spec: Any, dims: dict[str, Any]) -> GPT:
        """From the recipe's ``model`` section and the tokenizer's ``vocab_size``."""
        return cls(
            GPTConfig(
                vocab_size=dims["vocab_size"],
                block_size=spec.block_size,
                n_layer=spec.n_layer,
                n_head=spec.n_head,
                n_embd=spec.n_embd,
                dropout=spec.dropout,
                bias=spec.bias,
                tie_weights=spec.tie_weights,
                head_size=spec.head_size,
                mlp_width=spec.mlp_width,
            )
        )

    def fsdp_blocks(self) -> list[nn.Module]:
        """What FSDP shards one by one: the transformer blocks (the rest with the root)."""
        return list(self.h)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self,
        idx: torch.Tensor,
        caches: list[KVCache] | None = None,
    ) -> torch.Tensor:
        """idx (B, T) token ids -> logits (B, T, V). ``caches``: one per layer, for generation."""
        T = idx.size(1)
        t0 = caches[0].length if caches else 0
        if t0 + T > self.config.block_size:
            raise ValueError(
                f"sequence of {t0 + T} positions is longer than block_size="
                f"{self.config.block_size}; crop the input to the last block_size tokens"
            )
        pos = torch.arange(t0, t0 + T, dtype=torch.long, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, caches[i] if caches else None)  # (B, T, C)
        return self.lm_head(self.ln_f(x))  # (B, T, V)

    def num_parameters(self, non_embedding: bool = False) -> int:
        """Count of distinct parameters (a tied weight counts once).

        ``non_embedding=True`` leaves out the position embedding (as nanoGPT does); the token
        embedding stays in because, tied to lm_head, it does matmul work.
        """
        n = sum(p.numel() for p in self.parameters())  # parameters() yields a tied tensor once
        if non_embedding:
            n -= self.wpe.weight.numel()
        return n

    def flops_per_token(self) -> int:
        """Training FLOPs per token: forward + backward = 6N + 12 * L * H * Q * T.

        See the PaLM paper (Chowdhery et al., 2022), Appendix B: N non-embedding parameters, L
        layers, H heads, Q head size, T sequence length. The attention term counts the full
        (non-causal) QK^T and AV matmuls, as the paper does.
        """
        cfg = self.config
        N = self.num_parameters(non_embedding=True)
        L, H, Q, T = cfg.n_layer, cfg.n_head, cfg.hs, cfg.block_size
        return 6 * N + 12 * L * H * Q * T

    def optim_groups(self, weight_decay: float) -> list[dict[str, object]]:
        """AdamW parameter groups: decay on every tensor of 2 or more dims, none on the rest.

        2-D tensors are the Linear weights and the embeddings (the token embedding is also the
        tied output projection, so nanoGPT decays it too); biases and LayerNorm gains and shifts
        are 1-D and are not decayed.
        """
        params = [p for p in self.parameters() if p.requires_grad]
        decay = [p for p in params if p.dim() >= 2]
        no_decay = [p for p in params if p.dim() < 2]
        return [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]

    @torch.no_grad()
    def decode_step(self, idx: torch.Tensor, caches: list[list[KVCache]]) -> torch.Tensor:
        """Continuous batching: one new token for each of B independent sequences.

        idx (B,) holds each sequence's last token; ``caches[b]`` is sequence b's list of layer
        caches, filled by a prefill (``self(prompt, caches[b])``) and shorter than block_size.
        Returns logits (B, V) for the next token of each. Sequences of different lengths, started
        at different times, share every matmul; each keeps its own keys and values.
        """
        pos = torch.tensor([c[0].length for c in caches], device=idx.device)  # (B,)
        if int(pos.max()) >= self.config.block_size:
            raise ValueError("a cache is full: step that sequence with a full recompute")
        x = (self.wte(idx) + self.wpe(pos)).unsqueeze(1)  # (B, 1, C)
        for i, block in enumerate(self.h):
            assert isinstance(block, Block)
            x = x + block.attn.step(block.ln_1(x), [c[i] for c in caches])
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(self.ln_f(x))[:, 0]  # (B, V)

    def new_kv_caches(self) -> list[KVCache]:
        """Empty caches of block_size positions, one per layer."""
        return [KVCache(self.config.block_size) for _ in range(self.config.n_layer)]

    @torch.no_grad()
    def generate_tokens(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        use_cache: bool = True,
        greedy: bool = False,
    ) -> Iterator[int]:
        """Yield ``max_new_tokens`` new token ids one at a time, continuing ``idx`` (1, T).

        ``temperature=0`` or ``greedy=True`` takes the argmax; otherwise logits are divided by
        ``temperature``, optionally filtered by ``top_k`` and nucleus ``top_p``, and sampled
        with ``generator``. A context longer than block_size is cropped to its last block_size
        tokens (the caller warns).

        With ``use_cache`` each step runs only the new position against cached keys/values.
        When the cache is full it is NOT slid: learned absolute position embeddings mean a
        token's keys depend on its position, so after shifting the window every cached entry
        is stale. Instead each step then recomputes the last block_size tokens (as
        ``use_cache=False`` does always), so both paths give the same tokens.
        """
        if idx.dim() != 2 or idx.size(0) != 1:
            raise ValueError(f"idx must have shape (1, T), got {tuple(idx.shape)}")
        if idx.size(1) == 0:
            raise ValueError("idx is empty; give at least one token of context")
        was_training = self.training
        self.eval()
        try:
            block = self.config.block_size
            context = idx[:, -block:]  # (1, T <= block_size)
            caches: list[KVCache] | None = None
            for _ in range(max_new_tokens):
                if use_cache and caches is not None and caches[0].length < block:
                    logits = self(context[:, -1:], caches)  # one new position: (1, 1, V)
                elif use_cache and context.size(1) <= block:
                    caches = self.new_kv_caches()  # prefill: (1, T, V)
                    logits = self(context, caches)
                else:
                    logits = self(context[:, -block:])  # full recompute: (1, T, V)
                next_id = self._sample(
                    logits[0, -1].float(), temperature, top_k, top_p, generator, greedy
                )
                yield next_id
                nxt = torch.tensor([[next_id]], dtype=context.dtype, device=context.device)
                context = torch.cat([context, nxt], dim=1)[:, -(block + 1) :]
        finally:
            self.train(was_training)

    @staticmethod
    def sample(
        logits: torch.Tensor,
        temperature: float,
        top_k: int | None = None,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
    ) -> int:
        """One id from logits (V,): argmax at temperature 0, else sampled (see generate_tokens)."""
        return GPT._sample(logits, temperature, top_k, top_p, generator, greedy=False)

    @staticmethod
    def _sample(
        logits: torch.Tensor,
        temperature: float,
        top_k: int | None,
        top_p: float | None,
        generator: torch.Generator | None,
        greedy: bool,
    ) -> int:
        """Pick one id from logits (V,)."""
        if greedy or temperature == 0.0:
            return int(torch.argmax(logits))
        logits = logits / temperature
        if top_k is not None:
            kth = torch.topk(logits, min(top_k, logits.size(-1))).values[-1]
            logits = logits.masked_fill(logits < kth, float("-inf"))
        if top_p is not None:
            # nucleus: keep the smallest set of most likely tokens whose mass reaches top_p
            sorted_logits, order = torch.sort(logits, descending=True)
            cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
            drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p  # mass before >= p
            drop[0] = False  # always keep the most likely token
            logits = logits.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), -math.inf)
        probs = torch.softmax(logits, dim=-1)  # (V,)
        return int(torch.multinomial(probs, 1, generator=generator))
