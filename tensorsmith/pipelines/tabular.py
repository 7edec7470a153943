"""Regression and classification on tables: the recipe → data → trainer → evaluation → store."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console
from torch import nn

from tensorsmith.data.preprocess import Encoded, Preprocessor
from tensorsmith.data.sources import check_columns
from tensorsmith.data.tabular import Batches, check_target, load_tabular, read_splits
from tensorsmith.errors import DataError, RecipeError
from tensorsmith.evaluation.gate import check_gate, parse_gate
from tensorsmith.evaluation.metrics import KEY_METRIC, compute_metrics, validate_metrics
from tensorsmith.evaluation.plots import plot_decision_boundary, plot_task
from tensorsmith.evaluation.report import format_gate, print_metrics
from tensorsmith.models import build_model
from tensorsmith.pipelines.common import (
    StoredModel,
    load_resume,
    make_callbacks,
    pick_device,
    run_info,
    write_artifact,
)
from tensorsmith.recipe import Recipe, recipe_to_yaml
from tensorsmith.store.artifact import read_json
from tensorsmith.training.losses import build_loss
from tensorsmith.training.trainer import Trainer

__all__ = ["TabularModel", "train_tabular"]


def _resolve_loss(recipe: Recipe, n_classes: int) -> str:
    loss = recipe.train.loss
    if recipe.task == "regression":
        if loss in ("bce", "cross_entropy"):
            raise RecipeError(f"train.loss '{loss}' is for classification; use mse, mae or huber")
        return loss or "mse"
    if loss in ("mse", "mae", "huber"):
        raise RecipeError(f"train.loss '{loss}' is for regression; use bce or cross_entropy")
    if loss == "bce" and n_classes > 2:
        raise RecipeError(
            f"train.loss bce is for two classes; the target has {n_classes}: use cross_entropy"
        )
    return loss or ("bce" if n_classes == 2 else "cross_entropy")


class TabularModel(StoredModel):
    """A trained table model: ``predict(df)``, ``predict_proba(df)``, ``evaluate(df)``."""

    def __init__(
        self,
        path: Path,
        recipe: Recipe,
        module: nn.Module,
        prep: Preprocessor,
        run: dict[str, Any],
        metrics: dict[str, Any],
    ) -> None:
        super().__init__(path, recipe, module, run, metrics)
        self.preprocessor = prep

    @classmethod
    def load(cls, path: Path) -> TabularModel:
        recipe, module, run, metrics = cls._read(path)
        prep = Preprocessor.from_dict(read_json(path / "preprocess.json"))
        return cls(path, recipe, module, prep, run, metrics)

    # ------------------------------------------------------------------ inference

    def _encode(self, df: pd.DataFrame, with_target: bool) -> Encoded:
        if not isinstance(df, pd.DataFrame):
            raise DataError(f"expected a pandas DataFrame, got {type(df).__name__}")
        check_columns(
            df, self.preprocessor.features, "features the model was trained on", "the data"
        )
        if len(df) == 0:
            raise DataError("the data has no rows to predict")
        return self.preprocessor.transform(df, with_target=with_target)

    def _scores(self, enc: Encoded) -> np.ndarray:
        with torch.no_grad():
            x = torch.from_numpy(enc.x)
            cat = torch.from_numpy(enc.cat) if enc.cat is not None else None
            return self.module(x, cat).float().numpy()

    def _proba(self, scores: np.ndarray) -> np.ndarray:
        if scores.shape[1] == 1:  # one logit: sigmoid gives P(class 1)
            p1 = 1.0 / (1.0 + np.exp(-scores[:, 0].astype(np.float64)))
            return np.stack([1.0 - p1, p1], axis=1)
        z = scores.astype(np.float64) - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def predict_proba(self, df: pd.DataFrame) -> np.ndarray:
        if self.recipe.task != "classification":
            raise DataError("predict_proba is for classification models")
        return self._proba(self._scores(self._encode(df, with_target=False)))

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """Predictions, one row per input row: the label (or value) and class probabilities."""
        scores = self._scores(self._encode(df, with_target=False))
        target = self.preprocessor.target
        out = pd.DataFrame(index=df.index)
        if self.recipe.task == "regression":
            out[f"{target}_predicted"] = self.preprocessor.decode_regression(scores[:, 0])
            return out
        proba = self._proba(scores)
        classes = self.preprocessor.classes
        out[f"{target}_predicted"] = [classes[i] for i in proba.argmax(axis=1)]
        for i, c in enumerate(classes):
            out[f"proba_{c}"] = proba[:, i]
        return out

    def _truth_and_outputs(self, enc: Encoded) -> dict[str, Any]:
        scores = self._scores(enc)
        assert enc.y is not None
        if self.recipe.task == "regression":
            prep = self.preprocessor
            return {
                "y_true": prep.decode_regression(enc.y),
                "y_pred": prep.decode_regression(scores[:, 0]),
            }
        proba = self._proba(scores)
        return {"y_true": enc.y, "y_pred": proba.argmax(axis=1), "proba": proba}

    def evaluate(self, df: pd.DataFrame, metrics: list[str] | None = None) -> dict[str, Any]:
        """The recipe's metrics on a frame that has the target column."""
        check_target(df, self.preprocessor.target, self.recipe.task, "the data")
        enc = self._encode(df, with_target=True)
        out = self._truth_and_outputs(enc)
        labels = self.preprocessor.classes or None
        return compute_metrics(
            self.recipe.task,
            metrics or self.recipe.evaluate.metrics,
            out["y_true"],
            out["y_pred"],
            out.get("proba"),
            labels,
        )

    def data_splits(self) -> dict[str, pd.DataFrame]:
        """The train / valid / test rows of the recipe's own data, split as in training."""
        return read_splits(self.recipe)

    def evaluate_splits(self) -> dict[str, dict[str, Any]]:
        """Re-split the recipe's own data (same seed) and evaluate valid and test."""
        frames = self.data_splits()
        return {k: self.evaluate(f) for k, f in frames.items() if k != "train" and len(f)}


