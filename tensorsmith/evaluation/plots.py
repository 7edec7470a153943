"""Evaluation plots as PNG files: learning curves, regression and classification plots.

Matplotlib is driven through ``Figure`` + ``FigureCanvasAgg`` and never through ``pyplot``: no
global state, no GUI backend, safe in threads and servers. It is imported inside the functions
(~0.5 s) so that importing this module stays cheap. Figures are 8×5 inches at 150 dpi (read
without zooming), ticks of large numbers carry thousands separators, every title names the
split it shows, and the loss axis names the loss. Scatter plots draw at most ``max_points``
points (a fixed random subset), which keeps large test sets fast.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from tensorsmith.registry import Registry

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PLOTS",
    "draw_plots",
    "plot_confusion_matrix",
    "plot_decision_boundary",
    "plot_learning_curves",
    "plot_predicted_vs_actual",
    "plot_residuals",
    "plot_roc",
    "plot_rounds",
]

DPI = 150
WIDTH, HEIGHT = 8.0, 5.0  # inches
MAX_POINTS = 10_000
PathLike = str | Path


def _figure(width: float, height: float, layout: Literal["tight"] | None = None) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def _readable_ticks(ax: Any) -> None:
    """At most 6 ticks per axis; thousands separators (or scientific notation) for big values."""
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    for axis in (ax.xaxis, ax.yaxis):
        if axis.get_scale() == "log":  # 0.03, 0.1, 0.6 rather than 3×10⁻², 10⁻¹, 6×10⁻¹
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(_minor_log_label))
            continue
        if axis.get_scale() != "linear":
            continue
        axis.set_major_locator(MaxNLocator(nbins=6))
        low, high = axis.get_view_interval()
        largest = max(abs(low), abs(high))
        if largest >= 1e9:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:.2e}"))
        elif largest >= 10_000:
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))


def _minor_log_label(value: float, _: Any) -> str:
    """Label 2, 3 and 5 × 10ⁿ between the decades of a log axis, leave the others bare."""
    if value <= 0:
        return ""
    mantissa = value / 10 ** math.floor(math.log10(value))
    return (
        f"{value:g}"
        if round(mantissa) in (2, 3, 5) and abs(mantissa - round(mantissa)) < 1e-6
        else ""
    )


def _titled(ax: Any, title: str, split: str | None) -> None:
    ax.set_title(f"{title} ({split} split)" if split else title)


def _save(fig: Figure, path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=DPI)
    return out


def _subsample(n: int, max_points: int) -> np.ndarray:
    if n <= max_points:
        return np.arange(n)
    return np.sort(np.random.default_rng(0).choice(n, size=max_points, replace=False))


# -- learning curves --------------------------------------------------------------------------


def _x_key(history: Sequence[Mapping[str, Any]]) -> str | None:
    """``epoch`` when every row has a distinct one, else ``step``, else the row number."""
    epochs = [row.get("epoch") for row in history]
    if all(e is not None for e in epochs) and len(set(epochs)) == len(epochs):
        return "epoch"
    if all(row.get("step") is not None for row in history):
        return "step"
    return None


def _series(
    history: Sequence[Mapping[str, Any]], key: str, xs: list[float]
) -> tuple[list[float], list[float]]:
    px: list[float] = []
    py: list[float] = []
    for x, row in zip(xs, history, strict=True):
        try:
            y = float(row.get(key))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if math.isfinite(y):
            px.append(x)
            py.append(y)
    return px, py


def plot_learning_curves(
    history: Sequence[Mapping[str, Any]],
    path: PathLike,
    loss_label: str = "loss",
    best: Mapping[str, Any] | None = None,
) -> Path:
    """Losses against epoch/step (log-y when they span over a decade), the valid metrics in a
    second panel, and the restored best epoch marked on both."""
    xkey = _x_key(history)
    xs = [float(row[xkey]) if xkey else float(i + 1) for i, row in enumerate(history)]
    keys: list[str] = []
    for row in history:
        keys += [k for k in row if k not in keys and k not in ("epoch", "step")]
    metric_series = {
        k: _series(history, k, xs)
        for k in keys
        if k.startswith("valid_") and not k.endswith("loss")
    }
    metric_series = {k: v for k, v in metric_series.items() if v[0]}
    fig = _figure(WIDTH * (1.5 if metric_series else 1.0), HEIGHT, layout="tight")
    axes = fig.subplots(1, 2 if metric_series else 1, squeeze=False)[0]
    losses = sorted((k for k in keys if k.endswith("loss")), key=lambda k: k != "train_loss")
    _loss_panel(axes[0], history, xs, losses, loss_label)
    axes[0].set_xlabel(xkey or "row")
    if metric_series:
        mx = axes[1]
        for k, (px, py) in metric_series.items():
            mx.plot(px, py, label=k.replace("_", " "), marker="." if len(px) < 30 else None)
        names = ", ".join(k.removeprefix("valid_") for k in metric_series)
        mx.set_xlabel(xkey or "row")
        mx.set_ylabel(names)
        mx.set_title(f"{names} (valid split)")
        mx.grid(alpha=0.3)
        mx.legend()
    at = best.get(xkey) if best and xkey else None
    for ax in axes:
        if at is not None:
            ax.axvline(float(at), color="grey", linestyle=":", label=f"best ({xkey} {int(at)})")
            ax.legend()
        _readable_ticks(ax)
    return _save(fig, path)


def _loss_panel(
    ax: Any, history: Sequence[Mapping[str, Any]], xs: list[float], keys: list[str], label: str
) -> None:
    lows: list[float] = []
    highs: list[float] = []
    for k in keys:
        px, py = _series(history, k, xs)
        if px:
            ax.plot(px, py, label=k.replace("_", " "), marker="." if len(px) < 30 else None)
            lows.append(min(py))
            highs.append(max(py))
    if lows and min(lows) > 0 and max(highs) / min(lows) > 10:
        ax.set_yscale("log")
    ax.set_ylabel(label)
    ax.set_title("loss (train and valid splits)" if len(lows) > 1 else "loss (train split)")
    ax.grid(alpha=0.3)
    if lows:
        ax.legend()


# -- regression -------------------------------------------------------------------------------


def plot_predicted_vs_actual(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: PathLike,
    max_points: int = MAX_POINTS,
    split: str | None = None,
    target: str = "",
) -> Path:
    """Predicted against actual values with the ``y = x`` line of a perfect model."""
    y_true, y_pred = np.ravel(y_true).astype(float), np.ravel(y_pred).astype(float)
    idx = _subsample(len(y_true), max_points)
    fig = _figure(HEIGHT + 1.0, HEIGHT, layout="tight")
    ax = fig.add_subplot()
    ax.scatter(y_true[idx], y_pred[idx], s=8, alpha=0.5, edgecolors="none")
    lo = float(min(y_true.min(), y_pred.min()))
    hi = float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=1, linestyle="--", label="y = x")
    ax.set_xlabel(f"actual {target}".strip())
    ax.set_ylabel(f"predicted {target}".strip())
    _titled(ax, "predicted vs actual", split)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    _readable_ticks(ax)
    return _save(fig, path)


def plot_residuals(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    path: PathLike,
    max_points: int = MAX_POINTS,
    split: str | None = None,
    target: str = "",
) -> Path:
    """Residuals (actual - predicted) against predicted values, with the zero line."""
    y_true, y_pred = np.ravel(y_true).astype(float), np.ravel(y_pred).astype(float)
    idx = _subsample(len(y_true), max_points)
    fig = _figure(WIDTH, HEIGHT, layout="tight")
    ax = fig.add_subplot()
    ax.scatter(y_pred[idx], (y_true - y_pred)[idx], s=8, alpha=0.5, edgecolors="none")
    ax.axhline(0.0, color="black", linewidth=1, linestyle="--")
    ax.set_xlabel(f"predicted {target}".strip())
    ax.set_ylabel(f"residual: actual - predicted {target}".strip())
    _titled(ax, "residuals", split)
    ax.grid(alpha=0.3)
    _readable_ticks(ax)
    return _save(fig, path)


# -- classification ---------------------------------------------------------------------------


def plot_confusion_matrix(
    cm: Sequence[Sequence[int]] | np.ndarray,
    labels: Sequence[str],
    path: PathLike,
    split: str | None = None,
) -> Path:
    """Confusion matrix (rows: true class, columns: predicted) with the count in each cell."""
    counts = np.asarray(cm, dtype=np.int64)
    k = counts.shape[0]
    side = min(max(HEIGHT, 3.0 + 0.4 * k), 12.0)
    fig = _figure(side + 1.0, side, layout="tight")
    ax = fig.add_subplot()
    image = ax.imshow(counts, cmap="Blues", vmin=0)  # from 0, so the text colour rule holds
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    names = [str(label) for label in labels] if len(labels) == k else [str(i) for i in range(k)]
    ax.set_xticks(range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _titled(ax, "confusion matrix", split)
    if k <= 30:  # beyond that the numbers are unreadable anyway
        threshold = counts.max() / 2 if counts.size else 0
        for i in range(k):
            for j in range(k):
                color = "white" if counts[i, j] > threshold else "black"
                ax.text(j, i, str(counts[i, j]), ha="center", va="center", color=color)
    return _save(fig, path)


def plot_roc(
    y_true: np.ndarray,
    proba: np.ndarray,
    labels: Sequence[str],
    path: PathLike,
    split: str | None = None,
) -> Path:
    """ROC curve: binary, one curve for class 1; multi-class, one-vs-rest per class (AUC each)."""
    from sklearn.metrics import auc, roc_curve

    y_true = np.ravel(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    fig = _figure(HEIGHT + 1.0, HEIGHT, layout="tight")
    ax = fig.add_subplot()
    if proba.ndim == 1 or proba.shape[1] == 2:
        positive = proba if proba.ndim == 1 else proba[:, 1]
        curves = [(str(labels[1]) if len(labels) == 2 else "positive", y_true == 1, positive)]
    else:
        curves = [
            (str(labels[c]) if len(labels) > c else str(c), y_true == c, proba[:, c])
            for c in range(proba.shape[1])
        ]
    drawn = 0
    for name, is_class, score in curves:
        if is_class.all() or not is_class.any():
            continue  # ROC is undefined for a class that is always or never present
        fpr, tpr, _ = roc_curve(is_class, score)
        label = f"{name} (AUC = {auc(fpr, tpr):.3f})" if drawn < 10 else None
        ax.plot(fpr, tpr, label=label)
        drawn += 1
    ax.plot([0, 1], [0, 1], color="grey", linewidth=1, linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    _titled(ax, "ROC" if len(curves) == 1 else "ROC, one-vs-rest", split)
    if drawn:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_decision_boundary(
    predict_proba: Callable[[np.ndarray], np.ndarray],
    X: np.ndarray,
    y: np.ndarray,
    feature_names: Sequence[str],
    labels: Sequence[str],
    path: PathLike,
    grid: int = 200,
    max_points: int = MAX_POINTS,
    split: str | None = None,
) -> Path:
    """Model output over a ``grid x grid`` mesh of the 2-D feature space, with the data on top.

    Binary: filled contours of the probability of class 1. Multi-class: the argmax class.
    ``predict_proba`` is called once, on an array of shape ``(grid * grid, 2)``.
    """
    X = np.asarray(X, dtype=np.float64)
    y = np.ravel(y).astype(np.int64)
    lo, hi = X.min(axis=0), X.max(axis=0)
    margin = np.where(hi > lo, (hi - lo) * 0.1, 1.0)
    gx = np.linspace(lo[0] - margin[0], hi[0] + margin[0], grid)
    gy = np.linspace(lo[1] - margin[1], hi[1] + margin[1], grid)
    xx, yy = np.meshgrid(gx, gy)  # (grid, grid) each
    proba = np.asarray(predict_proba(np.column_stack([xx.ravel(), yy.ravel()])))
    k = max(len(labels), proba.shape[1] if proba.ndim == 2 else 2)

    fig = _figure(WIDTH, HEIGHT + 1.0, layout="tight")
    ax = fig.add_subplot()
    style: dict[str, Any]
    if k <= 2:  # probability of class 1, blue (0) to red (1)
        z = (proba[:, 1] if proba.ndim == 2 else proba).reshape(xx.shape)
        style = {"levels": np.linspace(0, 1, 11), "cmap": "RdBu_r", "alpha": 0.6}
        colors: list[Any] = ["tab:blue", "tab:red"]
    else:  # the predicted class, in the colour of its points
        from matplotlib import colormaps

        cmap = colormaps["tab10" if k <= 10 else "tab20"]
        z = proba.argmax(axis=1).reshape(xx.shape)
        style = {"levels": np.arange(k + 1) - 0.5, "cmap": cmap, "alpha": 0.35}
        style |= {"vmin": -0.5, "vmax": cmap.N - 0.5}
        colors = [cmap(c % cmap.N) for c in range(k)]
    filled = ax.contourf(xx, yy, z, **style)
    if k <= 2:
        fig.colorbar(filled, ax=ax, label=f"P({labels[1] if len(labels) > 1 else 1})")
    idx = _subsample(len(y), max_points)
    points: dict[str, Any] = {"s": 12, "edgecolors": "black", "linewidths": 0.4}
    for c in range(k):
        pts = X[idx][y[idx] == c]
        name = str(labels[c]) if c < len(labels) else str(c)
        if len(pts):
            ax.scatter(pts[:, 0], pts[:, 1], color=colors[c % len(colors)], label=name, **points)
    ax.set_xlim(gx[0], gx[-1])
    ax.set_ylim(gy[0], gy[-1])
    names = list(feature_names) + ["x0", "x1"][len(feature_names) :]
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    _titled(ax, "decision boundary", split)
    if k <= 20:
        ax.legend(loc="best", fontsize="small")
    return _save(fig, path)


# -- plots by name ----------------------------------------------------------------------------


def _confusion_from_labels(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    path: PathLike,
    split: str | None = None,
) -> Path:
    k = len(labels)
    counts = np.bincount(
        np.asarray(y_true, dtype=np.int64) * k + np.asarray(y_pred, dtype=np.int64),
        minlength=k * k,
    ).reshape(k, k)
    return plot_confusion_matrix(counts, labels, path, split)


def plot_rounds(
    values: Sequence[float],
    metric: str,
    op: str,
    threshold: float,
    path: PathLike,
    split: str | None = None,
) -> Path:
    """A fine-tune's gate metric after each round (on the valid split) against its threshold."""
    rounds = np.arange(1, len(values) + 1)
    fig = _figure(WIDTH, HEIGHT, layout="tight")
    ax = fig.add_subplot()
    ax.plot(rounds, values, marker="o", label=f"valid {metric}")
    ax.axhline(
        threshold, color="tab:red", linestyle="--", label=f"gate: {metric} {op} {threshold:g}"
    )
    ax.set_xticks(rounds)
    ax.set_xlabel("round")
    ax.set_ylabel(metric)
    _titled(ax, f"{metric} per fine-tuning round", "valid")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


