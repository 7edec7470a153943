"""What a fine-tune trains: every weight (``full``), the head alone (``head``), named parameters
frozen (``freeze``), or low-rank adapters (``lora``, through ``peft``) merged back when stored.

The pretrained body learns at ``body_lr_factor`` times the learning rate of the head (the
weights that start fresh, or the output layer when none does).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from tensorsmith.errors import RecipeError
from tensorsmith.finetune.start import load_matching
from tensorsmith.recipe import FinetuneSpec, LoraSpec

__all__ = ["Plan", "linear_names", "merge", "plan_round"]

Adapted = tuple[nn.Module, list[dict[str, Any]]]


def linear_names(module: nn.Module) -> list[str]:
    return [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]


def _head(module: nn.Module, fresh: set[str]) -> set[str]:
    """The head's parameters: those that start fresh, else the last Linear layer's."""
    params = {name for name, _ in module.named_parameters()}
    if fresh & params:
        return fresh & params
    last = linear_names(module)[-1]
    return {name for name in params if name.startswith(f"{last}.")}


def _wrap_lora(module: nn.Module, spec: LoraSpec, skip: set[str]) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    linears = linear_names(module)
    targets = spec.targets or [n for n in linears if not any(p.startswith(f"{n}.") for p in skip)]
    config = LoraConfig(
        r=spec.rank, lora_alpha=spec.alpha, lora_dropout=spec.dropout, target_modules=targets
    )
    try:
        return get_peft_model(module, config)
    except ValueError as exc:
        raise RecipeError(
            f"finetune.lora.targets {spec.targets} match no layer of the model ({exc}); its "
            f"Linear layers are: {', '.join(linears)}"
        ) from None


def merge(module: nn.Module) -> nn.Module:
    """Adapters folded into plain weights, so that serving needs no ``peft``."""
    merge_and_unload = getattr(module, "merge_and_unload", None)
    return merge_and_unload() if callable(merge_and_unload) else module


class Plan:
    """One round's start: its weights, what trains, and at which learning rates."""

    def __init__(
        self,
        spec: FinetuneSpec,
        weights: dict[str, torch.Tensor],
        lr: float,
        weight_decay: float,
        whole: bool,
    ) -> None:
        self.spec, self.weights, self.lr, self.weight_decay = spec, weights, lr, weight_decay
        self.whole = whole  # a later round with policy.unfreeze: every weight trains
        self.fresh: list[str] = []

    def __call__(self, module: nn.Module) -> Adapted:
        _, self.fresh = load_matching(module, self.weights)
        head = _head(module, set(self.fresh))
        strategy = "full" if self.whole and self.spec.strategy == "head" else self.spec.strategy
        frozen = [] if self.whole else self.spec.freeze
        for name, param in module.named_parameters():
            keep = strategy != "head" or name in head
            param.requires_grad_(keep and not any(fnmatch.fnmatch(name, p) for p in frozen))
        if strategy == "lora":
            module = _wrap_lora(module, self.spec.lora, head)
            for name, param in module.named_parameters():  # a fresh head trains in full
                if any(name.endswith(h) for h in head):
                    param.requires_grad_(True)
        return module, self._groups(module, head)

    def _groups(self, module: nn.Module, head: set[str]) -> list[dict[str, Any]]:
        body_lr = self.lr * self.spec.body_lr_factor
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            is_head = any(name.endswith(h) for h in head) or "lora_" in name
            groups.setdefault((is_head, param.dim() >= 2), []).append(param)
        if not groups:
            raise RecipeError(
                "the fine-tune trains no weight: finetune.freeze covers every parameter; "
                "freeze fewer, or choose finetune.strategy: head"
            )
        return [
            {
                "params": params,
                "lr": self.lr if is_head else body_lr,
                "weight_decay": self.weight_decay if matrix else 0.0,
            }
            for (is_head, matrix), params in groups.items()
        ]


def plan_round(
    spec: FinetuneSpec, weights: dict[str, torch.Tensor], lr: float, weight_decay: float, r: int
) -> Plan:
    """Round ``r`` (1-based): the policy's learning rate, every weight free after round 1 when
    ``policy.unfreeze``."""
    factor = spec.policy.lr_factor ** (r - 1)
    return Plan(spec, weights, lr * factor, weight_decay, whole=r > 1 and spec.policy.unfreeze)


Adapt = Callable[[nn.Module], Adapted]
