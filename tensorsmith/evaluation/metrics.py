"""Metrics by task, computed with scikit-learn and looked up by name.

``METRICS`` maps a lower-case metric name to a :class:`Metric` (the tasks it fits and the function
that computes it). Classification inputs are integer class indices ``0..K-1`` and, for the metrics
that need them, an ``(N, K)`` array of probabilities. Language-model metrics come from a mean loss,
so a language-model caller uses :func:`lm_metrics` (or passes ``loss=`` to
:func:`compute_metrics`).

``sklearn.metrics`` is imported inside the functions: importing it costs ~0.8 s, which every
command that merely imports this module (``validate``, ``plan``, ``serve``) would pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from tensorsmith.errors import RecipeError, did_you_mean
from tensorsmith.registry import Registry

__all__ = [
    "DEFAULT_METRICS",
    "KEY_METRIC",
    "LOWER_IS_BETTER",
    "METRICS",
    "TASKS",
    "TASK_METRICS",
    "Metric",
    "MetricInputs",
    "MetricValue",
    "compute_metrics",
    "lm_metrics",
    "validate_metrics",
]

MetricValue = float | list[list[int]]

TASKS = ("regression", "classification", "language-modeling")


@dataclass(frozen=True)
class MetricInputs:
    """What a metric function may read; ``n_classes`` is set for classification."""

    y_true: np.ndarray | None = None
    y_pred: np.ndarray | None = None
    proba: np.ndarray | None = None
    n_classes: int = 0
    loss: float | None = None


@dataclass(frozen=True)
class Metric:
    """A named metric: the tasks it fits and how to compute it."""

    name: str
    tasks: tuple[str, ...]
    fn: Callable[[MetricInputs], MetricValue]
    needs_proba: bool = False


METRICS: Registry[Metric] = Registry("metric", "evaluate.metrics")


def _arrays(inp: MetricInputs) -> tuple[np.ndarray, np.ndarray]:
    if inp.y_true is None or inp.y_pred is None:
        raise ValueError("this metric needs y_true and y_pred")
    return inp.y_true, inp.y_pred


def _proba(inp: MetricInputs) -> np.ndarray:
    if inp.proba is None:
        raise ValueError("this metric needs class probabilities (proba)")
    return inp.proba


def _labels(inp: MetricInputs) -> list[int]:
    return list(range(inp.n_classes))


# -- regression -------------------------------------------------------------------------------


def _mse(inp: MetricInputs) -> float:
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(*_arrays(inp)))


def _rmse(inp: MetricInputs) -> float:
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(*_arrays(inp)))


def _mae(inp: MetricInputs) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(*_arrays(inp)))


def _r2(inp: MetricInputs) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(*_arrays(inp)))


def _mape(inp: MetricInputs) -> float:
    from sklearn.metrics import mean_absolute_percentage_error

    return float(mean_absolute_percentage_error(*_arrays(inp)))


# -- classification ---------------------------------------------------------------------------


def _accuracy(inp: MetricInputs) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(*_arrays(inp)))


def _prf(which: str, average: str | None) -> Callable[[MetricInputs], float]:
    """precision / recall / f1: binary (positive class 1) for 2 classes, else macro."""

    def fn(inp: MetricInputs) -> float:
        from sklearn import metrics

        score = {
            "precision": metrics.precision_score,
            "recall": metrics.recall_score,
            "f1": metrics.f1_score,
        }[which]
        avg = average or ("binary" if inp.n_classes <= 2 else "macro")
        y_true, y_pred = _arrays(inp)
        if avg == "binary":
            return float(score(y_true, y_pred, average="binary", pos_label=1, zero_division=0))
        return float(score(y_true, y_pred, labels=_labels(inp), average=avg, zero_division=0))

    return fn


def _roc_auc(inp: MetricInputs) -> float:
    """Binary: probability of class 1; multi-class: one-vs-rest, macro average.

    NaN when ``y_true`` holds a single class (the score is undefined there).
    """
    from sklearn.metrics import roc_auc_score

    y_true = _arrays(inp)[0]
    proba = _proba(inp)
    if len(np.unique(y_true)) < 2:
        return math.nan
    if inp.n_classes <= 2:
        positive = proba[:, 1] if proba.ndim == 2 else proba
        return float(roc_auc_score(y_true, positive))
    return float(
        roc_auc_score(y_true, proba, multi_class="ovr", average="macro", labels=_labels(inp))
    )


def _log_loss(inp: MetricInputs) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(_arrays(inp)[0], _proba(inp), labels=_labels(inp)))


def _confusion_matrix(inp: MetricInputs) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(*_arrays(inp), labels=_labels(inp))
    return [[int(v) for v in row] for row in cm]


# -- language modeling ------------------------------------------------------------------------


def _loss(inp: MetricInputs) -> float:
    if inp.loss is None:
        raise ValueError("language-model metrics need the mean loss (loss=...)")
    return float(inp.loss)


def _perplexity(inp: MetricInputs) -> float:
    loss = _loss(inp)
    return math.exp(loss) if loss < 709.0 else math.inf  # exp overflows a float past ~709.78


_R, _C, _L = ("regression",), ("classification",), ("language-modeling",)

METRICS.register("mse", Metric("mse", _R, _mse))
METRICS.register("rmse", Metric("rmse", _R, _rmse))
METRICS.register("mae", Metric("mae", _R, _mae))
METRICS.register("r2", Metric("r2", _R, _r2))
METRICS.register("mape", Metric("mape", _R, _mape))
METRICS.register("accuracy", Metric("accuracy", _C, _accuracy))
METRICS.register("precision", Metric("precision", _C, _prf("precision", None)))
METRICS.register("recall", Metric("recall", _C, _prf("recall", None)))
METRICS.register("f1", Metric("f1", _C, _prf("f1", None)))
METRICS.register("precision_macro", Metric("precision_macro", _C, _prf("precision", "macro")))
METRICS.register("recall_macro", Metric("recall_macro", _C, _prf("recall", "macro")))
METRICS.register("f1_macro", Metric("f1_macro", _C, _prf("f1", "macro")))
METRICS.register("roc_auc", Metric("roc_auc", _C, _roc_auc, needs_proba=True))
METRICS.register("log_loss", Metric("log_loss", _C, _log_loss, needs_proba=True))
METRICS.register("confusion_matrix", Metric("confusion_matrix", _C, _confusion_matrix))
METRICS.register("loss", Metric("loss", _L, _loss))
METRICS.register("perplexity", Metric("perplexity", _L, _perplexity))

TASK_METRICS: dict[str, tuple[str, ...]] = {
    task: tuple(name for name in METRICS if task in METRICS[name].tasks) for task in TASKS
}
DEFAULT_METRICS: dict[str, list[str]] = {
    "regression": ["rmse", "mae", "r2"],
    "classification": ["accuracy", "precision", "recall", "f1", "roc_auc", "confusion_matrix"],
    "language-modeling": ["loss", "perplexity"],
}
KEY_METRIC: dict[str, str] = {
    "regression": "r2",
    "classification": "accuracy",
    "language-modeling": "perplexity",
}
# For early stopping / model selection: every other scalar metric is "higher is better".
LOWER_IS_BETTER = frozenset({"mse", "rmse", "mae", "mape", "log_loss", "loss", "perplexity"})


def validate_metrics(task: str, names: Sequence[str]) -> list[str]:
    """Check that every name is a metric that fits ``task``; return the names as a list.

    Raises :class:`RecipeError` naming ``evaluate.metrics``, the nearest valid name and the
    choices for the task.
    """
    if task not in TASK_METRICS:
        raise RecipeError(
            f"unknown task '{task}' at task{did_you_mean(task, TASKS)} choices: {', '.join(TASKS)}"
        )
    valid = TASK_METRICS[task]
    for name in names:
        METRICS.get(name)  # unknown name: "unknown metric 'rsme' … did you mean 'rmse'?"
        if name not in valid:
            raise RecipeError(
                f"metric '{name}' at evaluate.metrics does not fit task '{task}'"
                f"{did_you_mean(name, valid)} choices for {task}: {', '.join(valid)}"
            )
    return list(names)


def _n_classes(y_true: np.ndarray, y_pred: np.ndarray, proba: np.ndarray | None) -> int:
    if proba is not None and proba.ndim == 2:
        return int(proba.shape[1])
    seen = max(int(np.max(y_true, initial=0)), int(np.max(y_pred, initial=0))) + 1
    return max(seen, 2)


def compute_metrics(
    task: str,
    names: Sequence[str],
    y_true: np.ndarray | None = None,
    y_pred: np.ndarray | None = None,
    proba: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    *,
    loss: float | None = None,
) -> dict[str, MetricValue]:
    """Compute the named metrics for ``task``; values are plain floats (or a nested list).

    Classification: ``y_true``/``y_pred`` are class indices ``0..K-1``; ``proba`` is ``(N, K)``
    (``K`` = 2 for binary). ``K`` is taken from ``labels``, else ``proba``, else the data.
    Language modeling: pass ``loss`` (the mean token cross-entropy); see :func:`lm_metrics`.
    """
    validate_metrics(task, names)
    if task == "language-modeling":
        return {k: v for k, v in lm_metrics(_require_loss(loss), names).items()}
    if y_true is None or y_pred is None:
        raise ValueError(f"{task} metrics need y_true and y_pred")
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    n_classes = 0
    if task == "classification":
        y_true, y_pred = y_true.astype(np.int64), y_pred.astype(np.int64)
        n_classes = len(labels) if labels is not None else _n_classes(y_true, y_pred, proba)
        if proba is not None:
            proba = np.asarray(proba, dtype=np.float64)
    else:
        y_true, y_pred = y_true.astype(np.float64), y_pred.astype(np.float64)
    inp = MetricInputs(y_true, y_pred, proba, n_classes)
    out: dict[str, MetricValue] = {}
    for name in names:
        metric = METRICS[name]
        if metric.needs_proba and proba is None:
            raise ValueError(f"metric '{name}' needs class probabilities (proba)")
        out[name] = metric.fn(inp)
    return out


def _require_loss(loss: float | None) -> float:
    if loss is None:
        raise ValueError("language-modeling metrics are computed from the mean loss: pass loss=")
    return float(loss)


def lm_metrics(mean_loss: float, names: Sequence[str] = ("loss", "perplexity")) -> dict[str, float]:
    """Language-model metrics from the mean token cross-entropy (nats): loss and exp(loss)."""
    validate_metrics("language-modeling", names)
    inp = MetricInputs(loss=float(mean_loss))
    return {name: _loss(inp) if name == "loss" else _perplexity(inp) for name in names}
