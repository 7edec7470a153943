"""Quantized modules and the weights formats that store them without pickle.

Three formats (``config.json`` ``compression.format``):

- ``int8-dynamic``: PyTorch's dynamic int8 quantization (``quantize_dynamic``) of the Linear,
  LSTM and GRU layers: int8 weights with per-output-channel scales, activations quantized per
  batch at run time; embeddings become int8 rows with a scale per row (:class:`Int8Embedding`).
  One safetensors file holds each packed layer's int8 weight, its scales and zero points, its
  float bias, and every other tensor of the model (float, or an embedding's int8 rows) by name.
  Loading
  quantizes the freshly built fp32 module and puts the stored int8 weights into its packed
  parameters, so the loaded model computes exactly what the saved one did.
- ``int8-weight``: weight-only int8: :class:`Int8WeightLinear` keeps int8 weights and one fp32
  scale per output channel and multiplies with ``torch._weight_int8pack_mm``; activations stay in
  the model's float dtype (fp32 or bf16).
- ``int4-weight``: weight-only int4 in groups of :data:`INT4_GROUP` input channels (asymmetric:
  a scale and an offset per group and output channel), through
  ``torch._weight_int4pack_mm_for_cpu``.

Both weight-only modules hold plain tensors (buffers), so their formats are a safetensors file of
the module's state dict, loaded into the fp32 module after its Linear layers are swapped.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from tensorsmith.errors import StoreError

__all__ = [
    "INT4_GROUP",
    "Int4WeightLinear",
    "Int8Embedding",
    "Int8WeightLinear",
    "dynamic_int8",
    "dynamic_layers",
    "int4_fits",
    "weight_only",
]

DYNAMIC_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.LSTM, nn.GRU)
INT4_GROUP = 32  # input channels that share one int4 scale and offset
INT4_ROWS = 16  # the CPU int4 kernel packs output channels in blocks of 16


# ---------------------------------------------------------------------- dynamic int8 (torch.ao)


@contextmanager
def quiet_quantization() -> Iterator[None]:
    """Silence exactly the deprecation warnings torch 2.13 gives for ``torch.ao.quantization``
    and for creating quantized tensors; everything else still warns."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.ao.quantization is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore",
            message="torch.quantize_per_tensor, torch.quantize_per_channel",
            category=UserWarning,
        )
        yield


def dynamic_layers(module: nn.Module) -> list[str]:
    """Names of the layers dynamic int8 quantizes (Linear, LSTM, GRU)."""
    return [name for name, m in module.named_modules() if isinstance(m, DYNAMIC_TYPES)]


def dynamic_int8(module: nn.Module) -> nn.Module:
    """A copy of ``module`` (on the CPU, in eval mode) whose Linear, LSTM and GRU layers are
    dynamically quantized to int8 with per-output-channel weight scales, and whose embeddings
    (not tied to another layer) hold int8 rows (:class:`Int8Embedding`)."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    spec: dict[Any, Any] = {t: per_channel_dynamic_qconfig for t in DYNAMIC_TYPES}
    with quiet_quantization():
        quantized: nn.Module = quantize_dynamic(module.cpu().eval(), spec, dtype=torch.qint8)
    int8_embeddings(quantized)
    return quantized.eval()


class Int8Embedding(nn.Module):
    """``nn.Embedding`` with int8 rows and one fp32 scale per row (weight-only, symmetric).

    A text model's token table is most of its bytes (8,000 x 64 floats in the genre
    transformer, four times its Linear weights): quantizing only the Linear layers would
    leave the file nearly as large. A lookup dequantizes just the rows it reads.
    """

    weight_int8: torch.Tensor
    weight_scale: torch.Tensor

    def __init__(self, num_embeddings: int, embedding_dim: int) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        shape = (num_embeddings, embedding_dim)
        self.register_buffer("weight_int8", torch.zeros(shape, dtype=torch.int8))
        self.register_buffer("weight_scale", torch.ones(num_embeddings))

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding) -> Int8Embedding:
        new = cls(embedding.num_embeddings, embedding.embedding_dim)
        q, scale = symmetric_int8(embedding.weight.detach().float())
        new.weight_int8.copy_(q)
        new.weight_scale.copy_(scale)
        return new

    @property
    def weight(self) -> torch.Tensor:
        """The dequantized table (V, C), for code that reads an embedding's weight."""
        return self.weight_int8.float() * self.weight_scale[:, None]

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        rows = F.embedding(idx, self.weight_int8).float()  # (..., C)
        return rows * F.embedding(idx, self.weight_scale[:, None])  # (..., C) * (..., 1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 rows"


