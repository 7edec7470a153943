"""Framework overhead: `tensorsmith train` against a hand-written PyTorch loop, same run.

The 2-3-1 sigmoid network, 100 samples (80 train), batch 10, 1,000 epochs, Adam lr 0.01:
8,000 optimizer steps either way. Both run as whole processes, alternately, ``--repeats``
times; the medians give two ratios:

- training loop: run.json's ``train_seconds`` / the hand-written loop's seconds (goal ≤ 1.10)
- whole process: ``tensorsmith train`` (imports, evaluation, plots, artifact) / the whole
  hand-written script (goal ≤ 1.5)

    python bench/overhead.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

RECIPE = """\
name: overhead-231
task: classification
data:
  source: moons100.csv
  target: label
  types: {label: category}
  split: {valid: 0.0, test: 0.2, seed: 0}
model: {arch: mlp, hidden: [3], activation: sigmoid}
train:
  epochs: 1000
  batch_size: 10
  optimizer: {name: adam, lr: 0.01}
  log_every: 100
  seed: 0
evaluate:
  metrics: [accuracy, roc_auc, log_loss]
"""


def write_data(folder: Path) -> Path:
    from sklearn.datasets import make_moons

    x, y = make_moons(n_samples=100, noise=0.15, random_state=0)
    path = folder / "moons100.csv"
    lines = ["x1,x2,label"] + [f"{a:.5f},{b:.5f},{c}" for (a, b), c in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return time.perf_counter() - start, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder)
        (folder / "recipe.yaml").write_text(RECIPE)
        store = folder / "store"
        exe = [sys.executable, "-m", "tensorsmith.cli"]
        ours_loop, ours_proc, base_loop, base_proc = [], [], [], []
        for i in range(args.repeats):
            wall, out = timed([sys.executable, str(HERE / "handwritten_231.py"), str(data)], env)
            base_proc.append(wall)
            base_loop.append(float(out.split()[1]))
            wall, _ = timed(
                [*exe, "train", str(folder / "recipe.yaml"), "--store", str(store)], env
            )
            ours_proc.append(wall)
            run = json.loads((store / "overhead-231" / str(i + 1) / "run.json").read_text())
            ours_loop.append(run["train_seconds"])
    med = statistics.median
    rows = [
        ("training loop (s)", med(ours_loop), med(base_loop), 1.10),
        ("whole process (s)", med(ours_proc), med(base_proc), 1.5),
    ]
    print(f"2-3-1 network, 8,000 Adam steps, median of {args.repeats} alternating runs")
    print(f"{'measure':<20}{'tensorsmith':>12}{'hand-written':>14}{'ratio':>8}{'goal':>7}")
    for name, ours, base, goal in rows:
        ratio = ours / base
        print(f"{name:<20}{ours:>12.3f}{base:>14.3f}{ratio:>8.3f}{'≤ ' + str(goal):>7}")


if __name__ == "__main__":
    main()
