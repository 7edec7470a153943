"""Using stored models: load, evaluate, predict, generate, list."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from rich.console import Console

from tensorsmith.api.model import Model
from tensorsmith.data.tables import table_format, write_table
from tensorsmith.data.text import DataWarning
from tensorsmith.errors import DataError
from tensorsmith.evaluation.metrics import MetricValue
from tensorsmith.evaluation.report import print_metrics
from tensorsmith.store.artifact import resolve, store_root
from tensorsmith.tasks.predictor import Predictor


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
    if out is not None:  # before the work: a bad --out fails at once
        if Path(out).is_dir():
            raise DataError(f"--out {out} is a directory; give a file name such as preds.csv")
        table_format(Path(out), "write")
    model = _load_for(ref, store, "predict")
    with warnings.catch_warnings(record=True) as said:  # truncated texts, resized images …
        warnings.simplefilter("always", DataWarning)
        frame = model.task.read_inputs(Path(data))
        predictions = model.predictor.predict(frame)
    result = model.task.prediction_table(frame, predictions)
    notes = [str(w.message) for w in said if issubclass(w.category, DataWarning)]
    for w in said:
        if not issubclass(w.category, DataWarning):
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)
    result.attrs["notes"] = [*notes, *predictions.attrs.get("notes", [])]
    if out is not None:
        write_table(result, out)
    return result
