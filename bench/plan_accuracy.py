"""How right the planner is: every example recipe planned on ``--hardware local``, trained
(shortened where the full run is long), then ``tensorsmith plan --compare``: predicted
training time and peak memory against what the run measured. Goals: time within ±25%, peak
memory within ±30%. Each step is its own ``tensorsmith`` process, as a user runs them, so
each peak memory is that process's own.

    python bench/plan_accuracy.py [--only windsor digits …] [--store DIR]

The error printed is (estimate − measurement) ÷ measurement, both taken in the same run on
this machine; the runs of a few seconds are repeated (--repeats) and their medians compared.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tensorsmith.training.hardware import cpu_name

ROOT = Path(__file__).resolve().parents[1]
EX = ROOT / "examples"
SMALL = [
    "model.n_layer=6", "model.n_head=6", "model.n_embd=384", "model.block_size=256",
    "train.batch_size=16", "train.precision=fp32",
]  # fmt: skip
# name → (verb, recipe, overrides, the stored model's name)
CASES: dict[str, tuple[str, Path, list[str], str]] = {
    # the whole 300 epochs: a plan cannot know where early stopping ends a run (--compare
    # plans the epochs a run took, but a sub-second run is mostly noise)
    "windsor-mlp": (
        "train", EX / "windsor_housing/mlp.yaml", ["train.early_stopping=null"],
        "windsor-housing-mlp",
    ),
    "digits-cnn": ("train", EX / "digits_cnn/recipe.yaml", ["train.epochs=3"], "digits-cnn"),
    "sunspots-lstm": (
        "train", EX / "sunspots_lstm/recipe.yaml", ["train.early_stopping=null"],
        "sunspots-lstm",
    ),
    "genre-transformer": (
        "train", EX / "shakespeare_genre/transformer.yaml", ["train.epochs=1"],
        "shakespeare-genre-transformer",
    ),
    "gpt-tiny": (
        "train", EX / "shakespeare_gpt/recipe.yaml",
        ["train.max_steps=300", "train.eval_every=100"], "shakespeare-gpt",
    ),
    "gpt-small": (
        "train", EX / "shakespeare_gpt/recipe.yaml",
        [*SMALL, "train.max_steps=30", "train.eval_every=15", "train.eval_batches=5"],
        "shakespeare-gpt",
    ),
    "minilm-lora": (
        "finetune", EX / "genre_minilm/recipe.yaml", ["data.max_length=32"], "genre-minilm",
    ),
}  # fmt: skip
SHORT = {"windsor-mlp", "digits-cnn", "sunspots-lstm"}  # runs of a few seconds: repeated


def tensorsmith(*args: str, store: Path) -> str:
    env = {**os.environ, "TENSORSMITH_STORE": str(store), "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "tensorsmith", *args], capture_output=True, text=True, env=env
    )
    if done.returncode not in (0, 3):  # 3: a gate that failed still stores the model
        raise SystemExit(f"tensorsmith {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def run_case(name: str, store: Path, threads: int | None, repeats: int) -> dict[str, Any]:
    """Train ``repeats`` times (a version each) and compare each: medians of the estimates and
    of the measurements, as a run of a few seconds varies by a fifth on a shared machine."""
    runs = [run_once(name, store, threads) for _ in range(repeats)]
    rows = {
        q: {k: statistics.median(r["rows"][q][k] for r in runs) for k in ("estimated", "measured")}
        for q in ("training time", "peak memory")
    }
    return {"case": name, "rows": rows, "notes": runs[0]["notes"], "repeats": repeats}


def run_once(name: str, store: Path, threads: int | None) -> dict[str, Any]:
    verb, recipe, overrides, model = CASES[name]
    overrides = overrides + ([f"train.threads={threads}"] if threads else [])
    sets = [x for o in overrides for x in ("--set", o)]
    extra = []
    if verb == "finetune":
        sys.path.insert(0, str(EX / "genre_minilm"))
        from extract import extract  # type: ignore[import-not-found]

        extra = ["--from", str(extract())]
    tensorsmith(verb, str(recipe), *sets, *extra, store=store)
    # the name alone is its newest version: the one just trained
    shown = json.loads(tensorsmith("plan", "--compare", model, "--json", store=store))
    return {"rows": {r["quantity"]: r for r in shown["rows"]}, "notes": shown["notes"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", choices=list(CASES), default=list(CASES))
    parser.add_argument("--store", type=Path, default=None)
    parser.add_argument(
        "--threads", type=int, default=None, help="train.threads for every case (a shared machine)"
    )
    parser.add_argument(
        "--repeats", type=int, default=3, help="runs of each case shorter than a few seconds"
    )
    args = parser.parse_args()
    store = args.store or Path(tempfile.mkdtemp(prefix="plan-bench-"))
    print(f"plan accuracy on {cpu_name()}, {os.cpu_count()} cores; store {store}")
    header = "| case | time est. | time meas. | error | peak mem est. | peak mem meas. | error |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for name in args.only:
        result = run_case(name, store, args.threads, args.repeats if name in SHORT else 1)
        t, m = result["rows"]["training time"], result["rows"]["peak memory"]
        t_err = (t["estimated"] - t["measured"]) / t["measured"]
        m_err = (m["estimated"] - m["measured"]) / m["measured"]
        ok = "ok" if abs(t_err) <= 0.25 and abs(m_err) <= 0.30 else "MISS"
        lines.append(
            f"| {name} ×{result['repeats']} | {t['estimated']:.1f} s | {t['measured']:.1f} s | "
            f"{t_err:+.1%} | "
            f"{m['estimated'] / 1e6:.0f} MB | {m['measured'] / 1e6:.0f} MB | {m_err:+.1%} |"
        )
        print(lines[-1], ok, "; ".join(result["notes"]), flush=True)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
