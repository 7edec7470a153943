"""Evaluation: metrics against scikit-learn and hand-computed values, gates, plots, report."""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console
from sklearn import metrics as skm

from tensorsmith.errors import RecipeError
from tensorsmith.evaluation.gate import Condition, check_gate, parse_gate
from tensorsmith.evaluation.metrics import METRICS, check_metrics, compute_metrics, monitor_mode
from tensorsmith.evaluation.plots import (
    draw_plots,
    plot_confusion_matrix,
    plot_decision_boundary,
    plot_learning_curves,
    plot_predicted_vs_actual,
    plot_residuals,
    plot_roc,
)
from tensorsmith.evaluation.report import format_gate, print_metrics
from tensorsmith.recipe import RECIPES
from tensorsmith.tasks import TASKS, Outputs

CLASSIFICATION = TASKS["classification"].metric_names
REGRESSION = TASKS["regression"].metric_names


def _reg(names: Sequence[str], y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    return compute_metrics(names, Outputs(0.0, y_true=y_true, y_pred=y_pred))


# -- regression -------------------------------------------------------------------------------

RNG = np.random.default_rng(0)
REG_TRUE = RNG.normal(3.0, 1.0, 50)
REG_PRED = REG_TRUE + RNG.normal(0.0, 0.5, 50)


@pytest.mark.parametrize(
    ("name", "reference"),
    [
        ("mse", skm.mean_squared_error),
        ("rmse", skm.root_mean_squared_error),
        ("mae", skm.mean_absolute_error),
        ("r2", skm.r2_score),
        ("mape", skm.mean_absolute_percentage_error),
    ],
)
def test_regression_metric_matches_sklearn(name: str, reference: object) -> None:
    got = _reg([name], REG_TRUE, REG_PRED)[name]
    assert isinstance(got, float)
    assert got == pytest.approx(reference(REG_TRUE, REG_PRED))  # type: ignore[operator]


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("mse", 2.0),  # (0² + 2²) / 2
        ("rmse", math.sqrt(2.0)),
        ("mae", 1.0),  # (0 + 2) / 2
        ("r2", 1.0 - 4.0 / 0.5),  # 1 - SS_res / SS_tot; mean 1.5 → SS_tot = 0.25 + 0.25
        ("mape", 0.5),  # (0/1 + 2/2) / 2
    ],
)
def test_regression_metric_by_hand(name: str, expected: float) -> None:
    got = _reg([name], np.array([1.0, 2.0]), np.array([1.0, 4.0]))
    assert got[name] == pytest.approx(expected)


# -- classification ---------------------------------------------------------------------------

BIN_TRUE = np.array([0, 0, 1, 1, 1, 0])
BIN_PRED = np.array([0, 1, 1, 1, 0, 0])
BIN_P1 = np.array([0.1, 0.6, 0.8, 0.9, 0.4, 0.3])
BIN_PROBA = np.column_stack([1 - BIN_P1, BIN_P1])

MC_TRUE = RNG.integers(0, 3, 60)
MC_PROBA = RNG.dirichlet([1.0, 1.0, 1.0], 60)
MC_PROBA[np.arange(60), MC_TRUE] += 0.5  # better than chance
MC_PROBA /= MC_PROBA.sum(axis=1, keepdims=True)
MC_PRED = MC_PROBA.argmax(axis=1)


def _cls(
    names: Sequence[str],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    proba: np.ndarray | None,
    n_classes: int | None = None,
) -> dict:
    k = n_classes if n_classes is not None else (proba.shape[1] if proba is not None else 2)
    return compute_metrics(names, Outputs(0.0, y_true, y_pred, proba, k))


def test_binary_metrics_match_sklearn() -> None:
    got = _cls(CLASSIFICATION, BIN_TRUE, BIN_PRED, BIN_PROBA)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(BIN_TRUE, BIN_PRED))
    assert got["precision"] == pytest.approx(skm.precision_score(BIN_TRUE, BIN_PRED))
    assert got["recall"] == pytest.approx(skm.recall_score(BIN_TRUE, BIN_PRED))
    assert got["f1"] == pytest.approx(skm.f1_score(BIN_TRUE, BIN_PRED))
    assert got["f1_macro"] == pytest.approx(skm.f1_score(BIN_TRUE, BIN_PRED, average="macro"))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(BIN_TRUE, BIN_P1))
    assert got["log_loss"] == pytest.approx(skm.log_loss(BIN_TRUE, BIN_PROBA))
    assert got["confusion_matrix"] == skm.confusion_matrix(BIN_TRUE, BIN_PRED).tolist()
    json.dumps(got)  # plain Python values only


