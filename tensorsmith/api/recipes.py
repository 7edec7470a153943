"""Recipes: parse, check everything that needs no data, and write starter recipes."""

from __future__ import annotations

import contextlib
import glob
from pathlib import Path
from typing import Any

import yaml

from tensorsmith.data.tokenizer import TOKENIZERS
from tensorsmith.errors import DataError, RecipeError
from tensorsmith.evaluation.gate import parse_gate
from tensorsmith.evaluation.metrics import check_metrics, monitor_mode
from tensorsmith.models import check_model
from tensorsmith.recipe import Recipe, load_recipe, parse_recipe
from tensorsmith.registry import Registry
from tensorsmith.training.optim import OPTIMIZERS, SCHEDULES, check_optimizer

RecipeLike = str | Path | dict[str, Any] | Recipe


def parse_only(recipe: RecipeLike, overrides: list[str] | None = None) -> Recipe:
    """The parsed recipe with its overrides, not yet checked against the registries or data."""
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    return parse_recipe(recipe, overrides)


# recipe keys whose values are names in a registry (keys a recipe lacks are skipped)
NAMED: dict[str, Registry[Any]] = {
    "train.optimizer.name": OPTIMIZERS,
    "train.schedule.name": SCHEDULES,
    "data.tokenizer.kind": TOKENIZERS,
}


def _at(recipe: Recipe, dotted: str) -> Any:
    node: Any = recipe
    for part in dotted.split("."):
        node = getattr(node, part, None)
    return node


def check_recipe(recipe: Recipe) -> None:
    """Every check that needs no data (and no torch): names in registries, the loss, metrics,
    the gate and the early-stopping monitor."""
    kind = type(recipe)
    for dotted, registry in NAMED.items():
        value = _at(recipe, dotted)
        if value is not None:
            registry.check(value)
    check_model(recipe.model)
    check_optimizer(recipe.train)
    loss = getattr(recipe.train, "loss", None)
    if loss is not None and loss not in kind.losses:
        raise RecipeError(
            f"train.loss '{loss}' does not fit task {recipe.task}; choices: "
            f"{', '.join(kind.losses)}"
        )
    check_metrics(recipe.evaluate.metrics, kind.metric_names, recipe.task)
    parse_gate(recipe.evaluate.gate, kind.metric_names, recipe.task)
    es = recipe.train.early_stopping
    if es is not None:
        monitor_mode(es.monitor, kind.metric_names, "train.early_stopping.monitor")


def check_sources(recipe: Recipe) -> None:
    """The data the recipe names exists: each file, or at least one match of each glob."""
    split = getattr(recipe.data, "split", None)
    named: list[tuple[str, Any]] = [("data.source", recipe.data.source)]
    named += [(f"data.split.{k}", getattr(split, k, None)) for k in ("train", "valid", "test")]
    for key, value in named:
        if not isinstance(value, str):
            continue
        path = recipe.path(value)
        found = glob.glob(str(path)) if any(c in value for c in "*?[") else path.exists()
        if not found:
            raise DataError(
                f"{key} {value!r} does not exist (resolved to {path}); paths in a recipe are "
                "relative to the recipe's folder: fix the path or move the data"
            )


def validate(recipe: RecipeLike, overrides: list[str] | None = None) -> Recipe:
    """Parse, resolve and check a recipe (defaults filled in) and that its data exists; raises
    RecipeError or DataError on mistakes."""
    parsed = parse_only(recipe, overrides)
    check_recipe(parsed)
    check_sources(parsed)
    return parsed


def init_recipe(
    datafile: str | Path,
    target: str | None = None,
    out: str | Path | None = None,
    time: str | None = None,
) -> str:
    """A starter recipe for a table, a time series, a text table or an image folder: the first
    starter in ``STARTERS`` that recognises the data writes it. Beside ``out`` the recipe
    names its data relative to itself; printed, it may be saved anywhere, so it names the data
    by its absolute path."""
    from tensorsmith.tasks.starters import STARTERS

    path = Path(datafile)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path")
    found = (STARTERS.get(name)(path, target, time) for name in STARTERS.names())
    recipe = next((r for r in found if r is not None), None)
    if recipe is None:
        raise DataError(
            f"cannot tell what to train on {path.name}: expected a table with --target COL "
            "(and --time COL for a time series), or a folder with one sub-folder of images "
            "per class"
        )
    folder = Path(out).resolve().parent if out is not None else Path.cwd()
    if out is not None:
        with contextlib.suppress(ValueError):  # a source outside the folder stays absolute
            recipe["data"]["source"] = str(Path(recipe["data"]["source"]).relative_to(folder))
    text = f"# starter recipe for {path.name}: edit, then `tensorsmith train`\n"
    text += yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    check_recipe(parse_recipe(yaml.safe_load(text), base_dir=folder))  # what we write validates
    if out is not None:
        target_file = Path(out)
        if target_file.is_dir():
            raise DataError(f"--out {out} is a directory; give a file name such as recipe.yaml")
        target_file.parent.mkdir(parents=True, exist_ok=True)
        target_file.write_text(text, encoding="utf-8")
    return text
