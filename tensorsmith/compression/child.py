"""What a compression method returns: the child model and what was done to make it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from tensorsmith.recipe import Recipe

__all__ = ["Child"]


@dataclass
class Child:
    """A compressed model, ready to be measured and stored as the parent's next version."""

    module: nn.Module  # what the child predicts with (quantized, pruned, a student …)
    recipe: Recipe  # the child's recipe (the parent's, or with the smaller sizes it now has)
    dims: dict[str, Any]  # config.json dims: what build_model needs for the child
    method: dict[str, Any]  # compression.json "method": name and options, e.g. {"quantize": …}
    format: str | None = None  # a models.formats.FORMATS name; None: plain fp32 safetensors
    notes: list[str] = field(default_factory=list)  # shown on the terminal and in the card
    history: list[dict[str, float]] = field(default_factory=list)  # a recovery or student run
    run: dict[str, Any] = field(default_factory=dict)  # what such a run measured, for run.json