def _evaluator(
    task: str, loss_fn: Any, valid: Encoded | None, monitor: str | None, labels: list[str]
) -> Any:
    if valid is None or valid.y is None or len(valid.y) == 0:
        return None
    x = torch.from_numpy(valid.x)
    cat = torch.from_numpy(valid.cat) if valid.cat is not None else None
    y = torch.as_tensor(np.array(valid.y))
    metric = monitor.removeprefix("valid_") if monitor and monitor != "valid_loss" else None

    def evaluate(model: nn.Module) -> dict[str, float]:
        out = model(x, cat)
        row = {"valid_loss": float(loss_fn(out, y))}
        if metric is not None and task == "regression":
            value = compute_metrics(task, [metric], y.numpy(), out.float().squeeze(-1).numpy())
            row[f"valid_{metric}"] = float(value[metric])  # type: ignore[arg-type]
        elif metric is not None:
            scores = out.float()
            if scores.shape[1] == 1:
                p1 = torch.sigmoid(scores[:, 0])
                proba = torch.stack([1.0 - p1, p1], dim=1)
            else:
                proba = torch.softmax(scores, dim=1)
            value = compute_metrics(
                task, [metric], y.numpy(), proba.argmax(1).numpy(), proba.numpy(), labels
            )
            row[f"valid_{metric}"] = float(value[metric])  # type: ignore[arg-type]
        return row

    return evaluate


