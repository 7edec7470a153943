"""The fine-tuning figures of issue 10, from the example recipes as shipped, in one run.

- poems (examples/poems_finetune): the character-level GPT pretrained on the comedies,
  histories and tragedies (pretrain.yaml), fine-tuned on the poems (recipe.yaml); on the
  poems' held-out valid text, the fine-tuned model's loss against (a) the pretrained model
  without fine-tuning and (b) the same architecture trained from scratch on the poems (the
  pretraining recipe's settings, the fine-tune's number of steps). Goal: lower than both by at
  least 0.05 nats per character. All three are evaluated on the very same valid text.
- minilm (examples/genre_minilm): all-MiniLM-L6-v2 fine-tuned on the genre passages, split by
  play as examples/shakespeare_genre/transformer.yaml; test macro-F1 (unseen plays) against
  TF-IDF + logistic regression (scored on the same split by the same evaluation) and against
  our from-scratch transformer (that recipe, trained in the same run). Goal: at least both.
  One row per strategy (full, head, LoRA; the recipe as shipped, ``finetune.strategy`` set):
  trainable parameters, the process's peak resident memory, seconds per epoch and macro-F1.
  Each fine-tune runs as its own ``tensorsmith finetune`` process, so that its peak memory is
  its own.

    python bench/finetune.py [--only poems minilm] [--strategies full head lora] [--store DIR]
                             [--skip-transformer] [--threads N]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console

import tensorsmith
from tensorsmith.api import finetune
from tensorsmith.training.hardware import cpu_name

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
POEMS = EXAMPLES / "poems_finetune"
MINILM = EXAMPLES / "genre_minilm"
GENRE = EXAMPLES / "shakespeare_genre" / "transformer.yaml"
QUIET = Console(file=io.StringIO())
MARGIN = 0.05  # nats per character
SETTINGS: list[str] = []  # overrides for every run (--threads): train.threads=N


def _met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def poems(store: Path) -> None:
    start = time.perf_counter()
    parent = tensorsmith.train(POEMS / "pretrain.yaml", SETTINGS, store=store, console=QUIET)
    tuned = finetune(POEMS / "recipe.yaml", str(parent.path), SETTINGS, store=store, console=QUIET)
    steps = int(tuned.recipe.train.max_steps)
    scratch = tensorsmith.train(
        POEMS / "pretrain.yaml",
        [
            "name=poems-scratch",
            f"data.source={tuned.recipe.data.source}",
            f"data.split.valid={tuned.recipe.data.split.valid}",
            f"train.max_steps={steps}",
            f"train.eval_every={tuned.recipe.train.eval_every}",
            *SETTINGS,
        ],
        store=store,
        console=QUIET,
    )
    valid = tuned.data_splits()["valid"]  # the poems' held-out tails
    rows = [
        ("pretrained on the plays, not fine-tuned", parent, int(parent.run["steps"])),
        ("from scratch on the poems", scratch, int(scratch.run["steps"])),
        ("pretrained, then fine-tuned on the poems", tuned, int(tuned.run["steps"])),
    ]
    losses = {name: float(m.evaluate(valid, ["loss"])["loss"]) for name, m, _ in rows}
    print(f"\npoems: valid text {len(valid):,} characters (the last 10% of each poem)")
    print("| model | steps | valid loss (nats/char) | fine-tuned is lower by |")
    print("|---|---|---|---|")
    ours = losses[rows[2][0]]
    for name, _, n in rows:
        gap = "" if name == rows[2][0] else f"{losses[name] - ours:.3f}"
        print(f"| {name} | {n:,} | {losses[name]:.3f} | {gap} |")
    for name in (rows[0][0], rows[1][0]):
        gap = losses[name] - ours
        print(f"goal: lower than '{name}' by >= {MARGIN}: {gap:.3f} ({_met(gap >= MARGIN)})")
    seconds = {name: float(m.run["train_seconds"]) for name, m, _ in rows}
    print(
        "train seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()) + f"; "
        f"{time.perf_counter() - start:.0f} s in all"
    )


def _cli_finetune(store: Path, checkpoint: Path, strategy: str) -> dict[str, Any]:
    """``tensorsmith finetune`` of the MiniLM recipe in its own process: run.json, metrics."""
    proc = subprocess.run(
        [sys.executable, "-m", "tensorsmith.cli", "finetune", str(MINILM / "recipe.yaml"),
         "--from", str(checkpoint), "--set", f"finetune.strategy={strategy}",
         "--set", f"name=genre-minilm-{strategy}", "--store", str(store),
         *(a for o in SETTINGS for a in ("--set", o))],
        capture_output=True, text=True, env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1"},
    )  # fmt: skip
    if proc.returncode not in (0, 3):  # 3: the gate never held (the recipe has none)
        raise SystemExit(f"finetune {strategy} failed:\n{proc.stdout}\n{proc.stderr}")
    folder = max((store / f"genre-minilm-{strategy}").iterdir(), key=lambda p: p.name)
    run = json.loads((folder / "run.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    return {"run": run, "test": metrics["test"], "valid": metrics["valid"]}


def minilm(store: Path, strategies: list[str], transformer: bool = True) -> None:
    """The fine-tunes first, one row each as it ends (this is the slow part), then the
    from-scratch transformer; TF-IDF + LR comes with every evaluation of the split."""
    sys.path.insert(0, str(MINILM))
    from extract import extract  # type: ignore[import-not-found]

    checkpoint = extract()
    start = time.perf_counter()
    print("\nminilm: test macro-F1 on plays unseen in training")
    print(
        "| strategy | trainable parameters | peak memory (RSS) | seconds per epoch | epochs | "
        "valid macro-F1 | test macro-F1 | test accuracy |"
    )
    print("|---|---|---|---|---|---|---|---|", flush=True)
    results, tfidf = {}, float("nan")
    for strategy in strategies:
        r = _cli_finetune(store, checkpoint, strategy)
        run, test = r["run"], r["test"]
        results[strategy], tfidf = test["f1_macro"], test["tfidf_lr_f1_macro"]
        print(
            f"| {strategy} | {run['trainable_parameters']:,} | "
            f"{run['peak_memory_bytes'] / 2**30:.2f} GiB | "
            f"{run['train_seconds'] / max(run['epochs'], 1):.0f} | {run['epochs']} | "
            f"{r['valid']['f1_macro']:.4f} | {test['f1_macro']:.4f} | {test['accuracy']:.4f} |",
            flush=True,
        )
    if not transformer:
        print(f"{time.perf_counter() - start:.0f} s in all (TF-IDF + LR {tfidf:.4f})")
        return
    genre = tensorsmith.train(GENRE, SETTINGS, store=store, console=QUIET)
    base = json.loads((Path(genre.path) / "metrics.json").read_text())["test"]
    scratch = base["f1_macro"]
    print(
        f"TF-IDF + LR macro-F1 {base['tfidf_lr_f1_macro']:.4f}; our from-scratch transformer "
        f"(transformer.yaml, {genre.run['epochs']} epochs, {genre.run['train_seconds']:.0f} s) "
        f"{scratch:.4f}"
    )
    for strategy, f1 in results.items():
        print(
            f"goal ({strategy}): macro-F1 {f1:.4f} >= TF-IDF {tfidf:.4f} "
            f"({f1 / tfidf:.3f}×): {_met(f1 >= tfidf)}; >= transformer {scratch:.4f} "
            f"({f1 / scratch:.3f}×): {_met(f1 >= scratch)}"
        )
    print(f"{time.perf_counter() - start:.0f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="*", default=["poems", "minilm"])
    parser.add_argument("--strategies", nargs="*", default=["full", "head", "lora"])
    parser.add_argument("--store", type=Path, help="keep the trained models here")
    parser.add_argument(
        "--skip-transformer",
        action="store_true",
        help="minilm: leave the from-scratch transformer out (when strategies run apart)",
    )
    parser.add_argument(
        "--threads",
        type=int,
        help="torch threads of every run (train.threads); on a shared "
        "machine 1 thread can be several times faster than 2 spinning against other jobs",
    )
    args = parser.parse_args()
    if args.threads:  # the training loop (train.threads) and every evaluation, here and in
        SETTINGS.append(f"train.threads={args.threads}")  # the fine-tune processes
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
        __import__("torch").set_num_threads(args.threads)
    threads = args.threads or "default"
    print(f"{cpu_name()}; {os.cpu_count()} cores; torch threads {threads}; torch "
          f"{__import__('torch').__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or Path(tmp)
        if "poems" in args.only:
            poems(store)
        if "minilm" in args.only:
            minilm(store, args.strategies, not args.skip_transformer)


if __name__ == "__main__":
    main()
