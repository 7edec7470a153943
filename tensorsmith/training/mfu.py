"""The device's peak matrix-multiply throughput, for model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s ÷ peak FLOP/s (PaLM paper, Chowdhery et al. 2022, Appendix B).
A GPU's peak is its data-sheet figure (dense, no sparsity); a CPU has no data sheet we can
trust across machines, so its peak is measured: the best of a few large square matmuls in the
training precision, cached per CPU model, thread count and torch version.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch

from tensorsmith.training.hardware import cpu_name

__all__ = ["GPU_PEAK_FLOPS", "confirm_peak", "measure_matmul_flops", "peak_flops"]

# dense tensor-core peaks from the vendors' data sheets (FLOP/s)
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100": {"bf16": 989e12, "fp32": 67e12},  # SXM; fp32 without TF32
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
}


def measure_matmul_flops(
    precision: str = "fp32", size: int = 2048, repeats: int = 10, device: str = "cpu"
) -> float:
    """Best FLOP/s of ``size``×``size`` matmuls in fp32 or bf16 (2·n³ FLOPs each).

    The best of several repetitions: a busy machine slows some of them down, never speeds one
    up, so the fastest is the closest to what the hardware can do.
    """
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)  # the global RNG stays untouched
    a = torch.randn(size, size, device=device, generator=gen).to(dtype)
    b = torch.randn(size, size, device=device, generator=gen).to(dtype)
    torch.matmul(a, b)  # warm-up: kernel selection, caches
    best = float("inf")
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        torch.matmul(a, b)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2.0 * size**3 / best


def _key(precision: str, threads: int) -> str:
    return f"{cpu_name()}|{threads} threads|torch {torch.__version__}|{precision}"


def _read(cache: Path | None) -> dict[str, float]:
    if cache is None or not cache.is_file():
        return {}
    try:
        known = json.loads(cache.read_text())
    except ValueError:
        return {}
    return known if isinstance(known, dict) else {}


def _write(cache: Path | None, known: dict[str, float]) -> None:
    """Written whole, then renamed: two runs at once never leave half a file."""
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f".{cache.name}.{os.getpid()}")
        partial.write_text(json.dumps(known, indent=2))
        os.replace(partial, cache)


def peak_flops(
    device: str, precision: str, cache_dir: Path | None = None, threads: int | None = None
) -> float:
    """Peak FLOP/s of ``device`` in ``precision``: data sheet for known GPUs; measured on a CPU
    (with the run's thread count) and cached per CPU model, thread count, torch and precision."""
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        for key, peaks in GPU_PEAK_FLOPS.items():
            if key in name:
                return peaks[precision]
        return measure_matmul_flops(precision, 8192, device="cuda")
    threads = threads or torch.get_num_threads()
    cache = cache_dir / "peak_flops.json" if cache_dir is not None else None
    known = _read(cache)
    key = _key(precision, threads)
    if key not in known:
        known[key] = _measure(precision, threads)
        _write(cache, known)
    return float(known[key])


def _measure(precision: str, threads: int, repeats: int = 10) -> float:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return measure_matmul_flops(precision, repeats=repeats)
    finally:
        torch.set_num_threads(before)


def confirm_peak(
    device: str,
    precision: str,
    cache_dir: Path | None,
    achieved: float,
    peak: float,
    threads: int | None = None,
) -> float:
    """The peak again when a run beat it (the cached figure was measured on a busy machine):
    re-measured, the larger kept and cached. MFU is never reported above 100%."""
    if device == "cuda" or achieved <= peak:
        return peak
    threads = threads or torch.get_num_threads()
    cache = cache_dir / "peak_flops.json" if cache_dir is not None else None
    known = _read(cache)
    better = max(peak, _measure(precision, threads, repeats=20))
    known[_key(precision, threads)] = better
    _write(cache, known)
    return better
