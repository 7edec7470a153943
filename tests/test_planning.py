"""The planner (issue 12): counts against the built models and published figures, FLOPs
against PyTorch's own counter, memory against what autograd saves, the plan against a real run,
and every bad input a careless user gives it."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import EXAMPLES, example_recipes, recipe_task, run_cli
from rich.console import Console

import tensorsmith
from tensorsmith import DataError, RecipeError
from tensorsmith.api.plan_compare import compare
from tensorsmith.api.planning import Sizes, plan, sweep
from tensorsmith.models import build_model
from tensorsmith.models.gpt import GPT
from tensorsmith.planning.count import (
    activation_bytes,
    count_flops,
    gpt_activation_bytes,
    measure_flops,
)
from tensorsmith.planning.hardware import device_names
from tensorsmith.planning.report import sweep_plot
from tensorsmith.recipe.models import GPTSpec
from tensorsmith.tasks import create_task

XOR = EXAMPLES / "xor_mlp" / "recipe.yaml"
GPT3 = {"n_layer": 96, "n_head": 96, "n_embd": 12288, "block_size": 2048}
GPT2_SMALL = {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "bias": True}


def _quiet() -> Console:
    return Console(file=io.StringIO())


def _lm_recipe(folder: Path, model: dict[str, Any], source: str = "nowhere/*.txt") -> Path:
    """A GPT recipe with a BPE vocabulary of GPT-2's size over a corpus that may not exist."""
    recipe = {
        "name": "big-gpt",
        "task": "language-modeling",
        "data": {"source": source, "tokenizer": {"kind": "bpe", "vocab_size": 50257}},
        "model": {"arch": "gpt", **model},
        "train": {"max_steps": 1000, "batch_size": 8},
    }
    path = folder / "gpt.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- published figures


def test_gpt3_175b_plans_its_published_training_flops(tmp_path: Path) -> None:
    """Brown et al. 2020, Table D.1: GPT-3 175B on 300 B tokens took 3.14e23 FLOPs."""
    made = plan(_lm_recipe(tmp_path, GPT3), "h100-sxm", 1024, sizes=Sizes(tokens=300e9))
    assert made.value("training FLOPs") == pytest.approx(3.14e23, rel=0.10)
    assert made.value("total") == pytest.approx(175e9, rel=0.01)
    assert made.value("tokens per parameter") == pytest.approx(300 / 175, rel=0.01)
    assert made.value("tokens in all") == pytest.approx(300e9, rel=1e-4)
    assert any("fits no listed device" in w and "×" in w for w in made.warnings)


def test_gpt2_small_plans_its_124m_parameters(tmp_path: Path) -> None:
    made = plan(_lm_recipe(tmp_path, GPT2_SMALL), "a100-80g", sizes=Sizes(tokens=1e9))
    assert made.value("total") == 124_439_808  # nanoGPT's count of GPT-2 small, wpe included
    assert made.value("trainable") == made.value("total")
    assert made.value("embedding") == 50257 * 768 + 1024 * 768


# ----------------------------------------------------------------------------- counting


def _token_loss(module: torch.nn.Module, batch: tuple[torch.Tensor, ...]) -> torch.Tensor:
    logits = module(batch[0])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[1].reshape(-1))


@pytest.mark.parametrize(
    ("config", "vocab", "batch"),
    [
        ({"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "bias": False}, 65, 12),
        ({"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 128, "bias": True}, 300, 4),
        ({"n_layer": 2, "n_head": 6, "n_embd": 384, "block_size": 256, "bias": False}, 65, 4),
    ],
)
def test_gpt_step_flops_match_the_flop_counter(
    config: dict[str, Any], vocab: int, batch: int
) -> None:
    """The closed form against FlopCounterMode on a real forward and backward pass; the
    activation formula against the bytes autograd really saves."""
    module = GPT.from_spec(GPTSpec(**config), {"vocab_size": vocab})
    x = torch.randint(0, vocab, (batch, config["block_size"]))
    closed = count_flops(module, _token_loss, (x, x))
    counted = measure_flops(module, _token_loss, (x, x))
    assert closed.method.startswith("6N")
    assert closed.step == pytest.approx(counted.step, rel=0.05)
    saved = activation_bytes(module, _token_loss, (x, x))
    assert gpt_activation_bytes(module, batch, "fp32") == pytest.approx(saved, rel=0.15)


def _trainable_recipes() -> list[Path]:
    return [
        p
        for p in example_recipes()
        if recipe_task(p) and "finetune" not in yaml.safe_load(p.read_text())
    ]


@pytest.mark.parametrize("recipe", _trainable_recipes(), ids=lambda p: p.parent.name + "/" + p.stem)
def test_parameter_counts_equal_the_model_training_builds(recipe: Path, tmp_path: Path) -> None:
    """Every example recipe: the plan's count (the model built on the meta device from the
    sized data) equals the model the training path builds from its prepared data."""
    made = plan(recipe, "h100-sxm", store=tmp_path)
    task = create_task(tensorsmith.validate(recipe))
    prepared = task.prepare(tmp_path / "cache", _quiet())
    module = build_model(task.recipe.model, prepared.dims)
    assert made.value("total") == sum(p.numel() for p in module.parameters())
    assert made.value("trainable") == made.value("total")


# ----------------------------------------------------------------------------- fine-tunes


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with a trained xor-mlp: the parent of the fine-tunes and the run to compare."""
    root = tmp_path_factory.mktemp("planning") / "store"
    tensorsmith.train(
        XOR, ["train.epochs=30", "evaluate.plots=false"], store=root, console=_quiet()
    )
    return root


def _child(folder: Path, **finetune: Any) -> Path:
    (folder / "moons.csv").write_bytes((EXAMPLES / "xor_mlp" / "moons.csv").read_bytes())
    recipe = {
        "name": f"moons-{finetune['strategy']}",
        "task": "classification",
        "data": {"source": "moons.csv", "target": "label", "types": {"label": "category"}},
        "train": {"epochs": 2, "batch_size": 10},
        "evaluate": {"plots": False},
        "finetune": {"from": "xor-mlp", **finetune},
    }
    path = folder / "moons.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    "finetune", [{"strategy": "lora", "lora": {"rank": 2}}, {"strategy": "head"}], ids=str
)
def test_fine_tune_plans_count_what_the_fine_tune_trains(
    store: Path, tmp_path: Path, finetune: dict[str, Any]
) -> None:
    recipe = _child(tmp_path, **finetune)
    made = plan(recipe, "t4", store=store)
    model = tensorsmith.finetune(recipe, store=store, console=_quiet())
    assert made.value("trainable") == model.run["trainable_parameters"]
    assert made.value("trainable") < made.value("total")
    assert made.value("gradients") == 4 * made.value("trainable")


# ----------------------------------------------------------------------------- after training


def test_compare_puts_the_local_plan_beside_the_run(store: Path) -> None:
    name, rows, notes = compare("xor-mlp", store)
    assert name == "xor-mlp@1"
    by = {quantity: (est, got) for quantity, _, est, got in rows}
    assert set(by) == {"training time", "samples per second", "peak memory"}
    for est, got in by.values():
        assert est > 0 and got > 0
    run = json.loads((store / "xor-mlp" / "1" / "run.json").read_text())
    assert by["peak memory"][1] == run["peak_memory_bytes"]
    assert by["training time"][1] == run["train_seconds"]
    # the local plan rests on steps timed here, and says how much of the peak they reached
    local = plan(XOR, "local", store=store)
    assert "timed on this machine" in next(r.note for r in local.rows if r.name == "per step")
    assert 0 < local.value("utilisation") <= 1
    assert any("AMD" in n or "Intel" in n or "measured" in n or "planned" in n for n in notes)


def test_sweep_prints_sizes_and_plots_cost_against_size(tmp_path: Path) -> None:
    recipe = _lm_recipe(tmp_path, {"n_head": 2, "n_embd": 64, "block_size": 32})
    plans = sweep(recipe, "model.n_layer", ["1", "2", "4"], "l4", price=0.8, sizes=Sizes(2e8))
    totals = [p.value("total") for p in plans]
    assert totals == sorted(totals) and len(set(totals)) == 3
    costs = [p.value("training cost") for p in plans]
    assert costs == sorted(costs)
    png = sweep_plot(plans, "model.n_layer", ["1", "2", "4"], tmp_path / "sweep.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_model_too_big_for_the_device_names_the_batch_that_fits(tmp_path: Path) -> None:
    wide = {"n_layer": 24, "n_head": 16, "n_embd": 1024, "block_size": 2048}
    made = plan(_lm_recipe(tmp_path, wide), "t4", sizes=Sizes(tokens=1e9))
    warning = next(w for w in made.warnings if w.startswith("does not fit t4"))
    assert "largest batch size that fits" in warning
    fits = int(warning.rsplit("train.batch_size=", 1)[1].rstrip(")"))
    assert 0 < fits < 8
    assert plan(_lm_recipe(tmp_path, wide), "h200", sizes=Sizes(tokens=1e9)).warnings[:-1] == []


# ----------------------------------------------------------------------------- bad input


def test_an_unknown_hardware_name_lists_the_table(tmp_path: Path) -> None:
    with pytest.raises(RecipeError) as caught:
        plan(XOR, "h100")
    message = str(caught.value)
    assert "unknown hardware 'h100'" in message
    assert all(name in message for name in device_names())


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"price": -1.0}, "--price"),
        ({"price": 0.0}, "--price"),
        ({"devices": 0}, "--devices"),
        ({"mfu": 0.0}, "--mfu"),
        ({"mfu": 1.5}, "--mfu"),
    ],
)
def test_zero_or_negative_options_are_refused(options: dict[str, Any], says: str) -> None:
    with pytest.raises(RecipeError, match=says):
        plan(XOR, "l4", **options)


def test_missing_data_plans_on_a_given_size_or_says_how(tmp_path: Path) -> None:
    recipe = _lm_recipe(tmp_path, {"n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32})
    with pytest.raises(DataError, match="--tokens"):
        plan(recipe, "l4")
    made = plan(recipe, "l4", sizes=Sizes(tokens=1e6))
    assert made.value("tokens in all") >= 1e6
    table = yaml.safe_load(XOR.read_text())
    table["data"]["source"] = "gone.csv"
    (tmp_path / "table.yaml").write_text(yaml.safe_dump(table))
    with pytest.raises(DataError, match=r"gone\.csv"):
        plan(tmp_path / "table.yaml", "l4")


def test_the_cli_prints_json_tables_and_errors(tmp_path: Path) -> None:
    code, stdout, _ = run_cli("plan", XOR, "--hardware", "h100-sxm", "--json", "--price", "3")
    assert code == 0
    shown = json.loads(stdout)
    assert shown["sections"]["parameters"]["total"]["value"] == plan(XOR, "h100-sxm").value("total")
    assert shown["sections"]["money"]["training cost"]["unit"] == "$"
    code, stdout, _ = run_cli("plan", "--hardware", "list", "--json")
    assert code == 0
    assert [d["name"] for d in json.loads(stdout)] == device_names()
    code, _, stderr = run_cli("plan", XOR, "--hardware", "h100-sxn")
    assert code == 2
    assert "did you mean 'h100-sxm'" in stderr