def train_tabular(
    recipe: Recipe, root: Path, resume: bool, console: Console, started: float
) -> TabularModel:
    validate_metrics(recipe.task, recipe.evaluate.metrics)
    parse_gate(recipe.evaluate.gate, recipe.task)
    checkpoint = load_resume(root, recipe, resume)
    data = load_tabular(recipe)
    prep = data.preprocessor
    if data.dropped_text:
        console.print(
            f"note: text columns {', '.join(data.dropped_text)} are not used by "
            f"model.arch {recipe.model.arch}"
        )
    loss_name = _resolve_loss(recipe, prep.n_classes)
    recipe = recipe.model_copy(
        update={"train": recipe.train.model_copy(update={"loss": loss_name})}
    )
    n_outputs = 1 if loss_name in ("mse", "mae", "huber", "bce") else prep.n_classes
    train_enc = data.encoded["train"]
    dims = {
        "n_inputs": int(train_enc.x.shape[1]),
        "n_outputs": n_outputs,
        "cardinalities": prep.cardinalities(),
    }
    torch.manual_seed(recipe.train.seed)
    module = build_model(recipe.model, dims)
    assert train_enc.y is not None
    loss_fn = build_loss(
        loss_name,
        prep.n_classes,
        recipe.train.class_weights,
        torch.as_tensor(np.array(train_enc.y)) if prep.n_classes else None,
        prep.classes,
    )
    if loss_name == "bce":  # BCE takes float targets: convert once, not every step
        train_enc = Encoded(train_enc.x, train_enc.cat, train_enc.y.astype(np.float32))
    batches = Batches(train_enc, recipe.train.batch_size, recipe.train.seed)
    valid = data.encoded["valid"] if len(data.frames["valid"]) else None
    es = recipe.train.early_stopping
    if es is not None and valid is None and es.monitor.startswith("valid_"):
        raise RecipeError(
            f"train.early_stopping.monitor is {es.monitor} but the valid split is "
            "empty; set data.split.valid or monitor train_loss"
        )
    evaluate = _evaluator(recipe.task, loss_fn, valid, es.monitor if es else None, prep.classes)
    epochs = int(recipe.train.epochs or 1)
    meta = {"recipe": recipe_to_yaml(recipe), "dims": dims}
    callbacks = make_callbacks(recipe, root, epochs, "epoch", "samples", meta, console)
    trainer = Trainer(recipe.train, callbacks, device=pick_device())
    fit = trainer.fit(
        module, batches, lambda m, b: loss_fn(m(*b[:-1]), b[-1]), evaluate, resume=checkpoint
    )
    module = module.cpu().eval()
    model = TabularModel(Path("."), recipe, module, prep, {}, {})
    # final metrics, gate, plots
    splits = {k: v for k, v in data.encoded.items() if k != "train" and len(data.frames[k])}
    outputs = {k: model._truth_and_outputs(v) for k, v in splits.items()}
    labels = prep.classes or None
    metrics = {
        k: compute_metrics(
            recipe.task, recipe.evaluate.metrics, o["y_true"], o["y_pred"], o.get("proba"), labels
        )
        for k, o in outputs.items()
    }
    key = KEY_METRIC[recipe.task]
    judged = "test" if "test" in metrics else "valid"
    gate = (
        check_gate(recipe.evaluate.gate, metrics.get(judged, {})) if recipe.evaluate.gate else None
    )

    def plots(folder: Path) -> None:
        shown = outputs.get(judged)
        plot_task(
            recipe.task,
            folder,
            history=fit.history,
            labels=labels,
            **({k: shown[k] for k in ("y_true", "y_pred", "proba") if k in shown} if shown else {}),
        )
        types = prep.types
        if (
            recipe.task == "classification"
            and len(prep.features) == 2
            and all(types[f] == "number" for f in prep.features)
            and dims["n_inputs"] == 2
        ):
            frame = data.frames["train"]
            raw = frame[prep.features].to_numpy(dtype=float)
            plot_decision_boundary(
                lambda grid: model.predict_proba(pd.DataFrame(grid, columns=prep.features)),
                raw,
                prep.encode_target(frame[prep.target]),
                prep.features,
                prep.classes,
                folder / "decision_boundary.png",
            )

    n_params = sum(p.numel() for p in module.parameters())
    run = run_info(
        recipe,
        fit,
        time.perf_counter() - started,
        trainer.device.type,
        n_params,
        6.0 * n_params,
        {
            "dims": dims,
            "key_metric": key,
            "rows": {k: len(v) for k, v in data.frames.items()},
            "gate": gate.to_dict() if gate else None,
        },
    )
    files = {"preprocess.json": prep.to_dict(), "metrics.json": metrics}
    version, path = write_artifact(
        root,
        recipe,
        module,
        files,
        fit.history,
        run,
        plots if recipe.evaluate.plots else None,
        lambda v: _card(recipe, v, run, metrics, gate.to_dict() if gate else None),
    )
    run["wall_seconds"] = time.perf_counter() - started
    model.path, model.run, model.metrics = path, run, metrics
    print_metrics(metrics, console, title=f"{recipe.name}@{version}", labels=labels)
    if gate is not None:
        console.print(format_gate(gate))
    console.print(f"saved {path}")
    return model


def _card(
    recipe: Recipe,
    version: int,
    run: dict[str, Any],
    metrics: dict[str, Any],
    gate: dict[str, Any] | None,
) -> str:
    lines = [
        f"# {recipe.name} (version {version})",
        "",
        f"- task: {recipe.task}",
        f"- architecture: {recipe.model.arch} ({run['parameters']:,} parameters)",
        f"- data: {Path(recipe.data.source).name}, target `{recipe.data.target}`; rows "
        + ", ".join(f"{k} {v}" for k, v in run["rows"].items()),
        f"- trained {run['epochs']} epochs ({run['steps']} steps) in "
        f"{run['train_seconds']:.1f} s, seed {recipe.train.seed}",
        "",
        "## Metrics",
        "",
        "| metric | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    names = [n for n in recipe.evaluate.metrics if n != "confusion_matrix"]
    for n in names:
        cells = [f"{metrics[s].get(n, float('nan')):.4g}" for s in metrics]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    if gate is not None:
        conds = ", ".join(f"{c['metric']} {c['op']} {c['threshold']}" for c in gate["conditions"])
        lines += ["", f"Gate: {'passed' if gate['passed'] else 'failed'} ({conds})"]
    lines += [
        "",
        "## Use",
        "",
        "```",
        f"tensorsmith predict {recipe.name}@{version} --data FILE",
        "```",
        "",
    ]
    return "\n".join(lines)
