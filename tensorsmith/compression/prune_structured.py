"""Structured pruning: whole hidden units, channels, attention heads and MLP units come out.

Each architecture's surgeon scores the units of every prunable layer, keeps the ``1 - amount``
with the largest score (the norm of the weights that write the unit times the norm of the
weights that read it), and returns the smaller sizes for the recipe and, for every tensor of the
state dict that changes, the indices it keeps along each dimension. The child is built from the
smaller recipe by the architecture's own ``from_spec`` and loads the kept slices strictly, so
it is an ordinary model of that architecture: it loads through the plain ``Predictor``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from tensorsmith.errors import RecipeError
from tensorsmith.models import build_model
from tensorsmith.recipe import Recipe

__all__ = ["STRUCTURED", "Surgery", "keep_count", "prune_structured"]


@dataclass
class Surgery:
    """What a surgeon decided: the recipe's new model keys and the slices each tensor keeps."""

    sizes: dict[str, Any]  # model keys of the child: hidden, channels, n_head, head_size …
    slices: dict[str, list[tuple[int, torch.Tensor]]] = field(default_factory=dict)
    kept: dict[str, list[list[int]]] = field(default_factory=dict)  # per layer, for the record

    def cut(self, name: str, dim: int, index: torch.Tensor) -> None:
        self.slices.setdefault(name, []).append((dim, index))


Surgeon = Callable[[Any, Any, float], Surgery]  # (module, its model spec, amount)


def keep_count(n: int, amount: float) -> int:
    """Units kept of ``n`` when ``amount`` of them are removed: at least one."""
    return max(1, round(n * (1.0 - amount)))


def _top(scores: torch.Tensor, amount: float) -> torch.Tensor:
    """Indices of the kept units (highest scores), in their original order."""
    k = keep_count(scores.numel(), amount)
    return torch.sort(torch.topk(scores, k).indices).values


