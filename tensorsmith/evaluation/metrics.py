"""Metrics by name, computed with scikit-learn, each knowing its direction.

``METRICS`` maps a lower-case metric name to a :class:`Metric`: the function that computes it
from a split's :class:`~tensorsmith.tasks.Outputs` and whether higher is better, which early
stopping and model selection read. Which metrics fit a task is the task's own list
(``Task.metric_names``); :func:`check_metrics` checks a recipe's names against it.

``sklearn.metrics`` is imported inside the functions: importing it costs ~0.8 s, which every
command that merely imports this module (``validate``, ``plan``, ``serve``) would pay.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from tensorsmith.errors import RecipeError, did_you_mean
from tensorsmith.registry import Registry

if TYPE_CHECKING:
    from tensorsmith.tasks import Outputs

__all__ = [
    "METRICS",
    "Metric",
    "MetricValue",
    "check_metrics",
    "compute_metrics",
    "monitor_mode",
]

MetricValue = float | list[list[int]]


@dataclass(frozen=True)
class Metric:
    """A named metric: how to compute it and which way is better."""

    name: str
    fn: Callable[[Outputs], MetricValue]
    higher_is_better: bool
    needs_proba: bool = False
    scalar: bool = True  # False for tables such as the confusion matrix


METRICS: Registry[Metric] = Registry("metric", "evaluate.metrics")


def _arrays(inp: Outputs) -> tuple[np.ndarray, np.ndarray]:
    if inp.y_true is None or inp.y_pred is None:
        raise ValueError("this metric needs y_true and y_pred")
    return inp.y_true, inp.y_pred


def _proba(inp: Outputs) -> np.ndarray:
    if inp.proba is None:
        raise ValueError("this metric needs class probabilities (proba)")
    return inp.proba


def _labels(inp: Outputs) -> list[int]:
    return list(range(inp.n_classes))


# -- regression -------------------------------------------------------------------------------


def _mse(inp: Outputs) -> float:
    from sklearn.metrics import mean_squared_error

    return float(mean_squared_error(*_arrays(inp)))


def _rmse(inp: Outputs) -> float:
    from sklearn.metrics import root_mean_squared_error

    return float(root_mean_squared_error(*_arrays(inp)))


def _mae(inp: Outputs) -> float:
    from sklearn.metrics import mean_absolute_error

    return float(mean_absolute_error(*_arrays(inp)))


def _r2(inp: Outputs) -> float:
    from sklearn.metrics import r2_score

    return float(r2_score(*_arrays(inp)))


def _mape(inp: Outputs) -> float:
    from sklearn.metrics import mean_absolute_percentage_error

    return float(mean_absolute_percentage_error(*_arrays(inp)))


# -- classification ---------------------------------------------------------------------------


def _accuracy(inp: Outputs) -> float:
    from sklearn.metrics import accuracy_score

    return float(accuracy_score(*_arrays(inp)))


def _prf(which: str, average: str | None) -> Callable[[Outputs], float]:
    """precision / recall / f1: binary (positive class 1) for 2 classes, else macro."""

    def fn(inp: Outputs) -> float:
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


def _roc_auc(inp: Outputs) -> float:
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


def _log_loss(inp: Outputs) -> float:
    from sklearn.metrics import log_loss

    return float(log_loss(_arrays(inp)[0], _proba(inp), labels=_labels(inp)))


def _confusion_matrix(inp: Outputs) -> list[list[int]]:
    from sklearn.metrics import confusion_matrix

    cm = confusion_matrix(*_arrays(inp), labels=_labels(inp))
    return [[int(v) for v in row] for row in cm]


# -- language modeling ------------------------------------------------------------------------


def _loss(inp: Outputs) -> float:
    return float(inp.loss)


def _perplexity(inp: Outputs) -> float:
    loss = _loss(inp)
    return math.exp(loss) if loss < 709.0 else math.inf  # exp overflows a float past ~709.78


def _add(name: str, fn: Callable[[Outputs], MetricValue], higher: bool, **kw: bool) -> None:
    METRICS.register(name, Metric(name, fn, higher, **kw))


_add("mse", _mse, False)
_add("rmse", _rmse, False)
_add("mae", _mae, False)
_add("r2", _r2, True)
_add("mape", _mape, False)
_add("accuracy", _accuracy, True)
_add("precision", _prf("precision", None), True)
_add("recall", _prf("recall", None), True)
_add("f1", _prf("f1", None), True)
_add("precision_macro", _prf("precision", "macro"), True)
_add("recall_macro", _prf("recall", "macro"), True)
_add("f1_macro", _prf("f1", "macro"), True)
_add("roc_auc", _roc_auc, True, needs_proba=True)
_add("log_loss", _log_loss, False, needs_proba=True)
_add("confusion_matrix", _confusion_matrix, True, scalar=False)
_add("loss", _loss, False)
_add("perplexity", _perplexity, False)


def check_metrics(names: Sequence[str], allowed: Sequence[str], task: str) -> list[str]:
    """Every name is a metric that the task computes; RecipeError naming evaluate.metrics."""
    for name in names:
        METRICS.get(name)  # unknown name: "unknown metric 'rsme' … did you mean 'rmse'?"
        if name not in allowed:
            raise RecipeError(
                f"metric '{name}' at evaluate.metrics does not fit task '{task}'"
                f"{did_you_mean(name, allowed)} choices for {task}: {', '.join(allowed)}"
            )
    return list(names)


def monitor_mode(monitor: str, allowed: Sequence[str], where: str) -> str:
    """ "min" or "max" for a monitored quantity: train_loss, valid_loss or valid_<metric>."""
    if monitor in ("train_loss", "valid_loss"):
        return "min"
    name = monitor.removeprefix("valid_")
    scalar = [m for m in allowed if METRICS[m].scalar]
    choices = ["train_loss", "valid_loss", *(f"valid_{m}" for m in scalar if m != "loss")]
    if not monitor.startswith("valid_") or name not in scalar:
        raise RecipeError(
            f"{where} '{monitor}' is not measured{did_you_mean(monitor, choices) or ';'} "
            f"choices: {', '.join(choices)}"
        )
    return "max" if METRICS[name].higher_is_better else "min"


def compute_metrics(names: Sequence[str], outputs: Outputs) -> dict[str, MetricValue]:
    """The named metrics of one split's outputs; values are plain floats (or a nested list)."""
    out: dict[str, MetricValue] = {}
    for name in names:
        metric = METRICS[name]
        if metric.needs_proba and outputs.proba is None:
            raise ValueError(f"metric '{name}' needs class probabilities (proba)")
        out[name] = metric.fn(outputs)
    return out