def symmetric_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 values in [-127, 127] and one scale per row: ``w ≈ q * scale[:, None]``."""
    scale = w.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # (rows,)
    return torch.round(w / scale[:, None]).clamp(-127, 127).to(torch.int8), scale


def int8_embeddings(module: nn.Module) -> list[str]:
    """Replace (in place) the embeddings whose table no other layer shares by
    :class:`Int8Embedding`; returns their names."""
    shared = _shared_weights(module)
    names = [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Embedding) and id(m.weight) not in shared
    ]
    for name in names:
        _replace(module, name, Int8Embedding.from_embedding(module.get_submodule(name)))  # type: ignore[arg-type]
    return names


def _replace(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    setattr(module.get_submodule(parent_name), attr, new)


def _quantized_modules(module: nn.Module) -> Iterator[tuple[str, nn.Module]]:
    from torch.ao.nn.quantized import dynamic as qd

    for name, m in module.named_modules():
        if isinstance(m, qd.Linear | qd.LSTM | qd.GRU):
            yield name, m


def _weights_of(m: nn.Module) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor | None]]:
    """A dynamic layer's quantized weights and float biases, by parameter name."""
    from torch.ao.nn.quantized import dynamic as qd

    layer: Any = m  # torch.ao's dynamic layers are not typed
    if isinstance(m, qd.Linear):
        return {"weight": layer.weight()}, {"bias": layer.bias()}
    return dict(layer.get_weight()), dict(layer.get_bias())  # LSTM/GRU: weight_ih_l0, bias_ih_l0 …


def _int8_parts(prefix: str, w: torch.Tensor) -> dict[str, torch.Tensor]:
    if w.qscheme() == torch.per_channel_affine:
        scale, zero = w.q_per_channel_scales(), w.q_per_channel_zero_points()
        if w.q_per_channel_axis() != 0:
            raise ValueError(f"{prefix}: per-channel scales along axis {w.q_per_channel_axis()}")
    else:  # per tensor: 0-dim scale and zero point
        scale = torch.tensor(w.q_scale(), dtype=torch.float64)
        zero = torch.tensor(w.q_zero_point(), dtype=torch.int64)
    return {prefix: w.int_repr(), f"{prefix}.scale": scale, f"{prefix}.zero_point": zero}


