"""Weight-only int8 and int4 Linear layers (for generation) and their weights formats.

A decoder generating one token at a time is bound by reading its weights: these layers keep
int8 (or int4) weights and multiply with PyTorch's CPU kernels, activations staying in float.

- ``int8-weight``: :class:`Int8WeightLinear`, int8 weights and one scale per output channel,
  through ``torch._weight_int8pack_mm``.
- ``int4-weight``: :class:`Int4WeightLinear`, int4 weights in groups of :data:`INT4_GROUP` input
  channels (asymmetric: a scale and an offset per group and output channel), through
  ``torch._weight_int4pack_mm_for_cpu``.

Both hold plain tensors (buffers), so their formats are a safetensors file of the module's state
dict, loaded into the fp32 module after its Linear layers are swapped for empty shells.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_model, save_model
from torch import nn

from tensorsmith.models.quantized import mismatch, read_tensors, replace_module, shared_weights

__all__ = ["INT4_GROUP", "Int4WeightLinear", "Int8WeightLinear", "int4_fits", "weight_only"]

INT4_GROUP = 32  # input channels that share one int4 scale and offset
INT4_ROWS = 16  # the CPU int4 kernel packs output channels in blocks of 16


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The activations' dtype for the weight-only kernels: torch 2.13's CPU kernels have a fast
    path for bf16 activations only (with fp32 activations they run a reference loop, measured
    5-40x slower than fp32 ``F.linear``), so fp32 inputs are rounded to bf16 for the matmul."""
    return torch.bfloat16 if x.dtype == torch.float32 else x.dtype


def _bf16(t: torch.Tensor) -> torch.Tensor:
    """``t`` rounded to the nearest bf16 values (kept in fp32): the kernels take bf16 scales, so
    quantizing with bf16 scales leaves no rounding between what is stored and what is used."""
    return t.to(torch.bfloat16).float()


