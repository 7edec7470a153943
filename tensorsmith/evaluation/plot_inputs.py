"""Plots of what a model reads: a grid of images with their predicted labels, a forecast against
the series. Registered by name in ``PLOTS`` (``evaluation/plots.py``), imported on first use."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from tensorsmith.evaluation.plots import PathLike, _figure, _save

__all__ = ["plot_forecast", "plot_image_grid"]


# -- images -----------------------------------------------------------------------------------


def plot_image_grid(
    images: Sequence[np.ndarray],
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[str],
    path: PathLike,
    split: str | None = None,
) -> Path:
    """Images (each H×W×C in [0, 1]) titled with the predicted label; a mistake is titled in
    red with the true label beside it and framed in red."""
    n = len(images)
    cols = min(6, max(n, 1))
    rows = max(1, math.ceil(n / cols))
    fig = _figure(1.6 * cols, 1.75 * rows + 0.4, layout="tight")
    axes = fig.subplots(rows, cols, squeeze=False)
    wrong = int(sum(int(t) != int(p) for t, p in zip(y_true, y_pred, strict=True)))
    fig.suptitle(
        f"{split or 'evaluated'} images: predicted (true); {wrong} of {n} shown are wrong",
        fontsize=9,
    )
    for k, ax in enumerate(axes.ravel()):
        ax.set_xticks([])
        ax.set_yticks([])
        if k >= n:
            ax.axis("off")
            continue
        image = np.clip(np.asarray(images[k], dtype=np.float64), 0.0, 1.0)
        gray = image.shape[-1] == 1
        ax.imshow(image[..., 0] if gray else image, cmap="gray" if gray else None, vmin=0, vmax=1)
        true, pred = str(labels[int(y_true[k])]), str(labels[int(y_pred[k])])
        ok = true == pred
        ax.set_title(pred if ok else f"{pred} ({true})", fontsize=8, color="black" if ok else "red")
        for spine in ax.spines.values():
            spine.set_edgecolor("black" if ok else "red")
            spine.set_linewidth(0.5 if ok else 2.5)
    return _save(fig, path)


# -- sequences --------------------------------------------------------------------------------


def plot_forecast(
    time: np.ndarray,
    actual: np.ndarray,
    forecast_time: np.ndarray,
    forecast: np.ndarray,
    path: PathLike,
    naive: np.ndarray | None = None,
    name: str = "value",
    time_name: str = "time",
    split: str | None = None,
) -> Path:
    """The actual series of the evaluated part and the model's one-step-ahead forecast (and
    the naive forecast, the last observed value, for comparison)."""
    fig = _figure(8.0, 3.6, layout="tight")
    ax = fig.add_subplot()
    ax.plot(time, actual, color="black", linewidth=1.2, marker=".", markersize=3, label="actual")
    ax.plot(forecast_time, forecast, color="tab:blue", linewidth=1.5, label="forecast")
    if naive is not None:
        ax.plot(forecast_time, naive, color="tab:gray", linewidth=1, linestyle="--", label="naive")
    ax.set_xlabel(time_name)
    ax.set_ylabel(name)
    part = f", {split} part" if split else ""
    ax.set_title(f"{name}: forecast against the actual series{part}")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize="small")
    return _save(fig, path)
