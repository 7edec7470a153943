"""The contract every registered architecture keeps, plus independent oracles.

Every name in ``tensorsmith.models.MODELS`` runs through the same checks (scikit-learn's
``check_estimator`` habit): output shape, gradients reach every parameter, safetensors save →
load gives identical outputs, and the same seed gives the same weights and the same training
result. A new architecture without an entry in ``CASES`` fails here until someone gives it one.

Oracles: ``linear`` trained through ``tensorsmith.train`` matches scikit-learn's
``LinearRegression``; the MLP forward equals a hand-written forward in ``torch.nn.functional``;
the learning-rate schedules equal hand-computed values.
"""

from __future__ import annotations

import io
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from rich.console import Console
from safetensors.torch import load_model, save_model
from sklearn.linear_model import LinearRegression
from torch import nn

import tensorsmith
from tensorsmith import RecipeError
from tensorsmith.models import MODELS, build_model
from tensorsmith.models.mlp import MLP
from tensorsmith.recipe import (
    CNNSpec,
    GPTSpec,
    HFCausalSpec,
    HFEncoderSpec,
    LinearSpec,
    MLPSpec,
    ModelSpec,
    OptimizerSpec,
    RNNSpec,
    ScheduleSpec,
    TransformerSpec,
)
from tensorsmith.training.optim import OPTIMIZERS, build_optimizer, build_schedule, lr_factor

B = 6  # batch size of the example inputs


@dataclass
class Case:
    spec: ModelSpec
    dims: dict[str, Any]
    inputs: Callable[[torch.Generator], tuple[torch.Tensor, ...]]
    shape: tuple[int, ...]


