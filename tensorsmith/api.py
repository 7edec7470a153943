"""The Python API; the CLI is a thin face over these functions.

model = tensorsmith.train("recipe.yaml")
model.predict(df); model.evaluate(df)
tensorsmith.load("windsor-housing@2")
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd
import yaml
from rich.console import Console

from tensorsmith.data.preprocess import infer_type
from tensorsmith.data.sources import check_columns, read_table
from tensorsmith.errors import DataError
from tensorsmith.evaluation.report import print_metrics
from tensorsmith.pipelines.common import StoredModel
from tensorsmith.pipelines.language import (
    GenerationNotes,
    LanguageModel,
    check_text,
    train_language,
)
from tensorsmith.pipelines.tabular import TabularModel, train_tabular
from tensorsmith.recipe import Recipe, load_recipe, parse_recipe
from tensorsmith.store.artifact import (
    check_writable,
    list_models,
    read_json,
    resolve,
    store_root,
)

__all__ = [
    "Model",
    "evaluate",
    "generate",
    "init_recipe",
    "load",
    "models",
    "predict",
    "train",
    "validate",
]

Model = StoredModel  # the base of TabularModel and LanguageModel
_M = TypeVar("_M", TabularModel, LanguageModel)


def _recipe(recipe: str | Path | dict[str, Any] | Recipe, overrides: list[str] | None) -> Recipe:
    if isinstance(recipe, (str, Path)):
        return load_recipe(recipe, overrides)
    return parse_recipe(recipe, overrides)


def validate(recipe: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """Parse and resolve a recipe (defaults filled in); raises RecipeError on mistakes."""
    return _recipe(recipe, overrides)


def train(
    recipe: str | Path | dict[str, Any] | Recipe,
    overrides: list[str] | None = None,
    store: str | Path | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> TabularModel | LanguageModel:
    """Train a recipe and store the model as a new version; returns the trained model."""
    started = time.perf_counter()
    parsed = _recipe(recipe, overrides)
    root = store_root(store)
    check_writable(root)
    out = console or Console(highlight=False)
    if parsed.task == "language-modeling":
        return train_language(parsed, root, resume, out, started)
    return train_tabular(parsed, root, resume, out, started)


def load(ref: str | Path, store: str | Path | None = None) -> TabularModel | LanguageModel:
    """Load ``NAME``, ``NAME@N`` or a model directory (safetensors and JSON only)."""
    path = resolve(str(ref), store_root(store))
    if read_json(path / "run.json").get("task") == "language-modeling":
        return LanguageModel.load(path)
    return TabularModel.load(path)


def evaluate(
    ref: str,
    data: str | Path | None = None,
    store: str | Path | None = None,
    console: Console | None = None,
) -> dict[str, dict[str, Any]]:
    """Metrics of a stored model on a file, or on the valid/test splits of its own data."""
    model = load(ref, store)
    if isinstance(model, LanguageModel):
        if data is not None:
            metrics = {Path(data).name: model.evaluate(check_text(Path(data)))}
        else:
            metrics = model.metrics
    elif data is not None:
        metrics = {Path(data).name: model.evaluate(read_table(data))}
    else:
        source = Path(model.recipe.data.source)
        if not source.exists():
            raise DataError(f"the training data {source} is gone; pass --data FILE to evaluate")
        metrics = model.evaluate_splits()
    if console is not None:
        labels = model.preprocessor.classes if isinstance(model, TabularModel) else None
        print_metrics(metrics, console, title=model.name, labels=labels)
    return metrics


def _load_as(kind: type[_M], ref: str, store: str | Path | None, verb: str) -> _M:
    """Load ``ref`` and check that ``verb`` fits it (predict for tables, generate for text)."""
    model = load(ref, store)
    if not isinstance(model, kind):
        is_lm = isinstance(model, LanguageModel)
        what = "a language model" if is_lm else f"a {model.recipe.task} model"
        raise DataError(
            f"{verb} is for {'language' if kind is LanguageModel else 'table'} models; "
            f"{model.name} is {what}: use `tensorsmith {'generate' if is_lm else 'predict'}`"
        )
    return model


def generate(
    ref: str,
    prompt: str,
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop: list[str] | None = None,
    store: str | Path | None = None,
    notes: GenerationNotes | None = None,
) -> Iterator[str]:
    """Stream the continuation of ``prompt`` from a stored language model, piece by piece."""
    model = _load_as(LanguageModel, ref, store, "generate")
    return model.stream(prompt, max_new_tokens, temperature, top_k, top_p, seed, stop, notes)


def predict(
    ref: str, data: str | Path, out: str | Path | None = None, store: str | Path | None = None
) -> pd.DataFrame:
    """Predictions for a file; written to ``out`` (CSV, TSV, Parquet or JSONL) when given."""
    model = _load_as(TabularModel, ref, store, "predict")
    frame = read_table(data)
    result = pd.concat([frame, model.predict(frame)], axis=1)
    if out is not None:
        _write_table(result, Path(out))
    return result


def _write_table(df: pd.DataFrame, path: Path) -> None:
    suffix = path.suffix.lower()
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".parquet":
        df.to_parquet(path, index=False)
    elif suffix in (".jsonl", ".ndjson"):
        df.to_json(path, orient="records", lines=True)
    elif suffix == ".tsv":
        df.to_csv(path, sep="\t", index=False)
    else:
        df.to_csv(path, index=False)


def models(name: str | None = None, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The stored versions, newest last."""
    return list_models(store_root(store), name)


def init_recipe(datafile: str | Path, target: str, out: str | Path | None = None) -> str:
    """A starter recipe for a table: task from the target column, paths relative to ``out``."""
    path = Path(datafile)
    df = read_table(path)
    check_columns(df, [target], "--target", path.name)
    kind = infer_type(df[target])
    task = "regression" if kind == "number" and df[target].nunique() > 20 else "classification"
    folder = Path(out).resolve().parent if out is not None else Path.cwd()
    try:
        source = str(path.resolve().relative_to(folder))
    except ValueError:
        source = str(path.resolve())
    types = {c: infer_type(df[c]) for c in df.columns if c != target}
    name = "".join(ch if ch.isalnum() else "-" for ch in path.stem.lower()).strip("-") or "model"
    recipe: dict[str, Any] = {
        "name": name,
        "task": task,
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
        "evaluate": {"gate": {"r2": ">= 0.5"} if task == "regression" else {"accuracy": ">= 0.8"}},
    }
    if not recipe["data"]["types"]:
        del recipe["data"]["types"]
    text = f"# starter recipe for {path.name}: edit, then `tensorsmith train`\n"
    text += yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    parse_recipe(yaml.safe_load(text), base_dir=folder)  # what we write must validate
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text