def test_binary_metrics_by_hand() -> None:
    # TP = 2 (idx 2, 3), FP = 1 (idx 1), FN = 1 (idx 4), TN = 2 (idx 0, 5)
    got = _cls(CLASSIFICATION, BIN_TRUE, BIN_PRED, BIN_PROBA)
    assert got["accuracy"] == pytest.approx(4 / 6)
    assert got["precision"] == pytest.approx(2 / 3)
    assert got["recall"] == pytest.approx(2 / 3)
    assert got["f1"] == pytest.approx(2 / 3)
    assert got["confusion_matrix"] == [[2, 1], [1, 2]]
    # AUC = share of (positive, negative) pairs ranked correctly: 8 of 9
    assert got["roc_auc"] == pytest.approx(8 / 9)
    expected_log_loss = -np.mean(np.log([0.9, 0.4, 0.8, 0.9, 0.4, 0.7]))
    assert got["log_loss"] == pytest.approx(expected_log_loss)


def test_multiclass_metrics_match_sklearn() -> None:
    got = _cls(CLASSIFICATION, MC_TRUE, MC_PRED, MC_PROBA)
    for name, fn in [("precision", skm.precision_score), ("recall", skm.recall_score)]:
        assert got[name] == pytest.approx(fn(MC_TRUE, MC_PRED, average="macro"))
        assert got[f"{name}_macro"] == got[name]
    assert got["f1"] == pytest.approx(skm.f1_score(MC_TRUE, MC_PRED, average="macro"))
    ovr = skm.roc_auc_score(MC_TRUE, MC_PROBA, multi_class="ovr", average="macro")
    assert got["roc_auc"] == pytest.approx(ovr)
    assert got["log_loss"] == pytest.approx(skm.log_loss(MC_TRUE, MC_PROBA))
    assert got["confusion_matrix"] == skm.confusion_matrix(MC_TRUE, MC_PRED).tolist()


def test_multiclass_by_hand_and_absent_class() -> None:
    # class 2 is named but never occurs: the matrix is still 3 x 3 and macro scores count it
    y_true, y_pred = np.array([0, 1, 1]), np.array([0, 1, 0])
    got = _cls(["confusion_matrix", "recall"], y_true, y_pred, None, n_classes=3)
    assert got["confusion_matrix"] == [[1, 0, 0], [1, 1, 0], [0, 0, 0]]
    assert got["recall"] == pytest.approx((1.0 + 0.5 + 0.0) / 3)


def test_roc_auc_single_class_is_nan() -> None:
    got = _cls(["roc_auc"], np.array([1, 1]), np.array([1, 0]), np.array([[0.2, 0.8], [0.6, 0.4]]))
    assert math.isnan(got["roc_auc"])


def test_proba_metric_without_proba_raises() -> None:
    with pytest.raises(ValueError, match="proba"):
        _cls(["roc_auc"], BIN_TRUE, BIN_PRED, None)


# -- language modeling and the tables ----------------------------------------------------------


def test_lm_metrics() -> None:
    got = compute_metrics(["loss", "perplexity"], Outputs(math.log(20.0)))
    assert got == {"loss": pytest.approx(math.log(20.0)), "perplexity": pytest.approx(20.0)}
    assert compute_metrics(["perplexity"], Outputs(0.0)) == {"perplexity": 1.0}
    assert compute_metrics(["perplexity"], Outputs(1000.0))["perplexity"] == math.inf


def test_every_task_names_registered_metrics() -> None:
    assert set(TASKS) == set(RECIPES)
    used = set()
    for name, task in ((n, TASKS[n]) for n in TASKS):
        assert check_metrics(task.metric_names, task.metric_names, name) == list(task.metric_names)
        assert task.key_metric in task.metric_names
        defaults = RECIPES[name].defaults.get("evaluate", {}).get("metrics", [])
        assert set(defaults) <= set(task.metric_names), name
        used |= set(task.metric_names)
    assert sorted(used) == METRICS.names()  # no metric that no task computes