def _tabular_inputs(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    x = torch.randn(B, 5, generator=g)
    cat = torch.stack(
        [torch.randint(0, 4, (B,), generator=g), torch.randint(0, 3, (B,), generator=g)], dim=1
    )  # (B, 2) category ids
    return x, cat


def _tokens(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randint(0, 50, (B, 16), generator=g),)  # (B, T) token ids


def _images(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    return (torch.randn(B, 3, 9, 7, generator=g),)  # (B, C, H, W): odd sides on purpose


def _padded_tokens(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    lengths = torch.tensor([12, 3, 7, 12, 1, 9])  # (B,): padded batches of different lengths
    ids = torch.randint(1, 50, (B, 12), generator=g)
    mask = torch.arange(12) < lengths[:, None]  # (B, T)
    return ids.masked_fill(~mask, 0), mask


def _padded_values(g: torch.Generator) -> tuple[torch.Tensor, ...]:
    lengths = torch.tensor([10, 4, 10, 2, 7, 5])
    mask = torch.arange(10) < lengths[:, None]
    return torch.randn(B, 10, 3, generator=g) * mask[..., None], mask  # (B, T, F), (B, T)


# tiny configurations, one per architecture (Hugging Face's tests use hidden 32, 2 layers)
TABULAR_DIMS = {"n_inputs": 5, "n_outputs": 3, "cardinalities": [4, 3]}
CASES: dict[str, Case] = {
    "linear": Case(LinearSpec(), TABULAR_DIMS, _tabular_inputs, (B, 3)),
    "mlp": Case(
        MLPSpec(hidden=[8, 4], activation="tanh", dropout=0.2, batch_norm=True),
        TABULAR_DIMS,
        _tabular_inputs,
        (B, 3),
    ),
    "gpt": Case(
        GPTSpec(n_layer=2, n_head=4, n_embd=32, block_size=16, dropout=0.1),
        {"vocab_size": 50},
        _tokens,
        (B, 16, 50),
    ),
    # transformers' own classes from a tiny config.json, as a checkpoint folder would give them
    "hf-causal": Case(
        HFCausalSpec(
            config={
                "model_type": "gpt2",
                "n_layer": 2,
                "n_head": 4,
                "n_embd": 32,
                "vocab_size": 50,
                "n_positions": 16,
            },
            block_size=16,
        ),
        {"vocab_size": 50},
        _tokens,
        (B, 16, 50),
    ),
    "hf-encoder": Case(
        HFEncoderSpec(
            config={
                "model_type": "bert",
                "hidden_size": 32,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "intermediate_size": 37,
                "vocab_size": 50,
                "max_position_embeddings": 32,
            },
        ),
        {"n_outputs": 3},
        _tokens,
        (B, 3),
    ),
    "cnn": Case(
        CNNSpec(channels=[4, 8], residual=True, head=[6], dropout=0.1, pool="max"),
        {"channels": 3, "height": 9, "width": 7, "n_outputs": 4},
        _images,
        (B, 4),
    ),
    "rnn": Case(
        RNNSpec(cell="lstm", hidden_size=5, layers=2, bidirectional=True, dropout=0.1, head=[4]),
        {"vocab_size": 50, "n_outputs": 3},
        _padded_tokens,
        (B, 3),
    ),
    "transformer": Case(
        TransformerSpec(n_layer=2, n_head=2, n_embd=8, pooling="cls", positions="learned"),
        {"n_features": 3, "n_outputs": 2, "max_length": 10},
        _padded_values,
        (B, 2),
    ),
}
ARCHS = sorted(MODELS)


def _case(arch: str) -> Case:
    assert arch in CASES, (
        f"architecture '{arch}' is registered in MODELS but has no tiny configuration in "
        "tests/test_contract.py CASES; add one"
    )
    return CASES[arch]


def _build(arch: str, seed: int) -> nn.Module:
    case = _case(arch)
    torch.manual_seed(seed)
    return build_model(case.spec, case.dims)


def _inputs(arch: str, seed: int = 0) -> tuple[torch.Tensor, ...]:
    return _case(arch).inputs(torch.Generator().manual_seed(seed))


def _loss(out: torch.Tensor) -> torch.Tensor:
    target = torch.linspace(-1.0, 1.0, out.numel()).reshape(out.shape)
    return F.mse_loss(out.float(), target)


def _train(arch: str, seed: int, steps: int = 4) -> dict[str, torch.Tensor]:
    model = _build(arch, seed)
    model.train()
    opt = build_optimizer(model.parameters(), OptimizerSpec(name="adam", lr=0.01))
    torch.manual_seed(seed + 1)  # dropout's stream
    for i in range(steps):
        _loss(model(*_inputs(arch, seed=i))).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_every_registered_arch_has_a_case() -> None:
    missing = sorted(set(MODELS) - set(CASES))
    assert not missing, f"registered architectures without a contract case: {missing}"
    assert {"linear", "mlp"} <= set(MODELS)


def test_registries_agree_with_the_recipe_classes() -> None:
    """The recipe's model specs (L0) and the architectures (L1) name the same things."""
    from tensorsmith.recipe import RECIPES

    archs = set()
    for cls in RECIPES.values():
        annotation = cls.model_fields["model"].annotation
        members = getattr(annotation, "__args__", None) or (annotation,)
        for member in members:
            for spec in getattr(member, "__args__", None) or (member,):
                if isinstance(spec, type) and issubclass(spec, ModelSpec):
                    archs.add(spec.model_fields["arch"].default)
    assert archs == set(MODELS)


@pytest.mark.parametrize("arch", ARCHS)
def test_output_shape(arch: str) -> None:
    model = _build(arch, 0).eval()
    with torch.no_grad():
        out = model(*_inputs(arch))
    assert tuple(out.shape) == _case(arch).shape
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("arch", ARCHS)
def test_gradients_reach_every_parameter(arch: str) -> None:
    model = _build(arch, 0).train()
    _loss(model(*_inputs(arch))).backward()
    dead = [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.abs().sum() > 0
    ]
    assert not dead, f"{arch}: no gradient reaches {dead}"


@pytest.mark.parametrize("arch", ARCHS)
def test_safetensors_round_trip(arch: str, tmp_path: Path) -> None:
    model = _build(arch, 0)
    # one training step so that running statistics and weights are not just the init
    model.train()
    _loss(model(*_inputs(arch))).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad  # type: ignore[operator]
    model.eval()
    path = tmp_path / "model.safetensors"
    save_model(model, str(path))
    other = _build(arch, 1).eval()  # different init: the load must overwrite everything
    x = _inputs(arch, seed=3)
    with torch.no_grad():
        expected = model(*x)
        assert not torch.equal(other(*x), expected)
        load_model(other, str(path))
        assert torch.equal(other(*x), expected)
    for (k, a), (_, b) in zip(model.state_dict().items(), other.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("arch", ARCHS)
def test_same_seed_same_weights_and_training(arch: str) -> None:
    a, b, c = _build(arch, 7).state_dict(), _build(arch, 7).state_dict(), _build(arch, 8)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], v) for k, v in c.state_dict().items())

    first, second, other = _train(arch, 7), _train(arch, 7), _train(arch, 8)
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first)
    # training moved the weights
    assert any(not torch.equal(first[k], a[k]) for k in first if a[k].is_floating_point())


