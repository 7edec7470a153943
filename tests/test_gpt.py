"""Contract and oracle tests of tensorsmith.models.gpt on tiny configs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_model, save_model

from tensorsmith.models.gpt import GPT, GPTConfig

V, BLOCK = 50, 16


def make_model(seed: int = 0, **overrides: int | float | bool) -> GPT:
    torch.manual_seed(seed)
    kwargs: dict[str, int | float | bool] = dict(
        vocab_size=V, block_size=BLOCK, n_layer=2, n_head=4, n_embd=32
    )
    kwargs.update(overrides)
    return GPT(GPTConfig(**kwargs)).eval()  # type: ignore[arg-type]


def tokens(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


def generate(model: GPT, idx: torch.Tensor, n: int, **kwargs: object) -> list[int]:
    return list(model.generate_tokens(idx, n, **kwargs))  # type: ignore[arg-type]


def test_output_shape() -> None:
    model = make_model()
    assert model(tokens(3, 10)).shape == (3, 10, V)


def test_config_rejects_indivisible_heads() -> None:
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(vocab_size=V, block_size=BLOCK, n_layer=1, n_head=3, n_embd=32)


def test_too_long_input_is_rejected() -> None:
    with pytest.raises(ValueError, match="block_size"):
        make_model()(tokens(1, BLOCK + 1))


@pytest.mark.parametrize("bias", [True, False])
def test_gradients_flow_to_every_parameter(bias: bool) -> None:
    model = make_model(bias=bias).train()
    idx = tokens(2, BLOCK)
    logits = model(idx)
    loss = torch.nn.functional.cross_entropy(logits.view(-1, V), idx.roll(-1, 1).view(-1))
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name


def test_causal() -> None:
    model = make_model()
    idx = tokens(1, 12)
    changed = idx.clone()
    changed[0, 8:] = (changed[0, 8:] + 1) % V
    a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :8], b[:, :8])
    assert not torch.allclose(a[:, 8:], b[:, 8:])


def test_weight_tying() -> None:
    model = make_model()
    assert model.lm_head.weight is model.wte.weight
    untied = make_model(tie_weights=False)
    assert untied.lm_head.weight is not untied.wte.weight
    assert untied.num_parameters() == model.num_parameters() + V * 32


def test_num_parameters_and_flops() -> None:
    model = make_model()
    C, L = 32, 2
    per_block = 12 * C * C + 13 * C  # attn (4C^2 + 4C) + mlp (8C^2 + 5C) + 2 LayerNorms (4C)
    expected = V * C + BLOCK * C + L * per_block + 2 * C
    assert model.num_parameters() == expected
    n = expected - BLOCK * C
    assert model.flops_per_token() == 6 * n + 12 * L * 4 * 8 * BLOCK


def test_init_scales_residual_projections() -> None:
    model = make_model(n_layer=8, n_embd=256, n_head=4, block_size=8)
    std = model.h[0].attn.c_proj.weight.std().item()
    assert std == pytest.approx(0.02 / math.sqrt(16), rel=0.05)
    assert model.h[0].mlp.c_fc.weight.std().item() == pytest.approx(0.02, rel=0.05)


def test_optim_groups_decay_only_matrices() -> None:
    model = make_model()
    decay, no_decay = model.optim_groups(0.1)
    assert all(p.dim() == 2 for p in decay["params"])  # type: ignore[attr-defined]
    assert all(p.dim() == 1 for p in no_decay["params"])  # type: ignore[attr-defined]
    n = sum(p.numel() for g in (decay, no_decay) for p in g["params"])  # type: ignore[attr-defined]
    assert n == model.num_parameters()
    torch.optim.AdamW(model.optim_groups(0.1), lr=1e-3)  # accepted as-is


def reference_attention(x: torch.Tensor, attn: torch.nn.Module, n_head: int) -> torch.Tensor:
    """softmax(Q K^T / sqrt(d) + causal mask) V, written out by hand."""
    B, T, C = x.shape
    hs = C // n_head
    q, k, v = attn.c_attn(x).split(C, dim=2)
    q, k, v = (t.view(B, T, n_head, hs).transpose(1, 2) for t in (q, k, v))
    scores = q @ k.transpose(-2, -1) / math.sqrt(hs)  # (B, nh, T, T)
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    weights = torch.softmax(scores.masked_fill(mask, float("-inf")), dim=-1)
    y = (weights @ v).transpose(1, 2).reshape(B, T, C)
    return attn.c_proj(y)


def test_attention_matches_hand_written_reference() -> None:
    model = make_model()
    attn = model.h[0].attn
    x = torch.randn(2, 11, 32)
    torch.testing.assert_close(attn(x), reference_attention(x, attn, 4), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("prompt_len", [1, 5, BLOCK])
def test_kv_cache_gives_same_greedy_tokens(prompt_len: int) -> None:
    model = make_model()
    idx = tokens(1, prompt_len)
    n = 2 * BLOCK + 3  # runs past block_size, through the cache-full path
    cached = generate(model, idx, n, temperature=0.0)
    full = generate(model, idx, n, temperature=0.0, use_cache=False)
    assert cached == full
    assert len(cached) == n and all(0 <= t < V for t in cached)


def test_kv_cache_step_logits_match_full_forward() -> None:
    model = make_model()
    idx = tokens(1, 9)
    caches = model.new_kv_caches()
    with torch.no_grad():
        steps = [model(idx[:, :4], caches)[:, -1]]
        steps += [model(idx[:, t : t + 1], caches)[:, -1] for t in range(4, 9)]
        full = model(idx)[:, 3:]
    torch.testing.assert_close(torch.stack(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_long_prompt_is_left_truncated() -> None:
    model = make_model()
    idx = tokens(1, BLOCK + 7)
    got = generate(model, idx, 4, temperature=0.0)
    assert got == generate(model, idx[:, -BLOCK:], 4, temperature=0.0)


@pytest.mark.parametrize("use_cache", [True, False])
def test_same_seed_same_samples(use_cache: bool) -> None:
    model = make_model()
    idx = tokens(1, 3)

    def sample(seed: int) -> list[int]:
        g = torch.Generator().manual_seed(seed)
        return generate(model, idx, 20, top_k=10, top_p=0.9, generator=g, use_cache=use_cache)

    assert sample(7) == sample(7)
    assert sample(7) != sample(8)


def test_top_k_one_equals_greedy() -> None:
    model = make_model()
    idx = tokens(1, 3)
    g = torch.Generator().manual_seed(0)
    greedy = generate(model, idx, 20, greedy=True)
    assert generate(model, idx, 20, temperature=1.5, top_k=1, generator=g) == greedy


def test_tiny_top_p_equals_greedy() -> None:
    model = make_model()
    idx = tokens(1, 3)
    g = torch.Generator().manual_seed(0)
    assert generate(model, idx, 10, top_p=1e-6, generator=g) == generate(
        model, idx, 10, greedy=True
    )


def test_generation_restores_training_mode() -> None:
    model = make_model().train()
    generate(model, tokens(1, 2), 2)
    assert model.training


@pytest.mark.parametrize("tie", [True, False])
def test_safetensors_round_trip(tmp_path: Path, tie: bool) -> None:
    model = make_model(tie_weights=tie)
    path = tmp_path / "gpt.safetensors"
    save_model(model, str(path))
    loaded = make_model(seed=123, tie_weights=tie)
    idx = tokens(2, 8)
    assert not torch.equal(loaded(idx), model(idx))
    load_model(loaded, str(path))
    torch.testing.assert_close(loaded(idx), model(idx), atol=0, rtol=0)
    if tie:
        assert loaded.lm_head.weight is loaded.wte.weight
