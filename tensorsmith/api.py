"""The Python API, and the only module that knows every stage; the CLI is a thin face over it.

model = tensorsmith.train("recipe.yaml")
model.predict(df); model.evaluate(df)
tensorsmith.load("windsor-housing@2")

No stage here asks which task it holds: the task, the evaluation path, the training run and
the store each do their part through the ``Task`` interface.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from rich.console import Console

from tensorsmith.data.tables import write_table
from tensorsmith.errors import DataError, RecipeError
from tensorsmith.evaluation.evaluate import Evaluator
from tensorsmith.evaluation.evaluate import evaluate as evaluate_split
from tensorsmith.evaluation.gate import GateResult, check_gate, parse_gate
from tensorsmith.evaluation.metrics import MetricValue, check_metrics, monitor_mode
from tensorsmith.evaluation.plots import draw_plots
from tensorsmith.evaluation.report import format_gate, model_card, print_metrics
from tensorsmith.models import check_model
from tensorsmith.recipe import Recipe, load_recipe, parse_recipe, recipe_to_yaml
from tensorsmith.store.artifact import (
    Contents,
    check_writable,
    list_models,
    resolve,
    store_root,
    write_version,
)
from tensorsmith.tasks import TASKS, Outputs, Prepared, Task, create_task
from tensorsmith.tasks.predictor import Predictor
from tensorsmith.training.checkpoints import Checkpoints
from tensorsmith.training.optim import check_optimizer
from tensorsmith.training.run import Trained, train_module

__all__ = [
    "Model",
    "check_recipe",
    "evaluate",
    "generate",
    "init_recipe",
    "load",
    "models",
    "predict",
    "train",
    "validate",
]

RecipeLike = str | Path | dict[str, Any] | Recipe


class Model:
    """A stored model version: ``predict``, ``predict_proba``, ``generate``, ``evaluate``.

    A thin face over the :class:`~tensorsmith.tasks.predictor.Predictor` (which serving and
    compression use directly) that adds evaluation.
    """

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor

    path = property(lambda self: self.predictor.path)
    name = property(lambda self: self.predictor.name)
    recipe = property(lambda self: self.predictor.recipe)
    task = property(lambda self: self.predictor.task)
    module = property(lambda self: self.predictor.module)
    config = property(lambda self: self.predictor.config)
    run = property(lambda self: self.predictor.run)
    metrics = property(lambda self: self.predictor.metrics)

    def __repr__(self) -> str:
        return f"Model({self.name!r}, task={self.task.name!r}, path='{self.path}')"

    def predict(self, data: pd.DataFrame) -> pd.DataFrame:
        """Predictions, one row per input row: the label (or value) and class probabilities."""
        return self.predictor.predict(data)

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        return self.predictor.predict_proba(data)

    def stream(self, prompt: str, max_new_tokens: int = 200, **options: Any) -> Iterator[str]:
        return self.predictor.stream(prompt, max_new_tokens=max_new_tokens, **options)

    def generate(self, prompt: str, max_new_tokens: int = 200, **options: Any) -> str:
        return self.predictor.generate(prompt, max_new_tokens, **options)

    def evaluate(self, data: Any, metrics: list[str] | None = None) -> dict[str, MetricValue]:
        """The recipe's metrics on raw data with targets (a DataFrame, or text)."""
        names = metrics or self.recipe.evaluate.metrics
        check_metrics(names, self.task.metric_names, self.task.name)
        return evaluate_split(self.task, self.module, self.task.eval_split(data), names)

    def data_splits(self) -> dict[str, Any]:
        """The train / valid / test data of the recipe's own source, split as in training."""
        return self.task.read_splits()

    def evaluate_splits(self) -> dict[str, dict[str, MetricValue]]:
        """Re-read the recipe's own data and evaluate its valid and test splits."""
        splits = self.data_splits()
        return {k: self.evaluate(v) for k, v in splits.items() if k != "train" and len(v)}


# ----------------------------------------------------------------------------- recipes


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


# ----------------------------------------------------------------------------- train


def _monitor(task: Task, prepared: Prepared) -> tuple[str | None, str | None]:
    es = task.recipe.train.early_stopping
    if es is None:
        return None, None
    if es.monitor.startswith("valid_") and "valid" not in prepared.splits:
        raise RecipeError(
            f"train.early_stopping.monitor is {es.monitor} but the valid split is "
            "empty; set data.split.valid or monitor train_loss"
        )
    mode = es.mode if es.mode != "auto" else None
    return es.monitor, mode or monitor_mode(es.monitor, task.metric_names, "monitor")