# ----------------------------------------------------------------------------- oracles


def test_linear_matches_sklearn(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 200
    df = pd.DataFrame(
        {
            "x1": rng.normal(3.0, 2.0, n),
            "x2": rng.uniform(-5.0, 5.0, n),
            "x3": rng.normal(0.0, 0.5, n),
        }
    )
    df["y"] = 2.0 * df.x1 - 0.7 * df.x2 + 4.0 * df.x3 + 1.5 + rng.normal(0.0, 0.3, n)
    csv = tmp_path / "regression.csv"
    df.to_csv(csv, index=False)
    recipe = {
        "name": "linear-oracle",
        "task": "regression",
        "data": {"source": str(csv), "target": "y", "split": {"valid": 0.0, "test": 0.2}},
        "model": {"arch": "linear"},  # the default solver: full-batch L-BFGS
        "evaluate": {"plots": False},
    }
    model = tensorsmith.train(recipe, store=tmp_path / "store", console=Console(file=io.StringIO()))
    assert isinstance(model, tensorsmith.Model)
    splits = model.data_splits()
    features = ["x1", "x2", "x3"]
    ref = LinearRegression().fit(splits["train"][features], splits["train"]["y"])

    test = splits["test"]
    ours = model.predict(test)["y_predicted"].to_numpy()
    theirs = ref.predict(test[features])
    np.testing.assert_allclose(ours, theirs, atol=1e-3 * float(df.y.std()))

    # coefficients: the change of the prediction per unit of each feature
    base = test.iloc[:1][features].reset_index(drop=True)
    origin = model.predict(base)["y_predicted"].iloc[0]
    for j, name in enumerate(features):
        moved = base.copy()
        moved[name] += 1.0
        coef = model.predict(moved)["y_predicted"].iloc[0] - origin
        assert coef == pytest.approx(ref.coef_[j], abs=2e-3), name
    # and the test metrics agree with the reference's R²
    r2 = 1 - ((test.y - theirs) ** 2).sum() / ((test.y - test.y.mean()) ** 2).sum()
    assert model.metrics["test"]["r2"] == pytest.approx(r2, abs=1e-4)
    assert model.recipe.train.optimizer.name == "lbfgs"


@pytest.mark.parametrize("batch_norm", [False, True])
def test_mlp_forward_matches_functional(batch_norm: bool) -> None:
    torch.manual_seed(0)
    model = MLP(
        4, 2, [5, 3], activation="tanh", batch_norm=batch_norm, cardinalities=[6], embedding_dim=2
    )
    if batch_norm:  # non-trivial running statistics
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1.0, 1.0)  # type: ignore[operator]
                m.running_var.uniform_(0.5, 2.0)  # type: ignore[operator]
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
    model.eval()
    x = torch.randn(7, 4)
    cat = torch.randint(0, 6, (7, 1))
    sd = model.state_dict()

    h = torch.cat([x, F.embedding(cat[:, 0], sd["inputs.embeddings.0.weight"])], dim=1)
    linears = sorted(
        {
            k.rsplit(".", 1)[0]
            for k in sd
            if k.startswith("net.") and k.endswith(".weight") and sd[k].dim() == 2
        },
        key=lambda k: int(k.split(".")[1]),
    )
    assert len(linears) == 3
    for i, name in enumerate(linears):
        h = F.linear(h, sd[f"{name}.weight"], sd[f"{name}.bias"])
        if i == len(linears) - 1:
            break
        if batch_norm:
            bn = f"net.{int(name.split('.')[1]) + 1}"
            h = F.batch_norm(
                h,
                sd[f"{bn}.running_mean"],
                sd[f"{bn}.running_var"],
                sd[f"{bn}.weight"],
                sd[f"{bn}.bias"],
                training=False,
                eps=1e-5,
            )
        h = torch.tanh(h)
    with torch.no_grad():
        out = model(x, cat)
    assert out.shape == (7, 2)
    torch.testing.assert_close(out, h, rtol=1e-6, atol=1e-6)


# ----------------------------------------------------------------------------- schedules


def _schedule(**kw: Any) -> ScheduleSpec:
    return ScheduleSpec(**kw)


def test_warmup_is_linear_from_one_step() -> None:
    spec = _schedule(name="cosine", warmup_steps=4)
    got = [lr_factor(spec, 0.1, s, 20) for s in range(4)]
    assert got == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert lr_factor(spec, 0.1, 4, 20) == pytest.approx(1.0)  # decay starts after warmup


