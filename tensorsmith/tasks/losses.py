"""Losses by name. Models output raw scores; sigmoid / softmax live inside the losses.

Each task says which losses fit it (``Task.losses``); ``build_loss`` applies class weights.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from tensorsmith.errors import RecipeError
from tensorsmith.registry import Registry

__all__ = ["LOSSES", "LossFn", "build_loss", "class_weights"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# each factory takes the class weights (or None) and returns loss(output, target)
LOSSES: Registry[Callable[[torch.Tensor | None], LossFn]] = Registry("loss", "train.loss")


def _mse(_: torch.Tensor | None) -> LossFn:
    return lambda out, y: F.mse_loss(out.squeeze(-1), y)


def _mae(_: torch.Tensor | None) -> LossFn:
    return lambda out, y: F.l1_loss(out.squeeze(-1), y)


def _huber(_: torch.Tensor | None) -> LossFn:
    return lambda out, y: F.huber_loss(out.squeeze(-1), y)


def _bce(weights: torch.Tensor | None) -> LossFn:
    # class weights (w0, w1) become pos_weight = w1 / w0 and an overall scale w0
    pos_weight = None if weights is None else (weights[1] / weights[0]).reshape(1)
    scale = 1.0 if weights is None else float(weights[0])

    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        value = F.binary_cross_entropy_with_logits(
            out.squeeze(-1), y.to(out.dtype), pos_weight=pos_weight
        )
        return value * scale if scale != 1.0 else value

    return loss


def _cross_entropy(weights: torch.Tensor | None) -> LossFn:
    def loss(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        # (B, K) scores with (B,) classes, or (B, T, V) language-model logits with (B, T) tokens
        return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1), weight=weights)

    return loss


LOSSES.register("mse", _mse)
LOSSES.register("mae", _mae)
LOSSES.register("huber", _huber)
LOSSES.register("bce", _bce)
LOSSES.register("cross_entropy", _cross_entropy)


def class_weights(
    spec: object, n_classes: int, labels: torch.Tensor | None, class_names: list[str]
) -> torch.Tensor | None:
    """Per-class loss weights from ``train.class_weights``: "balanced", a list, or {label: w}.

    "balanced" weighs class c by N / (K · count_c) over the train labels (scikit-learn's rule).
    """
    if spec is None:
        return None
    if n_classes < 2:
        raise RecipeError("train.class_weights is only for classification")
    if spec == "balanced":
        if labels is None:
            raise ValueError("balanced class weights need the train labels")
        counts = torch.bincount(labels.long(), minlength=n_classes).double().clamp(min=1)
        return (labels.numel() / (n_classes * counts)).float()
    if isinstance(spec, dict):
        unknown = [k for k in spec if str(k) not in class_names]
        if unknown:
            raise RecipeError(
                f"train.class_weights names unknown classes {unknown}; "
                f"classes are: {', '.join(class_names)}"
            )
        return torch.tensor([float(spec.get(n, 1.0)) for n in class_names])
    assert isinstance(spec, list)
    if len(spec) != n_classes:
        raise RecipeError(f"train.class_weights has {len(spec)} weights for {n_classes} classes")
    return torch.tensor([float(w) for w in spec])


def build_loss(name: str, weights: torch.Tensor | None = None) -> LossFn:
    """The loss by name, with optional per-class weights."""
    return LOSSES.get(name)(weights)
