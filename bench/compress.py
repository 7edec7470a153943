"""The compression figures of issue 13, from the example recipes as shipped, in one run.

- genre int8: the genre transformer (examples/shakespeare_genre/transformer.yaml) quantized to
  dynamic int8: p50 latency of ``predict`` on 32 test texts against the parent (goal ≥ 1.5×
  faster), size on disk (≥ 3× smaller), test macro-F1 (within 1 point).
- genre prune: structured pruning of half its heads and hidden units, 3 recovery epochs:
  ≥ 1.4× faster at 32 texts, test macro-F1 within 2 points.
- genre distill: the student of examples/genre_distill/student.yaml trained with the transformer
  as its teacher: ≥ 4× fewer parameters, test macro-F1 within 2 points of the teacher's, and
  above the same student trained without the teacher (trained in the same run).
- windsor onnx: the Windsor MLP (examples/windsor_housing/mlp.yaml) exported to ONNX with its
  preprocessing in the graph: ONNX Runtime alone on the raw test rows against the torch
  ``Predictor`` (max |difference|, goal ≤ 1e-4), single-row p50 latency of each.
- gpt int8-weight: the GPT small configuration (6 layers, 6 heads, 384 channels, 256 context)
  on the Shakespeare corpus, trained ``--gpt-steps`` steps, then weight-only int8: generation
  tokens/s (greedy, 128 new tokens) and valid loss against the fp32 parent and a bf16 copy.

Every ratio is measured in this run, parent beside child, on this machine (named in the output).

    python bench/compress.py [--only int8 prune distill onnx gpt] [--store DIR] [--gpt-steps N]
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from rich.console import Console

import tensorsmith
from tensorsmith.compression.measure import quality_split, time_p50
from tensorsmith.data.text import DataWarning
from tensorsmith.evaluation.evaluate import evaluate
from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
GENRE = EXAMPLES / "shakespeare_genre" / "transformer.yaml"
STUDENT = EXAMPLES / "genre_distill" / "student.yaml"
WINDSOR = EXAMPLES / "windsor_housing" / "mlp.yaml"
GPT = EXAMPLES / "shakespeare_gpt" / "recipe.yaml"
SMALL = ["model.n_layer=6", "model.n_head=6", "model.n_embd=384", "model.block_size=256"]
QUIET = Console(file=io.StringIO())
DTYPES = {"tensor(int64)": np.int64, "tensor(bool)": np.bool_, "tensor(float)": np.float32}
SHOW = Console(highlight=False)


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def _trained(recipe: Path, store: Path, overrides: list[str] | None = None) -> Any:
    """The newest stored version of the recipe's model, else a fresh training."""
    name = tensorsmith.validate(recipe, overrides).name
    for row in reversed(tensorsmith.models(name, str(store))):  # a trained one, not a child
        run = json.loads((Path(row["path"]) / "run.json").read_text())
        if row["status"] == "ok" and not run.get("parent"):
            return tensorsmith.load(row["path"])
    print(f"training {recipe.relative_to(EXAMPLES)} …", flush=True)
    return tensorsmith.train(recipe, overrides, store=store, console=QUIET)


def _f1(model: Any) -> float:
    return float(model.metrics["test"]["f1_macro"])


def _p50_at(model: Any, rows: int) -> float:
    _, raw = quality_split(model.task)
    batch = raw.reset_index(drop=True).iloc[:rows]
    return time_p50(lambda: model.predictor.predict(batch), 3.0)


def _compress(ref: str, store: Path, **options: Any) -> Any:
    return tensorsmith.compress(ref, store=store, console=SHOW, **options)


def genre_int8(store: Path, parent: Any) -> None:
    child = _compress(parent.name, store, quantize="int8")
    speed = _p50_at(parent, 32) / _p50_at(child, 32)
    size = (parent.path / "model.safetensors").stat().st_size / _weights_bytes(child)
    drop = (_f1(parent) - _f1(child)) * 100
    print(f"genre int8 ({child.config['compression']['format']}): {speed:.2f}× faster at 32 "
          f"texts ({_met(speed >= 1.5)}), {size:.2f}× smaller ({_met(size >= 3)}), macro-F1 "
          f"{_f1(parent):.4f} → {_f1(child):.4f} ({drop:+.2f} points lost, "
          f"{_met(drop <= 1.0)})")  # fmt: skip
    quantizers(parent, child)


def quantizers(parent: Any, child: Any) -> None:
    """PyTorch's dynamic int8 against ONNX Runtime's, each against its own fp32: one forward
    over 32 encoded test texts (the tokenizer left out), on the same threads."""
    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from tensorsmith.compression.onnx_export import export_onnx

    _, raw = quality_split(parent.task)
    batch = next(iter(parent.task.eval_split(raw.reset_index(drop=True).iloc[:32]).batches()))
    inputs = batch[:-1]
    folder = Path(tempfile.mkdtemp(prefix="bench-ort-"))
    onnx.save(export_onnx(parent.predictor, preprocessing=False).module.graph, folder / "f.onnx")
    quantize_dynamic(folder / "f.onnx", folder / "q.onnx", weight_type=QuantType.QInt8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    times = {}
    with torch.no_grad():
        times["torch fp32"] = time_p50(lambda: parent.module(*inputs), 3.0)
        times["torch int8"] = time_p50(lambda: child.module(*inputs), 3.0)
    for name in ("f", "q"):
        session = ort.InferenceSession(str(folder / f"{name}.onnx"), options)
        given = session.get_inputs()
        feeds = {
            i.name: t.numpy().astype(DTYPES[i.type]) for i, t in zip(given, inputs, strict=True)
        }
        label = "ONNX Runtime " + ("fp32" if name == "f" else "int8")
        times[label] = time_p50(lambda s=session, f=feeds: s.run(None, f), 3.0)
    shown = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in times.items())
    best = min(("torch int8", "ONNX Runtime int8"), key=times.__getitem__)
    print(f"genre int8, the quantizers (one forward over 32 texts): {shown}; faster: {best}")