class Int8WeightLinear(nn.Module):
    """``nn.Linear`` with int8 weights (out, in) and one scale per output channel.

    Symmetric: ``w ≈ weight_int8 * weight_scale[:, None]``, int8 in [-127, 127], the scales bf16
    values. ``torch._weight_int8pack_mm`` dequantizes inside the matmul; the output has the
    input's dtype, and the bias is added in it (see :func:`_compute_dtype` for fp32 inputs).
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer(
            "weight_int8", torch.zeros(out_features, in_features, dtype=torch.int8)
        )
        self.register_buffer("weight_scale", torch.ones(out_features))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int8WeightLinear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float()  # (out, in)
        scale = _bf16(w.abs().amax(dim=1).clamp(min=1e-12) / 127.0)  # (out,)
        new.weight_int8.copy_(torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8))
        new.weight_scale.copy_(scale)
        if linear.bias is not None and new.bias is not None:
            new.bias.data.copy_(linear.bias.detach())
        return new

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x)
        x2 = x.reshape(-1, self.in_features).to(dtype).contiguous()  # (N, in)
        y = torch._weight_int8pack_mm(x2, self.weight_int8, self.weight_scale.to(dtype))
        y = y.to(x.dtype)  # (N, out)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)  # (..., out)

    def quantized_numel(self) -> int:
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int4WeightLinear(nn.Module):
    """``nn.Linear`` with int4 weights in groups of :data:`INT4_GROUP` input channels.

    Asymmetric per (group, output channel): ``w ≈ (q - 8) * scale + zero`` with q in [0, 15], the
    convention of ``torch._weight_int4pack_mm_for_cpu``; scale and zero are bf16 values, the
    activations as in :class:`Int8WeightLinear`. Stored as two values per byte
    (``weight_int4``: (out, in // 2), the even column in the low nibble) and ``scales_and_zeros``
    (in // group, out, 2); the CPU kernel's packed layout is rebuilt from them after loading.
    """

    weight_int4: torch.Tensor
    scales_and_zeros: torch.Tensor
    packed: torch.Tensor

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        groups = in_features // INT4_GROUP
        self.register_buffer(
            "weight_int4", torch.zeros(out_features, in_features // 2, dtype=torch.uint8)
        )
        self.register_buffer("scales_and_zeros", torch.zeros(groups, out_features, 2))
        self.register_buffer("packed", torch.empty(0, dtype=torch.uint8), persistent=False)
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None
        self.register_load_state_dict_post_hook(lambda module, _keys: module.repack())
        self.repack()

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> Int4WeightLinear:
        new = cls(linear.in_features, linear.out_features, linear.bias is not None)
        w = linear.weight.detach().float()  # (out, in)
        groups = w.view(new.out_features, -1, INT4_GROUP)  # (out, G, group)
        lo, hi = groups.amin(dim=2), groups.amax(dim=2)  # (out, G)
        scale = _bf16(((hi - lo) / 15.0).clamp(min=1e-12))
        zero = _bf16(lo + 8.0 * scale)  # (q - 8) * scale + zero ≈ q * scale + lo
        q = torch.round((groups - zero[..., None]) / scale[..., None] + 8.0).clamp(0, 15)
        q = q.to(torch.uint8).view(new.out_features, new.in_features)  # (out, in)
        new.weight_int4.copy_(q[:, 0::2] | (q[:, 1::2] << 4))
        new.scales_and_zeros.copy_(torch.stack([scale, zero], dim=-1).transpose(0, 1))
        if linear.bias is not None and new.bias is not None:
            new.bias.data.copy_(linear.bias.detach())
        new.repack()
        return new

    def unpacked(self) -> torch.Tensor:
        """The int4 values as (out, in) int32 in [0, 15]."""
        low, high = self.weight_int4 & 0x0F, self.weight_int4 >> 4  # (out, in // 2) each
        return torch.stack([low, high], dim=-1).view(self.out_features, -1).to(torch.int32)

    def repack(self) -> None:
        self.packed = torch._convert_weight_to_int4pack_for_cpu(self.unpacked(), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = _compute_dtype(x)
        x2 = x.reshape(-1, self.in_features).to(dtype).contiguous()  # (N, in)
        sz = self.scales_and_zeros.to(dtype)
        y = torch._weight_int4pack_mm_for_cpu(x2, self.packed, INT4_GROUP, sz).to(x.dtype)
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y.reshape(*x.shape[:-1], self.out_features)

    def quantized_numel(self) -> int:
        return self.in_features * self.out_features

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"int4 weights in groups of {INT4_GROUP}"
        )


WEIGHT_ONLY: dict[str, type[Int8WeightLinear] | type[Int4WeightLinear]] = {
    "int8-weight": Int8WeightLinear,
    "int4-weight": Int4WeightLinear,
}


def int4_fits(linear: nn.Linear) -> bool:
    """Whether the CPU int4 kernel takes this layer's shape."""
    return linear.in_features % INT4_GROUP == 0 and linear.out_features % INT4_ROWS == 0


def _swappable(module: nn.Module, kind: str) -> list[str]:
    """Names of the Linear layers weight-only quantization replaces: a Linear whose weight is
    shared with another layer (a head tied to the embedding) stays as it is, in fp32."""
    shared = shared_weights(module)
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear)
        and id(m.weight) not in shared
        and (kind != "int4-weight" or int4_fits(m))
    ]


def weight_only(module: nn.Module, kind: str, *, quantize: bool = True) -> list[str]:
    """Replace ``module``'s Linear layers (in place) by ``kind``'s weight-only modules.

    With ``quantize=False`` the new layers are empty shells for a state dict to fill (loading).
    Returns the names of the replaced layers.
    """
    layer_type = WEIGHT_ONLY[kind]
    names = _swappable(module, kind)
    for name in names:
        linear = module.get_submodule(name)
        assert isinstance(linear, nn.Linear)
        new = (
            layer_type.from_linear(linear)
            if quantize
            else layer_type(linear.in_features, linear.out_features, linear.bias is not None)
        )
        replace_module(module, name, new)
    return names


class WeightOnly:
    """The ``int8-weight`` and ``int4-weight`` weights formats: a safetensors state dict."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.file = f"model-{kind}.safetensors"

    def save(self, module: nn.Module, folder: Path) -> str:
        save_model(module, str(folder / self.file), metadata={"format": self.kind})
        return self.file

    def load(self, module: nn.Module, folder: Path, config: dict[str, Any]) -> nn.Module:
        path = folder / str(config.get("weights", self.file))
        read_tensors(path)  # a clear error for a missing or unreadable file
        weight_only(module, self.kind, quantize=False)
        missing, unexpected = load_model(module, str(path), strict=False)
        if missing or unexpected:
            mismatch(path, set(missing), set(unexpected))
        return module.eval()


INT8_WEIGHT = WeightOnly("int8-weight")
INT4_WEIGHT = WeightOnly("int4-weight")
