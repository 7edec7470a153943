"""What ran a training: the device, the CPU, library versions and the peak memory."""

from __future__ import annotations

import os
import platform
import resource
import sys
from typing import Any

import torch

__all__ = [
    "cpu_name",
    "hardware",
    "library_versions",
    "native_bf16",
    "peak_memory_bytes",
    "pick_device",
    "resolve_precision",
]


def pick_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_name() -> str:
    """The CPU's model name ("AMD EPYC 9R14", "Intel(R) Xeon(R) Platinum 8488C"), or its arch."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def native_bf16(device: str) -> bool:
    """Whether the device multiplies bf16 matrices in hardware: a GPU that supports bf16, or a
    CPU with AMX (``amx_bf16``) or AVX-512 BF16 (``avx512_bf16``); elsewhere bf16 is emulated."""
    if device == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    return bool({"amx_bf16", "avx512_bf16"} & _cpu_flags())


def resolve_precision(setting: str, device: str) -> str:
    """``train.precision`` → "fp32" or "bf16" ("auto": bf16 where the hardware has it)."""
    if setting != "auto":
        return setting
    return "bf16" if native_bf16(device) else "fp32"


def hardware(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "device": device,
        "cpu": cpu_name(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in (
        "tensorsmith",
        "torch",
        "numpy",
        "pandas",
        "scikit-learn",
        "safetensors",
        "tokenizers",
    ):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB
