"""Pruning (issue 13): unstructured magnitude pruning keeps shapes and zeroes the smallest
weights; structured pruning removes units, channels, heads and MLP units so the model shrinks;
a recovery fine-tune keeps an unstructured child's zeros.

Structured children are checked against an independent reference: the parent with the removed
units masked to zero (a forward hook, or the weights that read them zeroed) gives the same
outputs as the smaller child.
"""

from __future__ import annotations

import copy
import io
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tiny
import torch
import yaml
from rich.console import Console
from torch import nn
from torch.nn.utils import prune as torch_prune

import tensorsmith
from tensorsmith import RecipeError
from tensorsmith.api.compression import write_child
from tensorsmith.compression.measure import parameter_counts
from tensorsmith.compression.prune import prunable_weights, prune, recover
from tensorsmith.compression.prune_structured import prune_structured
from tensorsmith.models import build_model
from tensorsmith.recipe import Recipe, parse_recipe
from tensorsmith.tasks.predictor import Predictor


def _quiet() -> Console:
    return Console(file=io.StringIO(), width=200)


def _recipe(model: dict[str, Any], task: str = "classification") -> Recipe:
    labelled = task not in {"image-classification", "language-modeling"}
    data = {"source": "x.csv", "target": "y"} if labelled else {"source": "x.csv"}
    return parse_recipe({"name": "t", "task": task, "data": data, "model": model})


def _built(model: dict[str, Any], dims: dict[str, Any], task: str = "classification") -> Any:
    recipe = _recipe(model, task)
    torch.manual_seed(0)
    module = build_model(recipe.model, dims).eval()
    for p in module.parameters():  # weights of unequal norms, so the choice of units matters
        p.data.add_(torch.randn_like(p) * 0.3)
    return recipe, module


def _mask_after(module: nn.Module, mask: torch.Tensor) -> Any:
    """Multiply the module's output by ``mask`` along dim 1 (units or channels)."""

    def hook(_m: nn.Module, _i: Any, out: torch.Tensor) -> torch.Tensor:
        return out * mask.view(1, -1, *([1] * (out.dim() - 2)))

    return module.register_forward_hook(hook)


def _unit_mask(n: int, kept: list[int]) -> torch.Tensor:
    mask = torch.zeros(n)
    mask[kept] = 1.0
    return mask


# ----------------------------------------------------------------------------- structured


@pytest.mark.parametrize("batch_norm", [False, True])
def test_structured_mlp_equals_the_parent_with_removed_units_masked(batch_norm: bool) -> None:
    dims = {"n_inputs": 5, "n_outputs": 3}
    recipe, parent = _built({"arch": "mlp", "hidden": [10, 8], "batch_norm": batch_norm}, dims)
    if batch_norm:  # running statistics that are not the identity
        for m in parent.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
    child, child_recipe, surgery = prune_structured(copy.deepcopy(parent), recipe, dims, 0.5)
    assert child_recipe.model.hidden == [5, 4]
    assert recipe.model.hidden == [10, 8]  # the parent's recipe is untouched
    acts = [m for m in parent.net if isinstance(m, nn.ReLU)]
    for act, n, key in zip(acts, [10, 8], ["hidden.0", "hidden.1"], strict=True):
        _mask_after(act, _unit_mask(n, surgery.kept[key][0]))
    x = torch.randn(16, 5)
    torch.testing.assert_close(child(x), parent(x))
    assert sum(p.numel() for p in child.parameters()) < sum(p.numel() for p in parent.parameters())


def test_structured_mlp_keeps_the_units_with_the_largest_norms() -> None:
    dims = {"n_inputs": 3, "n_outputs": 1}
    recipe, parent = _built({"arch": "mlp", "hidden": [4]}, dims)
    with torch.no_grad():
        parent.net[0].weight.copy_(torch.tensor([[1.0] * 3, [5.0] * 3, [0.1] * 3, [3.0] * 3]))
        parent.net[2].weight.fill_(1.0)
    _child, _recipe, surgery = prune_structured(parent, recipe, dims, 0.5)
    assert surgery.kept["hidden.0"] == [[1, 3]]


def test_structured_cnn_equals_the_parent_with_removed_channels_masked() -> None:
    dims = {"channels": 1, "height": 8, "width": 8, "n_outputs": 2}
    model = {"arch": "cnn", "channels": [6, 4], "head": [5]}
    recipe, parent = _built(model, dims, "image-classification")
    child, child_recipe, surgery = prune_structured(copy.deepcopy(parent), recipe, dims, 0.5)
    assert child_recipe.model.channels == [3, 2]
    for b, n in enumerate([6, 4]):
        _mask_after(parent.blocks[b], _unit_mask(n, surgery.kept[f"channels.{b}"][0]))
    x = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(child(x), parent(x))