# name → fn(path=…, **inputs); a task names the plots it wants and gives their inputs
PLOTS: Registry[Callable[..., Path]] = Registry("plot", "plots")
PLOTS.register("predicted_vs_actual", plot_predicted_vs_actual)
PLOTS.register("residuals", plot_residuals)
PLOTS.register("confusion_matrix", _confusion_from_labels)
PLOTS.register("roc", plot_roc)
PLOTS.register("decision_boundary", plot_decision_boundary)
PLOTS.register("rounds", plot_rounds)
PLOTS.register_lazy("image_grid", "tensorsmith.evaluation.plot_inputs:plot_image_grid")
PLOTS.register_lazy("forecast", "tensorsmith.evaluation.plot_inputs:plot_forecast")


def draw_plots(
    folder: PathLike,
    history: Sequence[Mapping[str, Any]],
    plots: Mapping[str, Mapping[str, Any]],
    loss_label: str = "loss",
    split: str | None = None,
    best: Mapping[str, Any] | None = None,
) -> list[Path]:
    """The learning curves, then each named plot (of ``split``), as ``folder/<name>.png``."""
    out = Path(folder)
    paths = []
    if history:
        paths.append(plot_learning_curves(history, out / "learning_curves.png", loss_label, best))
    for name, inputs in plots.items():
        paths.append(PLOTS.get(name)(path=out / f"{name}.png", **{"split": split, **inputs}))
    return paths