def train(
    recipe: RecipeLike,
    overrides: list[str] | None = None,
    store: str | Path | None = None,
    resume: bool = False,
    console: Console | None = None,
) -> Model:
    """Train a recipe and store the model as a new version; returns the stored model."""
    started = time.perf_counter()
    parsed = validate(recipe, overrides)
    root = store_root(store)
    check_writable(root)
    out = console or Console(highlight=False)
    checkpoints = Checkpoints(root, parsed.name)
    state = checkpoints.load(parsed) if resume else None
    task = create_task(parsed)
    prepared = task.prepare(root / ".cache", out)
    for note in prepared.notes:
        out.print(f"{parsed.name}: {note}", markup=False)
    monitor, mode = _monitor(task, prepared)
    evaluator = Evaluator(task, prepared.splits, parsed.evaluate.metrics, monitor)
    trained = train_module(
        task,
        prepared,
        evaluator.in_loop if evaluator.has_valid else None,
        out,
        root / ".cache",
        state,
        partial(checkpoints.save, task.recipe),
        mode,
    )
    metrics = evaluator.final(trained.module)
    gate = _gate(task, metrics)
    version, path = _store(root, task, prepared, trained, evaluator, metrics, gate, started)
    checkpoints.discard()
    _report(out, task, trained, metrics, gate, version, path)
    return Model(Predictor.load(path))


def _judged(metrics: dict[str, Any]) -> str:
    """The split a gate is checked on: test when there is one, else valid."""
    return "test" if "test" in metrics else "valid"


def _gate(task: Task, metrics: dict[str, dict[str, MetricValue]]) -> GateResult | None:
    if not task.recipe.evaluate.gate:
        return None
    conditions = parse_gate(task.recipe.evaluate.gate, task.metric_names, task.name)
    return check_gate(conditions, metrics.get(_judged(metrics), {}))


