"""How fast the command line answers: `tensorsmith --help`, `validate`, `models` and `init`
against `python -c pass` (the interpreter's own start), medians of alternating runs.

    python bench/cli_startup.py [--repeats 7]

The light commands import no torch (the goal is under 1 s each on this machine kind); `train`
imports it when it starts to work.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "examples"


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    from tensorsmith.training.hardware import cpu_name

    cli = [sys.executable, "-m", "tensorsmith"]
    commands = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tensorsmith --help": [*cli, "--help"],
        "tensorsmith validate": [*cli, "validate", str(EXAMPLES / "xor_mlp" / "recipe.yaml")],
        "tensorsmith models": [*cli, "models", "--store", "store"],
        "tensorsmith init": [
            *cli,
            "init",
            str(EXAMPLES / "windsor_housing" / "windsor_housing.csv"),
            "--target",
            "price",
        ],
    }
    with tempfile.TemporaryDirectory() as tmp:
        times: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                times[name].append(timed(command, Path(tmp)))
    base = statistics.median(times["python -c pass"])
    print(f"CPU: {cpu_name()}; median of {args.repeats} alternating runs")
    print(f"{'command':<24}{'seconds':>9}{'vs python -c pass':>20}{'goal':>9}")
    for name, values in times.items():
        median = statistics.median(values)
        goal = "< 1 s" if name != "python -c pass" else ""
        print(f"{name:<24}{median:>9.3f}{median / base:>19.1f}x{goal:>9}")


if __name__ == "__main__":
    main()
