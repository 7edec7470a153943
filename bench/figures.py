"""The figures the image, sequence and text examples promise, from their recipes as shipped.

Trains each recipe once into a temporary store and prints its test figures beside the goal:

- digits CNN: test accuracy ≥ 0.98
- sunspots LSTM: test RMSE at least 20% below the naive "next year equals this year" forecast,
  both from the same evaluation (metrics.json ``rmse`` and ``naive_rmse``)
- Shakespeare genre on unseen plays: macro-F1 of the rnn and transformer recipes beside the
  majority class and TF-IDF + logistic regression on the same split; the better of the two
  reaches the TF-IDF macro-F1 minus 0.05

    python bench/figures.py [--only digits sunspots genre] [--store DIR]   # keep the models
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

import tensorsmith
from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def train(recipe: Path, store: Path) -> tuple[dict[str, Any], dict[str, Any], float]:
    start = time.perf_counter()
    model = tensorsmith.train(recipe, store=store, console=Console(file=io.StringIO()))
    metrics = json.loads((Path(model.path) / "metrics.json").read_text())
    return metrics["test"], model.run, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["digits", "sunspots", "genre"])
    parser.add_argument("--store", type=Path, help="keep the trained models here")
    args = parser.parse_args()
    print(f"{cpu_name()}; recipes as shipped; test split")
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp)
        if "digits" in args.only:
            test, run, wall = train(EXAMPLES / "digits_cnn" / "recipe.yaml", store)
            ok = test["accuracy"] >= 0.98
            print(
                f"digits CNN: accuracy {test['accuracy']:.4f} (goal >= 0.98: "
                f"{'met' if ok else 'NOT met'}); {run['epochs']} epochs, {wall:.0f} s"
            )
        if "sunspots" in args.only:
            test, run, wall = train(EXAMPLES / "sunspots_lstm" / "recipe.yaml", store)
            below = 1 - test["rmse"] / test["naive_rmse"]
            print(
                f"sunspots LSTM: RMSE {test['rmse']:.2f}, naive {test['naive_rmse']:.2f}: "
                f"{below:.1%} below (goal >= 20%: {'met' if below >= 0.2 else 'NOT met'}); "
                f"{run['epochs']} epochs, {wall:.0f} s"
            )
        if "genre" in args.only:
            best = 0.0
            for arch in ("rnn", "transformer"):
                test, run, wall = train(EXAMPLES / "shakespeare_genre" / f"{arch}.yaml", store)
                best = max(best, test["f1_macro"])
                print(
                    f"genre {arch}: macro-F1 {test['f1_macro']:.4f}, majority "
                    f"{test['majority_f1_macro']:.4f}, TF-IDF + LR {test['tfidf_lr_f1_macro']:.4f}"
                    f" (accuracy {test['accuracy']:.4f}); {run['epochs']} epochs, {wall:.0f} s"
                )
            goal = test["tfidf_lr_f1_macro"] - 0.05
            print(
                f"genre: the better macro-F1 {best:.4f} vs TF-IDF - 0.05 = {goal:.4f}: "
                f"{'met' if best >= goal else 'NOT met'}"
            )


if __name__ == "__main__":
    main()