def _artifact_recipe(recipe: Recipe) -> str:
    """The resolved recipe with data paths made absolute, so the artifact stands on its own."""
    data = yaml.safe_load(recipe_to_yaml(recipe))
    data["data"]["source"] = str(recipe.path(recipe.data.source).resolve())
    split = data["data"].get("split", {})
    for key in ("train", "valid", "test"):
        if isinstance(split.get(key), str):
            split[key] = str(recipe.path(split[key]).resolve())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def _store(
    root: Path,
    task: Task,
    prepared: Prepared,
    trained: Trained,
    evaluator: Evaluator,
    metrics: dict[str, dict[str, MetricValue]],
    gate_result: GateResult | None,
    started: float,
) -> tuple[int, Path]:
    recipe = task.recipe
    gate = gate_result.to_dict() if gate_result is not None else None
    run = {
        "name": recipe.name,
        "task": task.name,
        "arch": recipe.model.arch,
        **trained.record,
        "wall_seconds": time.perf_counter() - started,
        "dims": prepared.dims,
        prepared.size_unit: prepared.sizes,
        "key_metric": task.key_metric,
        "gate": gate,
        "parent": None,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    shown = evaluator.outputs.get(_judged(metrics))
    plots = task.plots(trained.module, shown) if shown is not None else {}
    contents = Contents(
        recipe_yaml=_artifact_recipe(recipe),
        module=trained.module,
        config={"task": task.name, "arch": recipe.model.arch, "dims": prepared.dims},
        files={**task.state(), "metrics.json": metrics},
        history=trained.fit.history,
        run=run,
        plots=partial(draw_plots, history=trained.fit.history, plots=plots)
        if recipe.evaluate.plots
        else None,
        card=lambda v: _card(task, trained, run, metrics, gate, v, shown),
    )
    return write_version(root, recipe.name, contents)


def _card(
    task: Task,
    trained: Trained,
    run: dict[str, Any],
    metrics: dict[str, dict[str, MetricValue]],
    gate: dict[str, Any] | None,
    version: int,
    shown: Outputs | None = None,
) -> str:
    recipe, fit = task.recipe, trained.fit
    length = f"{fit.epochs} epochs ({fit.steps} steps)" if fit.epochs else f"{fit.steps} steps"
    facts = [
        f"- task: {task.name}",
        f"- architecture: {recipe.model.arch} ({run['parameters']:,} parameters)",
        *task.card_lines(run),
        f"- trained {length} in {fit.train_seconds:.1f} s ({recipe.train.precision}), "
        f"seed {recipe.train.seed}",
    ]
    ref = f"{recipe.name}@{version}"
    sections = task.card_sections(trained.module, shown)
    return model_card(
        f"{recipe.name} (version {version})", facts, metrics, gate, sections, task.usage(ref)
    )


def _report(
    out: Console,
    task: Task,
    trained: Trained,
    metrics: dict[str, dict[str, MetricValue]],
    gate: GateResult | None,
    version: int,
    path: Path,
) -> None:
    print_metrics(metrics, out, title=f"{task.recipe.name}@{version}", labels=task.labels)
    if gate is not None:
        out.print(format_gate(gate))
    record = trained.record
    if "tokens_per_second" in record:
        mfu = f"{record['mfu']:.1%}" if record.get("mfu") is not None else "n/a"
        peak = record.get("peak_flops", 0.0) / 1e12
        out.print(
            f"{record['tokens_per_second']:,.0f} tokens/s, MFU {mfu} of {peak:.2f} TFLOP/s "
            f"({record['precision']})"
        )
    out.print(f"saved {path.resolve()}")


# ----------------------------------------------------------------------------- use


def load(ref: str | Path, store: str | Path | None = None) -> Model:
    """Load ``NAME``, ``NAME@N`` or a version directory (safetensors, JSON and YAML only)."""
    return Model(Predictor.load(resolve(str(ref), store_root(store))))


def _load_for(ref: str, store: str | Path | None, verb: str) -> Model:
    model = load(ref, store)
    if verb not in model.task.verbs:
        raise DataError(model.task.wrong_verb(verb))
    return model


def evaluate(
    ref: str,
    data: str | Path | None = None,
    store: str | Path | None = None,
    console: Console | None = None,
) -> dict[str, dict[str, MetricValue]]:
    """Metrics of a stored model on a file, or on the valid/test splits of its own data."""
    model = load(ref, store)
    if data is not None:
        metrics = {Path(data).name: model.evaluate(model.task.read_file(Path(data)))}
    else:
        try:
            metrics = model.evaluate_splits()
        except DataError as exc:
            raise DataError(
                f"{exc}; the training data of {model.name} cannot be read: pass --data FILE to "
                "evaluate on another file"
            ) from None
    if console is not None:
        print_metrics(metrics, console, title=model.name, labels=model.task.labels)
    return metrics


def generate(
    ref: str, prompt: str, store: str | Path | None = None, **options: Any
) -> Iterator[str]:
    """Stream the continuation of ``prompt`` from a stored language model, piece by piece."""
    return _load_for(ref, store, "generate").stream(prompt, **options)


def predict(
    ref: str, data: str | Path, out: str | Path | None = None, store: str | Path | None = None
) -> pd.DataFrame:
    """Predictions for a file; written to ``out`` (CSV, TSV, Parquet or JSONL) when given."""
    model = _load_for(ref, store, "predict")
    frame = model.task.read_inputs(Path(data))
    result = model.task.prediction_table(frame, model.predict(frame))
    if out is not None:
        write_table(result, out)
    return result


def models(name: str | None = None, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The stored versions, newest last."""
    return list_models(store_root(store), name)


def init_recipe(
    datafile: str | Path,
    target: str | None = None,
    out: str | Path | None = None,
    time: str | None = None,
) -> str:
    """A starter recipe for a table, a time series or an image folder: the first task in
    ``TASKS`` that recognises the data writes it; paths are relative to ``out``."""
    path = Path(datafile)
    if not path.exists():
        raise DataError(f"data file {path} does not exist; check the path")
    found = (TASKS[name].starter(path, target, time) for name in TASKS)
    recipe = next((r for r in found if r is not None), None)
    if recipe is None:
        raise DataError(
            f"cannot tell what to train on {path.name}: expected a table with --target COL "
            "(and --time COL for a time series), or a folder with one sub-folder of images "
            "per class"
        )
    folder = Path(out).resolve().parent if out is not None else Path.cwd()
    with contextlib.suppress(ValueError):  # a source outside the folder stays absolute
        recipe["data"]["source"] = str(Path(recipe["data"]["source"]).relative_to(folder))
    text = f"# starter recipe for {path.name}: edit, then `tensorsmith train`\n"
    text += yaml.safe_dump(recipe, sort_keys=False, default_flow_style=None)
    check_recipe(parse_recipe(yaml.safe_load(text), base_dir=folder))  # what we write validates
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text
