"""Recipes: parse, check everything that needs no data, and write starter recipes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tensorsmith.data.preprocess import infer_type
from tensorsmith.data.tables import check_columns, read_table
from tensorsmith.errors import DataError
from tensorsmith.evaluation.gate import parse_gate
from tensorsmith.evaluation.metrics import check_metrics, monitor_mode
from tensorsmith.models import check_model
from tensorsmith.recipe import Recipe, load_recipe, parse_recipe
from tensorsmith.tasks import TASKS
from tensorsmith.training.optim import check_optimizer

RecipeLike = str | Path | dict[str, Any] | Recipe


def _recipe(recipe: RecipeLike, overrides: list[str] | None) -> Recipe:
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    return parse_recipe(recipe, overrides)


def check_recipe(recipe: Recipe) -> None:
    """Every check that needs no data: names in registries, metrics, gate, monitor."""
    task = TASKS.get(recipe.task)
    task.check(recipe)
    check_model(recipe.model)
    check_optimizer(recipe.train)
    check_metrics(recipe.evaluate.metrics, task.metric_names, task.name)
    parse_gate(recipe.evaluate.gate, task.metric_names, task.name)
    es = recipe.train.early_stopping
    if es is not None:
        monitor_mode(es.monitor, task.metric_names, "train.early_stopping.monitor")


def validate(recipe: RecipeLike, overrides: list[str] | None = None) -> Recipe:
    """Parse, resolve and check a recipe (defaults filled in); raises RecipeError on mistakes."""
    parsed = _recipe(recipe, overrides)
    check_recipe(parsed)
    return parsed


def init_recipe(datafile: str | Path, target: str, out: str | Path | None = None) -> str:
    """A starter recipe for a table: task from the target column, paths relative to ``out``."""
    path = Path(datafile)
    df = read_table(path)
    check_columns(df, [target], "--target", path.name)
    numeric = infer_type(df[target]) == "number" and df[target].nunique() > 20
    folder = Path(out).resolve().parent if out is not None else Path.cwd()
    try:
        source = str(path.resolve().relative_to(folder))
    except ValueError:
        source = str(path.resolve())
    types = {c: infer_type(df[c]) for c in df.columns if c != target}
    name = "".join(ch if ch.isalnum() else "-" for ch in path.stem.lower()).strip("-") or "model"
    recipe: dict[str, Any] = {
        "name": name,
        "task": "regression" if numeric else "classification",
        "data": {
            "source": source,
            "target": target,
            "types": {c: t for c, t in types.items() if t == "category"},
            "split": {"valid": 0.15, "test": 0.15, "seed": 0},
        },
        "model": {"arch": "mlp", "hidden": [64, 32], "activation": "relu"},
        "train": {
            "epochs": 200,
            "batch_size": 32,
            "optimizer": {"name": "adam", "lr": 0.001},
            "early_stopping": {"monitor": "valid_loss", "patience": 20},
            "seed": 0,
        },
        "evaluate": {"gate": {"r2": ">= 0.5"} if numeric else {"accuracy": ">= 0.8"}},
    }
    if not recipe["data"]["types"]:
        del recipe["data"]["types"]
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
