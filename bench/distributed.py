"""Distributed training on this CPU: two gloo processes against one, the same global batch.

Each case trains the same recipe three ways, in subprocesses, one after another: one process
(with every core), two processes under DDP (``--nproc-per-node 2``, a core each), and, for the
GPT, two under FSDP. It prints the largest difference of the loss curves (train and valid, at
every evaluation) against the one process, the throughput of each and its ratio to the one
process. On two cores, two processes need not be faster: the figure shows what the gradient
all-reduce and the second process cost.

    python bench/distributed.py            # the MLP and the GPT tiny (about 3 minutes)
    python bench/distributed.py --steps 1000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def train(recipe: Path, store: Path, sets: list[str], *extra: str) -> dict:
    args = [a for s in sets for a in ("--set", s)]
    cmd = [sys.executable, "-m", "tensorsmith", "train", str(recipe), *args, "--store", str(store)]
    proc = subprocess.run([*cmd, *extra], capture_output=True, text=True)
    if proc.returncode not in (0, 3):  # 3: stored, but its quality gate failed
        raise SystemExit(proc.stdout + proc.stderr)
    name = next(p for p in store.iterdir() if not p.name.startswith("."))
    version = name / "1"
    return {
        "run": json.loads((version / "run.json").read_text()),
        "history": pd.read_csv(version / "history.csv"),
    }


def largest_difference(a: pd.DataFrame, b: pd.DataFrame) -> float:
    columns = [c for c in ("train_loss", "valid_loss") if c in a]
    return max(float((a[c] - b[c]).abs().max()) for c in columns)


def case(title: str, recipe: Path, sets: list[str], strategies: list[str], unit: str) -> None:
    rate = f"{unit}_per_second"
    with tempfile.TemporaryDirectory() as tmp:
        one = train(recipe, Path(tmp) / "one", sets)
        base = one["run"][rate]
        print(f"\n{title}: {len(one['history'])} evaluations")
        print(f"  1 process, {torch.get_num_threads()} threads: {base:,.0f} {unit}/s")
        for strategy in strategies:
            store = Path(tmp) / strategy
            two = train(
                recipe, store, [*sets, f"train.distributed={strategy}"], "--nproc-per-node", "2"
            )
            ranks = two["run"]["distributed"]["ranks"]
            per_rank = ", ".join(f"{r[rate]:,.0f}" for r in ranks)
            diff = largest_difference(one["history"], two["history"])
            print(
                f"  2 processes ({strategy}, gloo, a core each): {two['run'][rate]:,.0f} {unit}/s "
                f"(ranks: {per_rank}) = {two['run'][rate] / base:.2f}× the one process; "
                f"loss curves within {diff:.1e} ({'met' if diff < 1e-4 else 'NOT met'}: 1e-4)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="GPT tiny optimizer steps")
    parser.add_argument("--epochs", type=int, default=300, help="MLP epochs")
    args = parser.parse_args()
    print(f"{cpu_name()}; {os.cpu_count()} cores; torch {torch.__version__}")
    case(
        "MLP 2-3-1 (xor_mlp, batch 10 as 5 + 5)",
        EXAMPLES / "xor_mlp" / "recipe.yaml",
        [f"train.epochs={args.epochs}", "evaluate.plots=false"],
        ["ddp"],
        "samples",
    )
    every = max(1, args.steps // 4)
    case(
        "GPT tiny (shakespeare_gpt, 0.8 M parameters, batch 12 as 6 + 6, fp32)",
        EXAMPLES / "shakespeare_gpt" / "recipe.yaml",
        [
            f"train.max_steps={args.steps}",
            f"train.eval_every={every}",
            "train.eval_batches=20",
            "evaluate.samples=0",
            "evaluate.plots=false",
        ],
        ["ddp", "fsdp"],
        "tokens",
    )


if __name__ == "__main__":
    main()
