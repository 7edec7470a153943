"""Parent beside child, measured in one run on this machine: size, parameters, latency,
throughput, peak memory and quality.

Latency is the median (p50) of repeated calls after warm-up, through the ``Predictor`` a user
or the server calls: ``predict`` on 1 and on 64 raw records of the evaluation split (encoding
included), or, for a language model, one generated token at batch 1 and one forward pass over
64 windows. Peak memory is measured in a fresh process (``footprint``), which loads the version
from disk and predicts one batch of 64: what a process serving it needs above the libraries.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from tensorsmith.data.text import DataWarning
from tensorsmith.evaluation.evaluate import evaluate
from tensorsmith.tasks.base import Task
from tensorsmith.tasks.predictor import Predictor

__all__ = ["Measured", "measure", "parameter_counts", "quality_split", "time_p50"]

WARMUP = 2


@dataclass
class Measured:
    """One version's figures (``None`` where a figure could not be taken)."""

    size_bytes: int
    parameters: int
    nonzero_parameters: int
    latency_ms: dict[str, float]  # batch size ("1", "64") → p50 milliseconds
    throughput: float  # rows/s at batch 64, or generated tokens/s at batch 1
    throughput_unit: str
    peak_memory_bytes: float | None
    metrics: dict[str, float]  # the recipe's metrics on ``split``
    split: str
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def time_p50(call: Callable[[], Any], budget: float, repeats: int = 50) -> float:
    """Median seconds of ``call`` after warm-up: up to ``repeats`` calls within ``budget`` s."""
    for _ in range(WARMUP):
        call()
    times: list[float] = []
    spent = time.perf_counter()
    while len(times) < repeats and (len(times) < 3 or time.perf_counter() - spent < budget):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def quality_split(task: Task) -> tuple[str, Any]:
    """The split a compression is judged on: test when the data has one, else valid."""
    splits = task.read_splits()
    for name in ("test", "valid"):
        if name in splits and len(splits[name]):
            return name, splits[name]
    raise ValueError("the model's data has neither a test nor a valid split to measure on")


def _generates(predictor: Predictor) -> bool:
    return "generate" in predictor.task.verbs


def _latencies(predictor: Predictor, raw: Any, budget: float) -> tuple[dict[str, float], float]:
    """p50 milliseconds at batch 1 and 64, and the throughput of the faster unit."""
    if _generates(predictor):
        tokens = 16
        per_call = time_p50(
            lambda: predictor.generate("", max_new_tokens=tokens, temperature=0.0), budget, 10
        )
        windows = _windows(predictor, raw, 64)
        with torch.no_grad():
            forward = time_p50(lambda: predictor.module(windows), budget, 10)
        return {"1": per_call / tokens * 1e3, "64": forward * 1e3}, tokens / per_call
    rows = raw.reset_index(drop=True)
    one, many = rows.iloc[:1], rows.iloc[: min(64, len(rows))]
    single = time_p50(lambda: predictor.predict(one), budget)
    batch = time_p50(lambda: predictor.predict(many), budget)
    return {"1": single * 1e3, str(len(many)): batch * 1e3}, len(many) / batch


def _windows(predictor: Predictor, raw: Any, n: int) -> torch.Tensor:
    """``n`` input windows of the split, for a language model's batch forward pass."""
    parts: list[torch.Tensor] = []
    for batch in predictor.task.eval_split(raw).batches():
        parts.append(batch[0])
        if sum(len(p) for p in parts) >= n:
            break
    return torch.cat(parts)[:n]


def parameter_counts(module: torch.nn.Module) -> tuple[int, int]:
    """(parameters, non-zero parameters) of a module; a tied tensor is counted once."""
    params = list(module.parameters())  # yields a shared parameter once
    return sum(p.numel() for p in params), sum(int(torch.count_nonzero(p.detach())) for p in params)


def measure(
    predictor: Predictor,
    counts: tuple[int, int] | None = None,
    budget: float = 1.0,
    eval_limit: int | None = None,
) -> Measured:
    """Every figure of one loaded version; ``counts`` (parameters, non-zero) where the module
    does not hold them as parameters (a quantized or ONNX module)."""
    folder = predictor.path
    weights = folder / str(predictor.config.get("weights", "model.safetensors"))
    size = weights.stat().st_size if weights.is_file() else 0
    split, raw = quality_split(predictor.task)
    names = predictor.recipe.evaluate.metrics
    limit = eval_limit if eval_limit is not None else predictor.task.eval_limit  # an LM's batches
    metrics = evaluate(
        predictor.task, predictor.module, predictor.task.eval_split(raw), names, limit
    )
    with warnings.catch_warnings():  # truncated texts …: said when the model was trained
        warnings.simplefilter("ignore", DataWarning)
        latency, throughput = _latencies(predictor, raw, budget)
    parameters, nonzero = counts or parameter_counts(predictor.module)
    peak, notes = footprint(folder)
    return Measured(
        size_bytes=size,
        parameters=parameters,
        nonzero_parameters=nonzero,
        latency_ms=latency,
        throughput=throughput,
        throughput_unit="tokens/s" if _generates(predictor) else "rows/s",
        peak_memory_bytes=peak,
        metrics={  # the recipe's own metrics (the baselines are the same for both)
            k: float(v) for k, v in metrics.items() if k in names and isinstance(v, int | float)
        },
        split=split,
        notes=notes,
    )


def footprint(folder: Path) -> tuple[float | None, list[str]]:
    """Peak resident memory above the libraries of a fresh process that loads ``folder`` and
    predicts one batch of 64 (a language model: generates 16 tokens)."""
    code = "import sys\nfrom tensorsmith.compression.measure import _footprint\n"
    code += "_footprint(sys.argv[1])"
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    done = subprocess.run(
        [sys.executable, "-c", code, str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return None, [f"peak memory not measured: the measuring process failed ({last})"]
    return float(json.loads(done.stdout.strip().splitlines()[-1])["peak"]), []


def _footprint(folder: str) -> None:
    """The measuring process: print {"peak": bytes} as its last line."""
    from tensorsmith.planning.calibrate import peak_during
    from tensorsmith.recipe import parse_recipe
    from tensorsmith.tasks import TASKS
    from tensorsmith.tasks.files import read_yaml_file

    path = Path(folder)
    recipe = parse_recipe(read_yaml_file(path / "recipe.yaml"), base_dir=path)
    _, raw = quality_split(TASKS.get(recipe.task).from_state(recipe, path))  # no weights yet

    def run() -> None:
        predictor = Predictor.load(path)
        if _generates(predictor):
            predictor.generate("", max_new_tokens=16, temperature=0.0)
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DataWarning)
                predictor.predict(raw.reset_index(drop=True).iloc[:64])

    print(json.dumps({"peak": peak_during(run)}))
