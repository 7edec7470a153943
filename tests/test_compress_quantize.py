"""Quantization: dynamic int8 (Linear, LSTM, GRU) and weight-only int8 / int4 (the GPT).

Tiny models trained in seconds. Each quantized child is stored as the lead's ``compress`` stores
it (the parent's folder, the format's weights file, ``compression`` in ``config.json``) and
loaded back through ``Predictor.load``. References are independent: an error bound computed from
the quantization scales, and a hand-written dequantize-then-``F.linear``.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny
import torch
import torch.nn.functional as F
import yaml
from conftest import EXAMPLES
from rich.console import Console
from safetensors.torch import save_model
from torch import nn

import tensorsmith
from tensorsmith.api.compression import write_child
from tensorsmith.compression.child import Child
from tensorsmith.compression.quantize import quantize
from tensorsmith.errors import RecipeError, StoreError
from tensorsmith.evaluation.evaluate import evaluate
from tensorsmith.models.formats import FORMATS
from tensorsmith.models.quantized import Int8Embedding, dynamic_int8, parameter_count
from tensorsmith.models.weight_only import INT4_GROUP, Int4WeightLinear, Int8WeightLinear
from tensorsmith.tasks.predictor import Predictor

POEMS = EXAMPLES.parent / "tests" / "data" / "shakespeare"


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train(recipe: dict[str, Any] | Path, store: Path) -> Predictor:
    out = Console(file=io.StringIO(), width=200)
    model = tensorsmith.train(recipe, store=store, console=out)
    return Predictor.load(Path(model.path))


def _text_recipe(source: Path, model: dict[str, Any]) -> dict[str, Any]:
    return tiny.text_recipe(source, model, max_length=48)


@pytest.fixture(scope="module")
def texts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Predictor]:
    """A tiny transformer and a tiny bidirectional LSTM (and GRU) text classifier."""
    folder = tmp_path_factory.mktemp("texts")
    source = tiny.texts_csv(folder / "moods.csv", n=80)
    models = {
        "transformer": {"arch": "transformer", "n_layer": 1, "n_head": 2, "n_embd": 16},
        "lstm": {"arch": "rnn", "cell": "lstm", "hidden_size": 8, "bidirectional": True},
        "gru": {"arch": "rnn", "cell": "gru", "hidden_size": 8},
    }
    return {k: _train(_text_recipe(source, m), folder / k) for k, m in models.items()}


@pytest.fixture(scope="module")
def gpt(tmp_path_factory: pytest.TempPathFactory) -> Predictor:
    """A tiny char-level GPT (tied head) on two Shakespeare poems."""
    folder = tmp_path_factory.mktemp("gpt")
    shutil.copytree(POEMS, folder / "corpus")
    recipe = {
        "name": "poems",
        "task": "language-modeling",
        "data": {"source": "corpus/*.txt", "tokenizer": {"kind": "char"}, "split": {"valid": 0.1}},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16},
        "train": {"max_steps": 30, "batch_size": 8, "eval_every": 30, "eval_batches": 2},
        "evaluate": {"samples": 0},
    }
    path = folder / "poems.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return _train(path, folder / "store")


def store_child(parent: Predictor, child: Child, dest: Path) -> Path:
    """The child stored as ``compress`` stores it (without the measurement): its folder."""
    return write_child(dest, parent, child)


def _test_texts(p: Predictor) -> pd.DataFrame:
    return p.task.read_splits()["test"]


def _scores(p: Predictor, module: nn.Module, records: pd.DataFrame) -> np.ndarray:
    return p.task.predict_proba(module, records)


# ----------------------------------------------------------------------------- dynamic int8


@pytest.mark.parametrize("kind", ["transformer", "lstm", "gru"])
def test_int8_saved_and_loaded_predicts_bit_for_bit(
    kind: str, texts: dict[str, Predictor], tmp_path: Path
) -> None:
    parent = texts[kind]
    child = quantize(parent, "int8")
    assert child.format == "int8-dynamic" and child.method["quantize"] == "int8"
    loaded = Predictor.load(store_child(parent, child, tmp_path / "v2"))
    records = _test_texts(parent)
    assert np.array_equal(_scores(parent, child.module, records), loaded.predict_proba(records))
    assert loaded.predict(records).equals(parent.task.predict(child.module, records))
    names = {m._get_name() for m in loaded.module.modules()}
    assert names & {"DynamicQuantizedLinear", "DynamicQuantizedLSTM", "DynamicQuantizedGRU"}
    assert parameter_count(loaded.module) == sum(p.numel() for p in parent.module.parameters())


def test_int8_predictions_are_close_to_fp32(texts: dict[str, Predictor]) -> None:
    parent = texts["transformer"]
    child = quantize(parent, "int8")
    records = parent.task.read_splits()["train"]
    fp32, int8 = _scores(parent, parent.module, records), _scores(parent, child.module, records)
    assert np.abs(fp32 - int8).max() < 0.1  # probabilities
    agree = (fp32.argmax(1) == int8.argmax(1)).mean()
    assert agree >= 0.9, f"int8 and fp32 classes agree on {agree:.0%} of rows"


def test_one_int8_linear_stays_within_the_bound_its_scales_give() -> None:
    """|Δy_o| ≤ Σ_k |x_k|·s_o/2 + |w_ok|·s_x/2 + s_o·s_x/4: weights rounded to s_o (per output
    channel), inputs to s_x (per batch, 7-bit unsigned over [min, max] ∪ {0})."""
    torch.manual_seed(0)
    linear = nn.Linear(48, 24)
    x = torch.randn(16, 48) * 3
    q = dynamic_int8(nn.Sequential(linear))[0]
    s_o = q.weight().q_per_channel_scales().float()  # (out,)
    lo, hi = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    s_x = (hi - lo) / 127  # reduce_range: 7 bits on x86
    bound = (
        x.abs() @ (s_o[:, None] / 2).expand(24, 48).t()  # (N, out)
        + (linear.weight.abs().sum(1) * s_x / 2)[None]
        + 48 * s_o[None] * s_x / 4
    )
    with torch.no_grad():
        err = (q(x) - linear(x)).abs()
    assert (err <= bound * 1.01 + 1e-5).all()
    assert err.max() > 0  # it really is quantized


@pytest.mark.parametrize("embedding", [False, True])
def test_int8_weights_file_is_at_least_3x_smaller(embedding: bool, tmp_path: Path) -> None:
    layers = [nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 256), nn.Linear(256, 10)]
    model = nn.Sequential(*([nn.Embedding(2000, 256)] if embedding else []), *layers)
    save_model(model, str(tmp_path / "fp32.safetensors"))
    name = FORMATS.get("int8-dynamic").save(dynamic_int8(model), tmp_path)
    ratio = (tmp_path / "fp32.safetensors").stat().st_size / (tmp_path / name).stat().st_size
    assert ratio >= 3.0, ratio


def test_int8_embedding_looks_up_dequantized_rows() -> None:
    torch.manual_seed(0)
    embedding = nn.Embedding(50, 12)
    q = Int8Embedding.from_embedding(embedding)
    table = q.weight_int8.float() * q.weight_scale[:, None]  # (V, C) dequantized by hand
    assert ((table - embedding.weight).abs() <= q.weight_scale[:, None] / 2 + 1e-7).all()
    idx = torch.randint(0, 50, (3, 7))
    assert torch.equal(q(idx), table[idx]) and torch.equal(q.weight, table)


# ----------------------------------------------------------------------------- weight-only


# The CPU kernels compute with bf16 activations (fp32 inputs are rounded to bf16) and fp32
# accumulation, and round the output to bf16: up to 2^-8 of the output, plus the rounding of
# the input (2^-8 of each |x_k|·|w_k|); the references below are fp32.
BF16 = 2.0**-8


def _close_to_reference(ours: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: Any) -> None:
    ref = F.linear(x.float(), w, b)
    bound = BF16 * (ref.abs() + x.float().abs() @ w.abs().t()) + 1e-5
    if x.dtype == torch.bfloat16:  # the output, then the bias added to it, in bf16
        bound = bound + 2 * BF16 * ref.abs()
    assert ours.dtype == x.dtype and ours.shape == ref.shape
    assert ((ours.float() - ref).abs() <= bound).all(), (ours.float() - ref).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_int8_weight_linear_equals_dequantize_then_linear(dtype: torch.dtype) -> None:
    torch.manual_seed(0)
    linear = nn.Linear(64, 40)
    layer = Int8WeightLinear.from_linear(linear)
    scale = layer.weight_scale[:, None]  # (out, 1)
    w = layer.weight_int8.float() * scale  # dequantized by hand: (out, in)
    assert ((w - linear.weight).abs() <= scale * (0.5 + 127 * BF16)).all()
    x = torch.randn(3, 5, 64).to(dtype)
    with torch.no_grad():
        _close_to_reference(layer(x), x, w, linear.bias.detach())


def test_int4_weight_linear_equals_dequantize_then_linear() -> None:
    torch.manual_seed(0)
    linear = nn.Linear(96, 32)
    layer = Int4WeightLinear.from_linear(linear)
    nibbles = layer.weight_int4
    q = torch.stack([nibbles & 15, nibbles >> 4], -1).view(32, 96).float()  # (out, in) in 0..15
    scale, zero = layer.scales_and_zeros.unbind(-1)  # (G, out) each
    s, z = (t.t().repeat_interleave(INT4_GROUP, dim=1) for t in (scale, zero))  # (out, in)
    w = (q - 8) * s + z
    assert ((w - linear.weight).abs() <= s / 2 + BF16 * (z.abs() + 15 * s)).all()
    x = torch.randn(7, 96)
    with torch.no_grad():
        _close_to_reference(layer(x), x, w, linear.bias.detach())


@pytest.mark.parametrize("scheme", ["int8-weight", "int4-weight"])
def test_weight_only_gpt_generates_and_keeps_its_loss(
    scheme: str, gpt: Predictor, tmp_path: Path
) -> None:
    child = quantize(gpt, scheme)
    assert child.format == scheme
    layers = {type(m).__name__ for m in child.module.modules()}
    assert ("Int8WeightLinear" if scheme == "int8-weight" else "Int4WeightLinear") in layers
    assert child.module.lm_head.weight is child.module.wte.weight  # the tied head stays tied
    assert parameter_count(child.module) == sum(p.numel() for p in gpt.module.parameters())
    loaded = Predictor.load(store_child(gpt, child, tmp_path / "v2"))
    saved, back = child.module.state_dict(), loaded.module.state_dict()
    assert saved.keys() == back.keys()
    assert all(torch.equal(saved[k], back[k]) for k in saved)
    options = {"max_new_tokens": 20, "temperature": 0.0}
    text = "".join(loaded.stream("Shall I", **options))  # the KV cache path
    assert len(text) > 0 and text == "".join(gpt.task.stream(child.module, "Shall I", **options))
    split = gpt.task.eval_split(gpt.task.read_splits()["valid"])
    fp32 = float(evaluate(gpt.task, gpt.module, split, ["loss"], limit=4)["loss"])  # type: ignore[arg-type]
    ours = float(evaluate(gpt.task, loaded.module, split, ["loss"], limit=4)["loss"])  # type: ignore[arg-type]
    assert abs(ours - fp32) < (0.02 if scheme == "int8-weight" else 0.15), (fp32, ours)


def test_weight_only_gpt_runs_in_bf16(gpt: Predictor) -> None:
    module = quantize(gpt, "int8-weight").module.to(torch.bfloat16)
    text = "".join(gpt.task.stream(module, "Shall I", max_new_tokens=8, temperature=0.0))
    assert len(text) > 0


# ----------------------------------------------------------------------------- bad input


def test_quantizing_a_quantized_version_names_its_parent(
    texts: dict[str, Predictor], tmp_path: Path
) -> None:
    parent = texts["transformer"]
    loaded = Predictor.load(store_child(parent, quantize(parent, "int8"), tmp_path / "v2"))
    with pytest.raises(RecipeError, match=rf"already quantized.*{parent.name}"):
        quantize(loaded, "int8")


def test_a_scheme_that_does_not_apply_names_the_ones_that_do(
    texts: dict[str, Predictor], gpt: Predictor
) -> None:
    with pytest.raises(RecipeError, match=r"does not apply to a gpt.*int8-weight, int4-weight"):
        quantize(gpt, "int8")
    with pytest.raises(RecipeError, match=r"does not apply to a rnn.*use: int8$"):
        quantize(texts["lstm"], "int4-weight")
    with pytest.raises(RecipeError, match="unknown quantization scheme 'int3'"):
        quantize(texts["lstm"], "int3")


@pytest.mark.parametrize("scheme", ["int8", "int8-weight"])
def test_a_damaged_weights_file_is_a_store_error(
    scheme: str, texts: dict[str, Predictor], tmp_path: Path
) -> None:
    parent = texts["transformer"]
    folder = store_child(parent, quantize(parent, scheme), tmp_path / "v2")
    weights = folder / json.loads((folder / "config.json").read_text())["weights"]
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(StoreError, match=rf"damaged: {weights.name} cannot be read"):
        Predictor.load(folder)
    weights.unlink()
    with pytest.raises(StoreError, match=rf"damaged: {weights.name} is missing"):
        Predictor.load(folder)


def test_a_model_without_a_layer_to_quantize_says_so(texts: dict[str, Predictor]) -> None:
    p = texts["transformer"]
    bare = Predictor(p.path, p.recipe, p.task, nn.Sequential(nn.Embedding(4, 4)), p.config)
    with pytest.raises(RecipeError, match="no Linear, LSTM or GRU layer"):
        quantize(bare, "int8")
