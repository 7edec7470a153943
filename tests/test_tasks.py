"""The contract every registered task keeps (scikit-learn's ``check_estimator`` habit).

Each name in ``tensorsmith.tasks.TASKS`` runs through the same checks on tiny data: it has a
recipe class, its metric and loss names are registered, ``prepare`` gives a feed, sizes and
evaluation splits, its loss trains, the one evaluation path computes every metric it names,
and its fitted state saved as files and read back gives the same outputs and predictions. A
new task without an entry in ``CASES`` fails here until someone gives it one.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tiny
import torch
from rich.console import Console

from tensorsmith.evaluation.evaluate import collect
from tensorsmith.evaluation.metrics import METRICS, compute_metrics
from tensorsmith.models import build_model
from tensorsmith.recipe import RECIPES, parse_recipe
from tensorsmith.tasks import TASKS, Task, create_task
from tensorsmith.tasks.losses import LOSSES

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 8


def _table(folder: Path, kind: str) -> Path:
    rng = np.random.default_rng(0)
    n = 60
    df = pd.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": rng.uniform(0, 5, n),
            "color": rng.choice(["red", "green", "blue"], n),
        }
    )
    if kind == "number":
        df["y"] = 2 * df.a - df.b + rng.normal(0, 0.1, n)
    else:
        df["y"] = np.where(df.a + rng.normal(0, 0.3, n) > 0, "up", "down")
    path = folder / "table.csv"
    df.to_csv(path, index=False)
    return path


def _table_recipe(task: str, kind: str) -> Callable[[Path], dict[str, Any]]:
    def make(folder: Path) -> dict[str, Any]:
        return {
            "name": f"tiny-{task}",
            "task": task,
            "data": {"source": str(_table(folder, kind)), "target": "y"},
            "model": {"arch": "mlp", "hidden": [4]},
            "train": {"epochs": 2, "batch_size": 8},
        }

    return make


def _lm_recipe(folder: Path) -> dict[str, Any]:
    (folder / "corpus.txt").write_text(TEXT, encoding="utf-8")
    return {
        "name": "tiny-lm",
        "task": "language-modeling",
        "data": {"source": str(folder / "corpus.txt")},
        "model": {"arch": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 8},
        "train": {"max_steps": 3, "batch_size": 4},
    }


def _image_recipe(folder: Path) -> dict[str, Any]:
    return {
        "name": "tiny-images",
        "task": "image-classification",
        "data": {
            "source": str(tiny.image_folder(folder / "images")),
            "split": {"valid": 0.25, "test": 0.25},
            "augment": {"crop_padding": 1, "flip": True},
            "workers": 0,
        },
        "model": {"arch": "cnn", "channels": [4], "head": [4]},
        "train": {"epochs": 2, "batch_size": 4},
    }


def _forecast_recipe(folder: Path) -> dict[str, Any]:
    return {
        "name": "tiny-forecast",
        "task": "sequence-regression",
        "data": {
            "source": str(tiny.series_csv(folder / "series.csv")),
            "time": "t",
            "target": "y",
            "lookback": 5,
            "horizon": 2,
        },
        "model": {"arch": "rnn", "cell": "gru", "hidden_size": 4},
        "train": {"epochs": 2, "batch_size": 8},
    }


def _sequences_recipe(folder: Path) -> dict[str, Any]:
    return {
        "name": "tiny-sequences",
        "task": "sequence-classification",
        "data": {
            "source": str(tiny.sequences_csv(folder / "sequences.csv")),
            "id": "seq",
            "time": "step",
            "target": "y",
            "split": {"valid": 0.25, "test": 0.25},
        },
        "model": {"arch": "transformer", "n_layer": 1, "n_head": 2, "n_embd": 8},
        "train": {"epochs": 2, "batch_size": 8},
    }


def _text_recipe(task: str, number: bool) -> Callable[[Path], dict[str, Any]]:
    def make(folder: Path) -> dict[str, Any]:
        return {
            "name": f"tiny-{task}",
            "task": task,
            "data": {
                "source": str(tiny.texts_csv(folder / "texts.csv", number=number)),
                "target": "y",
                "max_length": 16,
                "tokenizer": {"kind": "wordpiece", "vocab_size": 60},
            },
            "model": {"arch": "rnn", "hidden_size": 4, "bidirectional": True, "pooling": "mean"}
            if number
            else {"arch": "transformer", "n_layer": 1, "n_head": 2, "n_embd": 8},
            "train": {"epochs": 2, "batch_size": 8},
        }

    return make


def _without_target(raw: Any) -> Any:
    return raw.drop(columns=["y"]).head(5)


@dataclass
class Case:
    recipe: Callable[[Path], dict[str, Any]]
    rows: Callable[[Any], Any] = _without_target  # raw valid data → records to predict


CASES: dict[str, Case] = {
    "regression": Case(_table_recipe("regression", "number")),
    "classification": Case(_table_recipe("classification", "label")),
    "language-modeling": Case(_lm_recipe),
    "image-classification": Case(_image_recipe, lambda raw: raw[["path"]].head(5)),
    "sequence-regression": Case(_forecast_recipe, lambda raw: raw),  # the target is an input
    "sequence-classification": Case(_sequences_recipe, lambda raw: raw.drop(columns=["y"])),
    "text-classification": Case(_text_recipe("text-classification", number=False)),
    "text-regression": Case(_text_recipe("text-regression", number=True)),
}
NAMES = sorted(TASKS)


def _prepared(name: str, folder: Path) -> tuple[Task, Any]:
    assert name in CASES, f"task '{name}' is registered in TASKS but has no case in CASES"
    task = create_task(parse_recipe(CASES[name].recipe(folder)))
    return task, task.prepare(folder / "cache", Console(file=io.StringIO()))


def test_every_task_has_a_case_and_a_recipe() -> None:
    assert set(CASES) == set(TASKS) == set(RECIPES)


@pytest.mark.parametrize("name", NAMES)
def test_names_are_registered(name: str) -> None:
    task = TASKS[name]
    assert task.name == name
    assert all(m in METRICS for m in task.metric_names)
    assert task.key_metric in task.metric_names
    assert all(loss in LOSSES for loss in task.losses)
    assert set(task.loop_metrics) <= set(task.metric_names)
    assert task.verbs and set(task.verbs) <= {"predict", "generate"}


@pytest.mark.parametrize("name", NAMES)
def test_prepare_gives_a_feed_sizes_and_splits(name: str, tmp_path: Path) -> None:
    _, prepared = _prepared(name, tmp_path)
    feed = prepared.train
    assert feed.unit in ("epoch", "step") and feed.tokens_per_sample >= 1
    assert prepared.dims and prepared.sizes["train"] > 0
    assert "valid" in prepared.splits
    first = next(iter(feed.batches(0))) if feed.unit == "epoch" else next(feed.stream(0))
    again = next(iter(feed.batches(0))) if feed.unit == "epoch" else next(feed.stream(0))
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))  # seeded


@pytest.mark.parametrize("name", NAMES)
def test_loss_trains_and_evaluation_computes_every_metric(name: str, tmp_path: Path) -> None:
    task, prepared = _prepared(name, tmp_path)
    torch.manual_seed(0)
    module = build_model(task.recipe.model, prepared.dims)
    feed = prepared.train
    batch = next(iter(feed.batches(0))) if feed.unit == "epoch" else next(feed.stream(0))
    loss = task.loss()(module, batch)
    assert loss.dim() == 0 and math.isfinite(float(loss.detach()))
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())

    outputs = collect(task, module, prepared.splits["valid"].batches())
    assert math.isfinite(outputs.loss) and outputs.loss > 0
    metrics = compute_metrics(task.metric_names, outputs)
    json.dumps(metrics)  # plain values
    for key, value in metrics.items():
        if METRICS[key].scalar and key != "roc_auc":  # AUC is NaN with one class present
            assert math.isfinite(float(value)), key  # type: ignore[arg-type]


@pytest.mark.parametrize("name", NAMES)
def test_loss_is_finite_under_bf16_autocast(name: str, tmp_path: Path) -> None:
    task, prepared = _prepared(name, tmp_path)
    torch.manual_seed(0)
    module = build_model(task.recipe.model, prepared.dims)
    feed = prepared.train
    batch = next(iter(feed.batches(0))) if feed.unit == "epoch" else next(feed.stream(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = task.loss()(module, batch)
    loss.backward()
    assert math.isfinite(float(loss.detach()))


@pytest.mark.parametrize("name", NAMES)
def test_state_round_trips_through_files(name: str, tmp_path: Path) -> None:
    task, prepared = _prepared(name, tmp_path)
    torch.manual_seed(0)
    module = build_model(task.recipe.model, prepared.dims).eval()
    folder = tmp_path / "version"
    folder.mkdir()
    for file, content in task.state().items():
        text = content if isinstance(content, str) else json.dumps(content)
        (folder / file).write_text(text, encoding="utf-8")
    again = TASKS[name].from_state(task.recipe, folder)

    raw = task.read_splits()["valid"]
    before = collect(task, module, task.eval_split(raw).batches())
    after = collect(again, module, again.eval_split(raw).batches())
    assert after.loss == pytest.approx(before.loss, rel=1e-6)
    if "predict" in again.verbs:
        rows = CASES[name].rows(raw)
        predicted = again.predict(module, rows)
        pd.testing.assert_frame_equal(predicted, task.predict(module, rows))
        assert len(predicted) and predicted.notna().any(axis=None)
    else:
        text = "".join(again.stream(module, "To be", max_new_tokens=5, temperature=0.0))
        assert text == "".join(task.stream(module, "To be", max_new_tokens=5, temperature=0.0))
        assert len(text) > 0