def test_metrics_know_their_direction() -> None:
    lower = {n for n in METRICS if not METRICS[n].higher_is_better and METRICS[n].scalar}
    assert lower == {"mse", "rmse", "mae", "mape", "log_loss", "loss", "perplexity"}
    assert monitor_mode("valid_loss", REGRESSION, "m") == "min"
    assert monitor_mode("valid_r2", REGRESSION, "m") == "max"
    assert monitor_mode("valid_mape", REGRESSION, "m") == "min"
    assert monitor_mode("valid_log_loss", CLASSIFICATION, "m") == "min"
    assert monitor_mode("valid_f1", CLASSIFICATION, "m") == "max"
    with pytest.raises(RecipeError, match="did you mean 'valid_r2'"):
        monitor_mode("valid_r3", REGRESSION, "train.early_stopping.monitor")
    with pytest.raises(RecipeError, match="not measured"):
        monitor_mode("valid_accuracy", REGRESSION, "train.early_stopping.monitor")


def test_unknown_metric_suggests_nearest() -> None:
    with pytest.raises(RecipeError, match=r"unknown metric 'rsme'.*evaluate\.metrics.*'rmse'"):
        check_metrics(["rsme"], REGRESSION, "regression")


def test_metric_not_fitting_task() -> None:
    with pytest.raises(RecipeError, match=r"'accuracy'.*evaluate\.metrics.*'regression'.*r2"):
        check_metrics(["accuracy"], REGRESSION, "regression")


def test_unknown_task() -> None:
    with pytest.raises(RecipeError, match="did you mean 'regression'"):
        TASKS.get("regresion")


# -- gate -------------------------------------------------------------------------------------


def test_parse_gate() -> None:
    assert parse_gate({"r2": ">= 0.6", "accuracy": ">0.9", "mae": " <= 3 "}) == [
        Condition("r2", ">=", 0.6),
        Condition("accuracy", ">", 0.9),
        Condition("mae", "<=", 3.0),
    ]
    assert parse_gate({"loss": "< 2", "perplexity": "== 1e1"})[1].threshold == 10.0


@pytest.mark.parametrize(
    ("gate", "pattern"),
    [
        ({"r2": "=> 0.6"}, r"evaluate\.gate\.r2 is '=> 0\.6'.*>="),
        ({"r2": "0.6"}, r"evaluate\.gate\.r2 is '0\.6'"),
        ({"r2": ">= high"}, r"evaluate\.gate\.r2 .*'high' is not a number"),
        ({"r2": ">= nan"}, r"evaluate\.gate\.r2 .*finite"),
        ({"r2": 0.6}, r"evaluate\.gate\.r2 is 0\.6; expected"),
        ({"acuracy": "> 0.9"}, r"unknown metric 'acuracy' at evaluate\.gate\.acuracy.*'accuracy'"),
        ({"confusion_matrix": "> 1"}, r"evaluate\.gate\.confusion_matrix"),
    ],
)
def test_parse_gate_errors(gate: dict, pattern: str) -> None:
    with pytest.raises(RecipeError, match=pattern):
        parse_gate(gate)


def test_parse_gate_checks_task() -> None:
    with pytest.raises(RecipeError, match=r"evaluate\.gate\.accuracy does not fit task"):
        parse_gate({"accuracy": "> 0.9"}, REGRESSION, task="regression")


def test_check_gate_pass_fail_missing() -> None:
    passing = check_gate({"r2": ">= 0.6", "mae": "< 3"}, {"r2": 0.671, "mae": 2.0})
    assert passing.passed
    assert [r.actual for r in passing.results] == [0.671, 2.0]
    assert format_gate(check_gate({"r2": ">= 0.6"}, {"r2": 0.671})) == (
        "gate r2 >= 0.6: PASSED (0.671)"
    )

    failing = check_gate({"r2": ">= 0.6", "mae": "< 3"}, {"r2": 0.5, "mae": 2.0})
    assert not failing.passed
    assert [r.passed for r in failing.results] == [False, True]
    assert "needs >= 0.6" in (failing.results[0].reason or "")
    assert "FAILED" in format_gate(failing)

    missing = check_gate({"accuracy": "> 0.9"}, {"r2": 0.9})
    assert not missing.passed
    assert missing.results[0].actual is None
    assert "not computed" in (missing.results[0].reason or "")
    assert format_gate(missing) == "gate accuracy > 0.9: FAILED (missing)"

    as_dict = json.loads(json.dumps(failing.to_dict()))
    assert as_dict["passed"] is False
    assert as_dict["conditions"][0] == {
        "metric": "r2",
        "op": ">=",
        "threshold": 0.6,
        "actual": 0.5,
        "passed": False,
        "reason": as_dict["conditions"][0]["reason"],
    }
    assert check_gate({}, {}).passed
    assert not check_gate({"roc_auc": "> 0.5"}, {"roc_auc": math.nan}).passed


