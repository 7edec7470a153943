"""The device's peak matrix-multiply throughput, for model FLOPs utilisation (MFU).

MFU = achieved model FLOP/s ÷ peak FLOP/s (PaLM paper, Chowdhery et al. 2022, Appendix B).
A GPU's peak is its data-sheet figure (dense, no sparsity); a CPU has no data sheet we can
trust across machines, so its peak is measured: the best of a few large square matmuls in the
training precision, cached per CPU model, thread count and torch version.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

__all__ = ["GPU_PEAK_FLOPS", "measure_matmul_flops", "peak_flops"]

# dense tensor-core peaks from the vendors' data sheets (FLOP/s)
GPU_PEAK_FLOPS: dict[str, dict[str, float]] = {
    "H100": {"bf16": 989e12, "fp32": 67e12},  # SXM; fp32 without TF32
    "H200": {"bf16": 989e12, "fp32": 67e12},
    "A100": {"bf16": 312e12, "fp32": 19.5e12},
}


def measure_matmul_flops(
    precision: str = "fp32", size: int = 2048, repeats: int = 5, device: str = "cpu"
) -> float:
    """Best FLOP/s of ``size``×``size`` matmuls in fp32 or bf16 (2·n³ FLOPs each)."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
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


def peak_flops(device: str, precision: str, cache_dir: Path | None = None) -> float:
    """Peak FLOP/s of ``device`` in ``precision``: data sheet for known GPUs, measured on CPU."""
    if device == "cuda":
        name = torch.cuda.get_device_name(0)
        for key, peaks in GPU_PEAK_FLOPS.items():
            if key in name:
                return peaks[precision]
        return measure_matmul_flops(precision, 8192, device="cuda")
    key = (
        f"{platform.processor() or platform.machine()}|{torch.get_num_threads()}|"
        f"{torch.__version__}|{precision}"
    )
    cache = cache_dir / "peak_flops.json" if cache_dir is not None else None
    known: dict[str, float] = {}
    if cache is not None and cache.is_file():
        try:
            known = json.loads(cache.read_text())
        except ValueError:
            known = {}
    if key not in known:
        known[key] = measure_matmul_flops(precision)
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps(known, indent=2))
    return float(known[key])