def _weights_bytes(model: Any) -> int:
    return int((model.path / str(model.config.get("weights", "model.safetensors"))).stat().st_size)


def genre_prune(store: Path, parent: Any) -> None:
    child = _compress(parent.name, store, prune=0.5, structured=True, recover_epochs=3)
    speed = _p50_at(parent, 32) / _p50_at(child, 32)
    drop = (_f1(parent) - _f1(child)) * 100
    print(f"genre structured prune 50% + 3 recovery epochs: {speed:.2f}× faster at 32 texts "
          f"({_met(speed >= 1.4)}), macro-F1 {_f1(parent):.4f} → {_f1(child):.4f} "
          f"({drop:+.2f} points lost, {_met(drop <= 2.0)})")  # fmt: skip


def genre_distill(store: Path, parent: Any) -> None:
    child = _compress(parent.name, store, distill=STUDENT)
    alone = tensorsmith.train(STUDENT, store=store, console=QUIET)
    ratio = _params(parent) / _params(child)
    drop = (_f1(parent) - _f1(child)) * 100
    print(f"genre distillation: {_params(child):,} parameters, {ratio:.1f}× fewer than the "
          f"teacher ({_met(ratio >= 4)}); macro-F1 teacher {_f1(parent):.4f}, student "
          f"{_f1(child):.4f} ({drop:+.2f} points lost, {_met(drop <= 2.0)}), the same student "
          f"without the teacher {_f1(alone):.4f} ({_met(_f1(child) > _f1(alone))})")  # fmt: skip


def _params(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.module.parameters()}.values())


def _feeds(session: Any, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """Raw columns as the graph takes them: numbers float32 (NaN missing), else strings."""
    out = {}
    for given in session.get_inputs():
        col = frame[given.name]
        if given.type == "tensor(float)":
            out[given.name] = pd.to_numeric(col, errors="coerce").to_numpy(np.float32)[:, None]
        else:
            text = col.astype(object).where(col.notna(), "").astype(str)
            out[given.name] = text.to_numpy(object)[:, None]
    return out


def windsor_onnx(store: Path) -> None:
    import onnxruntime as ort

    parent = _trained(WINDSOR, store)
    child = _compress(parent.name, store, onnx=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(str(child.path / "model.onnx"), options)
    _, raw = quality_split(parent.task)
    rows = raw.reset_index(drop=True)
    target = f"{parent.recipe.data.target}_predicted"
    torch_values = parent.predict(rows)[target].to_numpy(dtype=float)
    (onnx_values,) = session.run(["prediction"], _feeds(session, rows))
    gap = float(np.max(np.abs(onnx_values.reshape(-1) - torch_values) / np.abs(torch_values)))
    one = rows.iloc[:1]
    torch_ms = time_p50(lambda: parent.predict(one), 3.0, 300) * 1e3
    onnx_ms = time_p50(lambda: session.run(None, _feeds(session, one)), 3.0, 300) * 1e3
    print(f"windsor onnx: max relative |ONNX Runtime − torch| {gap:.2e} on {len(rows)} test rows "
          f"({_met(gap <= 1e-4)}); one row: ONNX Runtime alone (raw columns in) {onnx_ms:.3f} ms, "
          f"torch Predictor.predict {torch_ms:.3f} ms ({torch_ms / onnx_ms:.0f}×)")  # fmt: skip


def gpt_int8_weight(store: Path, steps: int) -> None:
    overrides = [*SMALL, f"train.max_steps={steps}", "train.eval_every=1000000", "name=gpt-small"]
    overrides += ["train.checkpoint_every=1000000", "evaluate.samples=0"]
    parent = _trained(GPT, store, overrides)
    child = _compress(parent.name, store, quantize="int8-weight")
    bf16 = tensorsmith.load(parent.name, store=store)
    bf16.predictor.module.to(torch.bfloat16)
    for label, model in (("fp32", parent), ("bf16", bf16), ("int8-weight", child)):
        rate, loss = _generation(model)
        print(f"gpt small {label}: {rate:,.1f} tokens/s generated (128 new, greedy), valid loss "
              f"{loss:.5f}")  # fmt: skip


def _generation(model: Any) -> tuple[float, float]:
    _, raw = quality_split(model.task)
    split = model.task.eval_split(raw)
    loss = float(evaluate(model.task, model.module, split, ["loss"], 40)["loss"])
    start = time.perf_counter()
    model.predictor.generate("ROMEO:", max_new_tokens=128, temperature=0.0)
    return 128 / (time.perf_counter() - start), loss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", default=["int8", "prune", "distill", "onnx", "gpt"])
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument("--gpt-steps", type=int, default=300)
    args = parser.parse_args()
    warnings.simplefilter("ignore", DataWarning)  # truncated passages: said at training
    store = args.store or Path(tempfile.mkdtemp(prefix="bench-compress-"))
    print(f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    if {"int8", "prune", "distill"} & set(args.only):
        genre = _trained(GENRE, store)
        for name, run in (("int8", genre_int8), ("prune", genre_prune), ("distill", genre_distill)):
            if name in args.only:
                run(store, genre)
    if "onnx" in args.only:
        windsor_onnx(store)
    if "gpt" in args.only:
        gpt_int8_weight(store, args.gpt_steps)


if __name__ == "__main__":
    main()