def _rows(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each output unit's weights (dim 0), whatever the kernel's shape."""
    return weight.detach().flatten(1).norm(dim=1)


def _cols(weight: torch.Tensor) -> torch.Tensor:
    """The L2 norm of the weights that read each input unit (dim 1)."""
    return weight.detach().transpose(0, 1).flatten(1).norm(dim=1)


# ----------------------------------------------------------------------------- mlp


def _mlp(module: Any, spec: Any, amount: float) -> Surgery:
    """Each hidden layer keeps the units whose in- and out-weights have the largest norms."""
    net = module.net
    linears = [i for i, m in enumerate(net) if isinstance(m, nn.Linear)]
    norms = {i: m for i, m in enumerate(net) if isinstance(m, nn.BatchNorm1d)}
    surgery = Surgery({"hidden": []})
    for layer, (i, j) in enumerate(itertools.pairwise(linears)):
        w_in, w_out = net[i].weight, net[j].weight
        keep = _top(_rows(w_in) * _cols(w_out), amount)
        surgery.sizes["hidden"].append(int(keep.numel()))
        surgery.kept[f"hidden.{layer}"] = [keep.tolist()]
        surgery.cut(f"net.{i}.weight", 0, keep)
        surgery.cut(f"net.{i}.bias", 0, keep)
        surgery.cut(f"net.{j}.weight", 1, keep)
        bn = next((k for k in norms if i < k < j), None)
        if bn is not None:
            for name in ("weight", "bias", "running_mean", "running_var"):
                surgery.cut(f"net.{bn}.{name}", 0, keep)
    return surgery


# ----------------------------------------------------------------------------- cnn


def _cnn(module: Any, spec: Any, amount: float) -> Surgery:
    """Each conv block keeps the output channels whose filters and readers have the largest
    norms; the next block (or the head's first layer) reads only those."""
    if spec.residual:
        raise RecipeError(
            "structured pruning of a residual cnn is not supported (a skip connection ties each "
            "block's channels to its input's); prune it unstructured (leave out --structured)"
        )
    blocks, head = list(module.blocks), module.head
    first = next(i for i, m in enumerate(head) if isinstance(m, nn.Linear))
    surgery = Surgery({"channels": []})
    for b, block in enumerate(blocks):
        w_in = block.conv1.weight
        reader = f"blocks.{b + 1}.conv1.weight" if b + 1 < len(blocks) else f"head.{first}.weight"
        w_out = module.get_parameter(reader)
        keep = _top(_rows(w_in) * _cols(w_out), amount)
        surgery.sizes["channels"].append(int(keep.numel()))
        surgery.kept[f"channels.{b}"] = [keep.tolist()]
        surgery.cut(f"blocks.{b}.conv1.weight", 0, keep)
        if block.conv1.bias is not None:
            surgery.cut(f"blocks.{b}.conv1.bias", 0, keep)
        if isinstance(block.norm1, nn.BatchNorm2d):
            for name in ("weight", "bias", "running_mean", "running_var"):
                surgery.cut(f"blocks.{b}.norm1.{name}", 0, keep)
        surgery.cut(reader, 1, keep)
    return surgery


# ----------------------------------------------------------------------------- transformer


@dataclass(frozen=True)
class _Names:
    """Where an encoder or a GPT keeps its blocks and the layers of each."""

    blocks: str
    qkv: str  # the query, key and value projections of every head, in one Linear
    proj: str  # the output projection that reads the heads
    fc: str  # the MLP's first Linear (writes its units) …
    out: str  # … and its second (reads them)


ENCODER = _Names("blocks", "attn.qkv", "attn.proj", "mlp.0", "mlp.2")
DECODER = _Names("h", "attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")


def _heads(
    qkv: nn.Linear, proj: nn.Linear, nh: int, amount: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(kept heads, the qkv rows they own, the proj columns that read them)."""
    inner = proj.weight.shape[1]
    hs = inner // nh
    value = qkv.weight.detach()[2 * inner :].view(nh, hs, -1)  # (nh, hs, C)
    reads = proj.weight.detach().view(-1, nh, hs).transpose(0, 1)  # (nh, C, hs)
    heads = _top(reads.flatten(1).norm(dim=1) * value.flatten(1).norm(dim=1), amount)
    cols = (heads[:, None] * hs + torch.arange(hs)).flatten()  # (kept · hs,)
    rows = torch.cat([cols + part * inner for part in range(3)])  # q, k and v of each kept head
    return heads, rows, cols


def _attention(names: _Names) -> Surgeon:
    """Each block keeps the heads and the MLP units with the largest norms (n_embd stays)."""

    def surgeon(module: Any, spec: Any, amount: float) -> Surgery:
        blocks = list(module.get_submodule(names.blocks))
        hs = blocks[0].attn.head_size
        surgery = Surgery({"head_size": hs})
        for b, block in enumerate(blocks):
            p = f"{names.blocks}.{b}"
            qkv, proj = block.get_submodule(names.qkv), block.get_submodule(names.proj)
            heads, rows, cols = _heads(qkv, proj, block.attn.n_head, amount)
            fc, out = block.get_submodule(names.fc), block.get_submodule(names.out)
            units = _top(_rows(fc.weight) * _cols(out.weight), amount)
            for layer, dim, index in [
                (names.qkv, 0, rows), (names.proj, 1, cols), (names.fc, 0, units),
                (names.out, 1, units),
            ]:  # fmt: skip
                surgery.cut(f"{p}.{layer}.weight", dim, index)
                if dim == 0:
                    surgery.cut(f"{p}.{layer}.bias", 0, index)
            surgery.kept[f"{names.blocks}.{b}"] = [heads.tolist(), units.tolist()]
            surgery.sizes.update(n_head=int(heads.numel()), mlp_width=int(units.numel()))
        return surgery

    return surgeon


STRUCTURED: dict[str, Surgeon] = {
    "mlp": _mlp,
    "cnn": _cnn,
    "transformer": _attention(ENCODER),
    "gpt": _attention(DECODER),
}


def prune_structured(
    module: nn.Module, recipe: Recipe, dims: dict[str, Any], amount: float
) -> tuple[nn.Module, Recipe, Surgery]:
    """The smaller module (built from the smaller recipe, holding the kept slices) and recipe."""
    arch = recipe.model.arch
    surgeon = STRUCTURED.get(arch)
    if surgeon is None:
        raise RecipeError(
            f"structured pruning removes hidden units, channels or attention heads; a {arch} "
            f"model has no such structure to remove (it supports {', '.join(sorted(STRUCTURED))}"
            "); prune it unstructured instead (leave out --structured)"
        )
    surgery = surgeon(module, recipe.model, amount)
    spec = recipe.model.model_validate({**recipe.model.model_dump(), **surgery.sizes})
    child_recipe = recipe.model_copy(update={"model": spec})
    child = build_model(spec, dims)
    child.load_state_dict(_sliced(module.state_dict(), surgery.slices), strict=True)
    return child.eval(), child_recipe, surgery


def _sliced(
    state: dict[str, torch.Tensor], slices: dict[str, list[tuple[int, torch.Tensor]]]
) -> dict[str, torch.Tensor]:
    out = {}
    for name, tensor in state.items():
        for dim, index in slices.get(name, []):
            tensor = tensor.index_select(dim, index)
        out[name] = tensor.clone()
    return out