def _transformer(arch: str = "transformer") -> tuple[Recipe, nn.Module, dict[str, Any]]:
    dims = {"n_outputs": 3, "max_length": 12, "vocab_size": 50}
    model = {"arch": arch, "n_layer": 2, "n_head": 4, "n_embd": 16, "dropout": 0.0}
    if arch == "gpt":
        model["block_size"] = 12
    task = "language-modeling" if arch == "gpt" else "text-classification"
    recipe, parent = _built(model, dims, task)
    return recipe, parent, dims


@pytest.mark.parametrize("arch", ["transformer", "gpt"])
def test_structured_transformer_removes_heads_and_mlp_units_and_keeps_n_embd(arch: str) -> None:
    recipe, parent, dims = _transformer(arch)
    child, child_recipe, surgery = prune_structured(copy.deepcopy(parent), recipe, dims, 0.5)
    m = child_recipe.model
    assert (m.n_embd, m.n_head, m.head_size, m.mlp_width) == (16, 2, 4, 32)
    names = ("blocks", "proj", "mlp.0") if arch == "transformer" else ("h", "c_proj", "mlp.c_fc")
    reference = copy.deepcopy(parent)  # removed heads: the proj columns that read them zeroed
    with torch.no_grad():  # removed MLP units: the rows that write them zeroed (GELU(0) = 0)
        for b, block in enumerate(reference.get_submodule(names[0])):
            heads, units = surgery.kept[f"{names[0]}.{b}"]
            proj, fc = block.attn.get_submodule(names[1]), block.get_submodule(names[2])
            for h in set(range(4)) - set(heads):
                proj.weight[:, h * 4 : (h + 1) * 4] = 0.0
            gone = sorted(set(range(64)) - set(units))
            fc.weight[gone] = 0.0
            fc.bias[gone] = 0.0
    x = torch.randint(0, 50, (5, 12))
    args: tuple[Any, ...] = (x,)
    if arch == "transformer":
        args = (x, torch.arange(12)[None, :] < torch.tensor([12, 7, 3, 1, 9])[:, None])
    torch.testing.assert_close(child(*args), reference(*args))
    assert not torch.allclose(child(*args), parent(*args))  # something was removed
    rebuilt = build_model(child_recipe.model, dims)  # the child's recipe builds the child
    rebuilt.load_state_dict(child.state_dict())


def test_a_pruned_gpt_generates_with_its_kv_cache() -> None:
    recipe, parent, dims = _transformer("gpt")
    child, _r, _s = prune_structured(parent, recipe, dims, 0.5)
    x = torch.randint(0, 50, (1, 6))
    full = child(x)[:, -1]  # the last position's logits, without a cache
    caches = child.new_kv_caches()
    child(x[:, :-1], caches)
    torch.testing.assert_close(child(x[:, -1:], caches)[:, -1], full)


def test_a_child_recipe_stores_and_parses_again() -> None:
    recipe, parent, dims = _transformer()
    _child, child_recipe, _s = prune_structured(parent, recipe, dims, 0.75)
    from tensorsmith.recipe import recipe_to_yaml

    again = parse_recipe(yaml.safe_load(recipe_to_yaml(child_recipe)))
    assert (again.model.n_head, again.model.head_size, again.model.mlp_width) == (1, 4, 16)


@pytest.mark.parametrize(
    ("model", "task"),
    [
        ({"arch": "linear"}, "classification"),
        ({"arch": "hf-encoder"}, "text-classification"),
        ({"arch": "rnn", "hidden_size": 4}, "text-classification"),
        ({"arch": "cnn", "channels": [4], "residual": True}, "image-classification"),
    ],
)
def test_structured_pruning_of_an_architecture_without_structure_says_so(
    model: dict[str, Any], task: str
) -> None:
    recipe = _recipe(model, task)
    with pytest.raises(RecipeError, match="unstructured"):
        prune_structured(nn.Linear(1, 1), recipe, {}, 0.5)


# ----------------------------------------------------------------------------- unstructured


def test_unstructured_pruning_zeroes_the_globally_smallest_weights() -> None:
    recipe, parent, dims = _transformer()
    module = copy.deepcopy(parent)
    weights = torch.cat([getattr(m, n).detach().flatten() for m, n in prunable_weights(module)])
    k = round(0.3 * weights.numel())
    threshold = weights.abs().kthvalue(k).values  # independent: the k-th smallest magnitude
    predictor = Predictor(Path("."), recipe, None, module, {"dims": dims})  # type: ignore[arg-type]
    child = prune(predictor, 0.3, structured=False)
    after = torch.cat([getattr(m, n).detach().flatten() for m, n in prunable_weights(child.module)])
    assert int((after == 0).sum()) == k
    assert bool((after[weights.abs() > threshold] != 0).all())
    assert not any("_orig" in name or "_mask" in name for name in child.module.state_dict())
    assert child.format is None and child.recipe is recipe
    info = child.method["prune"]
    assert info["kind"] == "unstructured" and info["amount"] == 0.3
    assert info["nonzero_parameters"] == parameter_counts(child.module)[1]
    assert info["nonzero_parameters"] == info["parameters"] - k
    assert parameter_counts(module)[1] == info["parameters"]  # the parent is untouched