def _int8_tensor(tensors: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    values, scale, zero = (tensors[prefix + s] for s in ("", ".scale", ".zero_point"))
    if scale.dim() == 0:
        return torch._make_per_tensor_quantized_tensor(values, float(scale), int(zero))
    return torch._make_per_channel_quantized_tensor(values, scale, zero, 0)


class Int8Dynamic:
    """The ``int8-dynamic`` weights format (see the module docstring)."""

    file = "model-int8.safetensors"

    def save(self, module: nn.Module, folder: Path) -> str:
        tensors: dict[str, torch.Tensor] = {}
        for name, m in _quantized_modules(module):
            weights, biases = _weights_of(m)
            for w_name, w in weights.items():
                tensors.update(_int8_parts(f"{name}.{w_name}", w))
            for b_name, b in biases.items():
                if b is not None:
                    tensors[f"{name}.{b_name}"] = b.detach()
        tensors.update(_plain_state(module))
        tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
        save_file(tensors, str(folder / self.file), metadata={"format": "int8-dynamic"})
        return self.file

    def load(self, module: nn.Module, folder: Path, config: dict[str, Any]) -> nn.Module:
        tensors = _read(folder / str(config.get("weights", self.file)))
        quantized = dynamic_int8(module)
        used: set[str] = set()
        with quiet_quantization():
            for name, m in _quantized_modules(quantized):
                _restore_layer(name, m, tensors, used)
        floats = {k: v for k, v in tensors.items() if k not in used}
        expected = set(_plain_state(quantized))
        if set(floats) != expected:
            _mismatch(folder / self.file, expected - set(floats), set(floats) - expected)
        with torch.no_grad():
            for key, value in floats.items():
                _tensor_named(quantized, key).copy_(value)
        return quantized.eval()


def _restore_layer(
    name: str, m: nn.Module, tensors: dict[str, torch.Tensor], used: set[str]
) -> None:
    """Put the stored int8 weights and float biases of layer ``name`` into its packed params."""
    from torch.ao.nn.quantized import dynamic as qd

    weights, biases = _weights_of(m)
    try:
        q = {w: _int8_tensor(tensors, f"{name}.{w}") for w in weights}
        b = {k: tensors.get(f"{name}.{k}") for k in biases}
    except KeyError as exc:
        raise StoreError(f"quantized weights of layer {name!r} are missing {exc}") from None
    for w in weights:
        used.update(f"{name}.{w}{s}" for s in ("", ".scale", ".zero_point"))
    used.update(f"{name}.{k}" for k, v in b.items() if v is not None)
    layer: Any = m
    if isinstance(m, qd.Linear):
        layer.set_weight_bias(q["weight"], b["bias"])
    else:
        layer.set_weight_bias({**q, **b})


def _plain_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The plain tensors outside the packed layers (float parameters and buffers, int8
    embeddings), by state-dict name."""
    skip = tuple(f"{name}." for name, _ in _quantized_modules(module))
    return {
        k: v
        for k, v in module.state_dict().items()
        if isinstance(v, torch.Tensor) and not v.is_quantized and not k.startswith(skip)
    }


def _tensor_named(module: nn.Module, key: str) -> torch.Tensor:
    """The parameter or buffer a state-dict key names."""
    owner, _, attr = key.rpartition(".")
    tensor = getattr(module.get_submodule(owner), attr)
    assert isinstance(tensor, torch.Tensor), key
    return tensor


def _read(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise StoreError(f"model version {path.parent} is damaged: {path.name} is missing")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise StoreError(
            f"model version {path.parent} is damaged: {path.name} cannot be read ({exc})"
        ) from None


def _mismatch(path: Path, missing: set[str], unexpected: set[str]) -> None:
    raise StoreError(
        f"model version {path.parent} is damaged: {path.name} does not match the recipe's "
        f"model (missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})"
    )


# ---------------------------------------------------------------------- weight-only int8 / int4


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
    shared = _shared_weights(module)
    return [
        name
        for name, m in module.named_modules()
        if isinstance(m, nn.Linear)
        and id(m.weight) not in shared
        and (kind != "int4-weight" or int4_fits(m))
    ]


def _shared_weights(module: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for m in module.modules():
        for p in m.parameters(recurse=False):
            seen[id(p)] = seen.get(id(p), 0) + 1
    return {k for k, n in seen.items() if n > 1}


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
        _replace(module, name, new)
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
        _read(path)  # a clear error for a missing or unreadable file
        weight_only(module, self.kind, quantize=False)
        missing, unexpected = load_model(module, str(path), strict=False)
        if missing or unexpected:
            _mismatch(path, set(missing), set(unexpected))
        return module.eval()


INT8_DYNAMIC = Int8Dynamic()
INT8_WEIGHT = WeightOnly("int8-weight")
INT4_WEIGHT = WeightOnly("int4-weight")
