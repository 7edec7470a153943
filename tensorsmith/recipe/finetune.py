"""The ``finetune`` section: where a fine-tune starts, what it trains, and its rounds.

Only ``tensorsmith finetune`` reads it (``train`` refuses a recipe that has one). A fine-tune
trains in rounds until ``evaluate.gate`` holds on the valid split; each round starts from the
best weights of the one before and follows ``policy``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from tensorsmith.recipe.sections import Strict

__all__ = ["FinetuneSpec", "LoraSpec", "RoundPolicy"]


class LoraSpec(Strict):
    """Low-rank adapters (``peft``) on the named Linear layers; merged when stored."""

    rank: int = Field(default=8, ge=1, le=1024)
    alpha: int = Field(default=16, ge=1)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    targets: list[str] | None = None  # module name suffixes; default: the architecture's own


class RoundPolicy(Strict):
    """How each round after the first differs from the one before it."""

    lr_factor: float = Field(default=0.5, gt=0.0)  # the learning rate is multiplied by this
    length_factor: float = Field(default=1.0, gt=0.0)  # so are the epochs (or steps)
    unfreeze: bool = True  # head / freeze strategies: a later round trains every weight


class FinetuneSpec(Strict):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    source: str | None = Field(default=None, alias="from")  # NAME[@N|@alias], a version folder,
    #                                                         or a Hugging Face checkpoint folder
    strategy: Literal["full", "head", "lora"] = "full"
    freeze: list[str] = Field(default_factory=list)  # parameter name patterns (fnmatch)
    lora: LoraSpec = Field(default_factory=LoraSpec)
    body_lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)  # pretrained weights' lr share
    rounds: int = Field(default=1, ge=1, le=100)
    policy: RoundPolicy = Field(default_factory=RoundPolicy)
    promote: bool = False  # set `alias` when the gate holds on valid and on test
    alias: str = "production"