def test_unstructured_pruning_reaches_lstm_weights() -> None:
    lstm = nn.Sequential(nn.LSTM(4, 6, batch_first=True))
    names = [n for _m, n in prunable_weights(lstm)]
    assert names == ["weight_ih_l0", "weight_hh_l0"]


@pytest.mark.parametrize("amount", [0.0, 1.0, -0.2, 1.5])
def test_an_amount_outside_zero_one_is_refused(amount: float) -> None:
    recipe, parent, dims = _transformer()
    predictor = Predictor(Path("."), recipe, None, parent, {"dims": dims})  # type: ignore[arg-type]
    with pytest.raises(RecipeError, match=r"outside \(0, 1\)"):
        prune(predictor, amount, structured=True)


# ----------------------------------------------------------------------------- end to end


def _text_model(tmp_path: Path, model: dict[str, Any], **data: Any) -> Predictor:
    source = tiny.texts_csv(tmp_path / "texts.csv")
    recipe = tiny.text_recipe(source, model, "tiny-text", 4, **data)
    found = tensorsmith.train(recipe, store=tmp_path / "store", console=_quiet())
    return Predictor.load(Path(found.path))


def _stored(child: Any, parent: Predictor, folder: Path) -> Predictor:
    """The child stored as ``compress`` stores it (without the measurement), loaded back."""
    return Predictor.load(write_child(folder, parent, child))


def test_structured_child_of_a_trained_transformer_loads_and_recovers(tmp_path: Path) -> None:
    model = {"arch": "transformer", "n_layer": 1, "n_head": 4, "n_embd": 16, "dropout": 0.0}
    parent = _text_model(tmp_path, model)
    child = prune(parent, 0.5, structured=True)
    assert child.recipe.model.n_head == 2 and child.format is None
    texts = pd.read_csv(tmp_path / "texts.csv").head(8)[["text"]]
    loaded = _stored(child, parent, tmp_path / "child")
    expected = parent.task.predict_proba(child.module, texts)
    torch.testing.assert_close(loaded.predict_proba(texts), expected)
    recovered = recover(parent, child, 2, _quiet(), tmp_path / "cache", lr_scale=1.0)
    assert len(recovered.history) == 2 and recovered.run["epochs"] == 2
    info = recovered.method["prune"]
    assert info["recover_epochs"] == 2 and info["recover_lr"] == 0.01
    kept = info["recover_kept_epoch"]  # 0: the pruned start, else the best epoch on valid
    assert kept in (0, 1, 2)
    if kept:
        losses = [row["valid_loss"] for row in recovered.history]
        assert losses[kept - 1] == min(losses)
    assert recovered.recipe.model.n_head == 2
    weights = recovered.module.head[-1].weight, child.module.head[-1].weight
    assert torch.equal(*weights) == (kept == 0)


def test_recovery_keeps_the_zeros_of_an_unstructured_child(tmp_path: Path) -> None:
    model = {"arch": "rnn", "hidden_size": 8, "pooling": "mean"}
    # no valid split: nothing to choose a best epoch by, so the last epoch's weights come back
    parent = _text_model(tmp_path, model, split={"valid": 0.0, "test": 0.2})
    child = prune(parent, 0.6, structured=False)
    zeros = {n: p == 0 for n, p in child.module.named_parameters()}
    recovered = recover(parent, child, 3, _quiet(), tmp_path / "cache")
    after = dict(recovered.module.named_parameters())
    assert set(after) == set(zeros)  # no weight_orig / weight_mask left behind
    changed = False
    for name, was_zero in zeros.items():
        assert bool((after[name][was_zero] == 0).all()), name
        changed |= not torch.equal(after[name], child.module.get_parameter(name))
    assert changed  # it did train
    assert recovered.method["prune"]["recover_kept_epoch"] == 3
    assert (
        recovered.method["prune"]["nonzero_parameters"]
        <= child.method["prune"]["nonzero_parameters"]
    )
    assert not any(isinstance(h, torch_prune.BasePruningMethod) for h in _hooks(recovered.module))


def _hooks(module: nn.Module) -> list[Any]:
    return [h for m in module.modules() for h in m._forward_pre_hooks.values()]


def test_recovery_of_a_step_counted_model_is_refused() -> None:
    recipe = parse_recipe({"name": "g", "task": "language-modeling", "data": {"source": "x.txt"}})
    from tensorsmith.compression.child import Child

    child = Child(nn.Linear(1, 1), recipe, {}, {"prune": {"kind": "unstructured"}})
    with pytest.raises(RecipeError, match="steps"):
        recover(None, child, 2, _quiet(), Path("."))  # type: ignore[arg-type]