# -- plots ------------------------------------------------------------------------------------

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    from matplotlib.image import imread

    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    image = imread(path)
    assert image.shape[0] > 50 and image.shape[1] > 50


HISTORY = [
    {"epoch": e, "train_loss": 10.0 / e, "valid_loss": 12.0 / e, "valid_accuracy": 1 - 1 / (e + 1)}
    for e in range(1, 21)
]


def test_plots_write_valid_pngs(tmp_path: Path) -> None:
    labels = ["neg", "pos"]
    paths = [
        plot_learning_curves(HISTORY, tmp_path / "curves.png"),
        plot_learning_curves([{"step": 1, "train_loss": 2.0}], tmp_path / "one_row.png"),
        plot_predicted_vs_actual(REG_TRUE, REG_PRED, tmp_path / "pva.png"),
        plot_residuals(REG_TRUE, REG_PRED, tmp_path / "res.png"),
        plot_confusion_matrix([[2, 1], [1, 2]], labels, tmp_path / "cm.png"),
        plot_roc(BIN_TRUE, BIN_PROBA, labels, tmp_path / "roc.png"),
        plot_roc(MC_TRUE, MC_PROBA, ["a", "b", "c"], tmp_path / "roc_mc.png"),
        plot_confusion_matrix(np.eye(3, dtype=int), ["a", "b", "c"], tmp_path / "sub/cm3.png"),
    ]
    for path in paths:
        assert path.exists() and path.stat().st_size > 0
        _assert_png(path)


def test_plots_by_name(tmp_path: Path) -> None:
    pair = {"y_true": REG_TRUE, "y_pred": REG_PRED}
    reg = draw_plots(tmp_path / "r", HISTORY, {"predicted_vs_actual": pair, "residuals": pair})
    assert [p.name for p in reg] == [
        "learning_curves.png",
        "predicted_vs_actual.png",
        "residuals.png",
    ]
    labels = ["a", "b", "c"]
    cls = draw_plots(
        tmp_path / "c",
        [],
        {
            "confusion_matrix": {"y_true": MC_TRUE, "y_pred": MC_PRED, "labels": labels},
            "roc": {"y_true": MC_TRUE, "proba": MC_PROBA, "labels": labels},
        },
    )
    assert [p.name for p in cls] == ["confusion_matrix.png", "roc.png"]
    with pytest.raises(RecipeError, match="unknown plot 'rco'"):
        draw_plots(tmp_path / "x", [], {"rco": {}})
    for path in reg + cls:
        _assert_png(path)


@pytest.mark.parametrize("n_classes", [2, 3])
def test_decision_boundary_grid(tmp_path: Path, n_classes: int) -> None:
    X = RNG.normal(size=(40, 2))
    y = np.arange(40) % n_classes
    calls: list[tuple[int, ...]] = []

    def predict_proba(grid: np.ndarray) -> np.ndarray:
        calls.append(grid.shape)
        logits = np.column_stack([grid[:, 0] * (c - 1) for c in range(n_classes)])
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    labels = [f"class{c}" for c in range(n_classes)]
    path = plot_decision_boundary(predict_proba, X, y, ["x1", "x2"], labels, tmp_path / "db.png")
    assert calls == [(200 * 200, 2)]
    _assert_png(path)


# -- report -----------------------------------------------------------------------------------


def test_print_metrics() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, width=120)
    metrics = {
        "valid": {"accuracy": 0.875, "f1": 0.8, "confusion_matrix": [[5, 1], [0, 2]]},
        "test": {"accuracy": 0.75, "f1": 0.7, "confusion_matrix": [[4, 2], [0, 2]]},
    }
    print_metrics(metrics, console, title="iris", labels=["setosa", "virginica"])
    out = buffer.getvalue()
    for text in ["iris", "valid", "test", "accuracy", "0.875", "0.75", "f1", "0.8", "0.7"]:
        assert text in out
    assert "confusion matrix (valid)" in out and "virginica" in out


def test_print_metrics_large_values() -> None:
    console = Console(record=True, width=100)
    print_metrics({"valid": {"mse": 123456.7, "r2": 0.5}}, console, title="m")
    assert "123,457" in console.export_text()
