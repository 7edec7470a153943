"""Weights formats of compressed versions: how their weights are written and read back.

A version's ``config.json`` names its format under ``compression.format``; a version without
one holds plain fp32 ``model.safetensors``. Each format writes files a loader reads without
running code (safetensors, JSON, ONNX) and rebuilds the module the version predicts with from the
module its recipe builds. A new format is a new file and a line here.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from tensorsmith.registry import Registry

if TYPE_CHECKING:
    from torch import nn

__all__ = ["FORMATS", "WeightsFormat"]


class WeightsFormat(Protocol):
    """``save`` writes ``module`` into ``folder`` and returns the weights file's name;
    ``load`` turns ``module`` (freshly built from the recipe, fp32) into the saved one."""

    def save(self, module: nn.Module, folder: Path) -> str: ...

    def load(self, module: nn.Module, folder: Path, config: dict[str, Any]) -> nn.Module: ...


FORMATS: Registry[WeightsFormat] = Registry("weights format", "config.json compression.format")
FORMATS.register_lazy("int8-dynamic", "tensorsmith.models.quantized:INT8_DYNAMIC")
FORMATS.register_lazy("int8-weight", "tensorsmith.models.weight_only:INT8_WEIGHT")
FORMATS.register_lazy("int4-weight", "tensorsmith.models.weight_only:INT4_WEIGHT")
FORMATS.register_lazy("onnx", "tensorsmith.models.onnx_runtime:ONNX")