def test_cosine_reaches_min_lr_at_the_end() -> None:
    spec = _schedule(name="cosine", min_lr=0.01)
    floor = 0.01 / 0.1
    assert lr_factor(spec, 0.1, 0, 10) == pytest.approx(1.0)
    assert lr_factor(spec, 0.1, 5, 10) == pytest.approx(floor + (1 - floor) * 0.5)
    assert lr_factor(spec, 0.1, 2, 10) == pytest.approx(
        floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * 0.2))
    )
    assert lr_factor(spec, 0.1, 10, 10) == pytest.approx(floor)
    assert lr_factor(spec, 0.1, 15, 10) == pytest.approx(floor)  # stays at the floor

    warm = _schedule(name="cosine", warmup_steps=2, min_lr=0.0)
    assert lr_factor(warm, 0.1, 7, 12) == pytest.approx(0.5)  # half way through the decay

    # through torch's scheduler: after total steps the optimizer's lr is min_lr
    p = nn.Parameter(torch.ones(2))
    opt = build_optimizer([p], OptimizerSpec(name="sgd", lr=0.1))
    scheduler, plateau = build_schedule(
        opt, _schedule(name="cosine", warmup_steps=3, min_lr=0.01), 10
    )
    assert scheduler is not None and plateau is None
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs[:3] == pytest.approx([0.1 / 3, 0.2 / 3, 0.1])
    assert opt.param_groups[0]["lr"] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(lrs[2:]))  # decays monotonically


def test_step_schedule() -> None:
    spec = _schedule(name="step", step_size=3, gamma=0.5)
    got = [lr_factor(spec, 1.0, s, 100) for s in range(8)]
    assert got == pytest.approx([1, 1, 1, 0.5, 0.5, 0.5, 0.25, 0.25])
    floored = _schedule(name="step", step_size=3, gamma=0.5, min_lr=0.3)
    assert lr_factor(floored, 1.0, 6, 100) == pytest.approx(0.3)


def test_linear_schedule() -> None:
    spec = _schedule(name="linear")
    assert [lr_factor(spec, 1.0, s, 10) for s in (0, 5, 10, 20)] == pytest.approx([1, 0.5, 0, 0])
    floor = _schedule(name="linear", min_lr=0.2)
    assert lr_factor(floor, 1.0, 5, 10) == pytest.approx(0.2 + 0.8 * 0.5)


def test_constant_schedule_builds_nothing() -> None:
    assert lr_factor(_schedule(), 0.1, 123, 10) == 1.0
    opt = build_optimizer([nn.Parameter(torch.ones(1))], OptimizerSpec())
    assert build_schedule(opt, _schedule(), 10) == (None, None)


# ----------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_each_optimizer_builds_and_steps(name: str) -> None:
    torch.manual_seed(0)
    layer = nn.Linear(3, 1)
    before = [p.detach().clone() for p in layer.parameters()]
    opt = build_optimizer(layer.parameters(), OptimizerSpec(name=name, lr=0.05))
    x, y = torch.randn(8, 3), torch.randn(8, 1)
    loss0 = F.mse_loss(layer(x), y)

    def closure() -> torch.Tensor:  # L-BFGS evaluates the loss inside a step; others once
        opt.zero_grad()
        loss = F.mse_loss(layer(x), y)
        loss.backward()
        return loss

    for _ in range(5):
        opt.step(closure)
    assert any(not torch.equal(a, b) for a, b in zip(before, layer.parameters(), strict=True))
    assert F.mse_loss(layer(x), y) < loss0
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_nesterov_needs_sgd_with_momentum() -> None:
    params = [nn.Parameter(torch.ones(1))]
    assert build_optimizer(params, OptimizerSpec(name="sgd", momentum=0.9, nesterov=True))
    with pytest.raises(RecipeError, match="nesterov"):
        build_optimizer(params, OptimizerSpec(name="adam", nesterov=True))


def test_unknown_optimizer_suggests_the_nearest() -> None:
    with pytest.raises(RecipeError) as info:
        OPTIMIZERS.get("adma")
    msg = str(info.value)
    assert "train.optimizer.name" in msg and "did you mean 'adam'" in msg and "sgd" in msg

    raw = {
        "name": "x",
        "task": "regression",
        "data": {"source": "x.csv", "target": "y"},
        "train": {"optimizer": {"name": "adma"}},
    }
    with pytest.raises(RecipeError) as info:
        tensorsmith.validate(raw)
    assert "train.optimizer.name" in str(info.value)
    assert "did you mean 'adam'" in str(info.value)
