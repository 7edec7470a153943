"""Language models end to end: corpus → tokenizer → GPT pretraining → evaluate → generate.

Tiny models on two real Shakespeare poems (tests/data/shakespeare), through the real CLI.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import EXAMPLES, run_cli
from safetensors.torch import load_file

import tensorsmith

POEMS = Path(__file__).parent / "data" / "shakespeare"
TINY = {
    "n_layer": 1,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 16,
    "dropout": 0.0,
}


def write_recipe(folder: Path, name: str = "poems", **changes: object) -> Path:
    corpus = folder / "corpus"
    if not corpus.exists():
        shutil.copytree(POEMS, corpus)
    recipe: dict[str, object] = {
        "name": name,
        "task": "language-modeling",
        "data": {"source": "corpus/*.txt", "tokenizer": {"kind": "char"}, "split": {"valid": 0.1}},
        "model": {"arch": "gpt", **TINY},
        "train": {
            "max_steps": 20,
            "batch_size": 4,
            "eval_every": 10,
            "eval_batches": 2,
            "threads": 1,
            "schedule": {"name": "cosine", "warmup_steps": 2},
        },
        "evaluate": {"samples": 1},
    }
    for key, value in changes.items():
        section, _, field = key.partition("__")
        assert isinstance(recipe[section], dict)
        recipe[section][field] = value  # type: ignore[index]
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("lm")
    recipe = write_recipe(folder)
    store = folder / "store"
    code, out, err = run_cli("train", recipe, store=store)
    assert code == 0, out + err
    return store, store / "poems" / "1"


def test_examples_validate() -> None:
    for name in ("recipe.yaml", "bpe.yaml"):
        code, out, err = run_cli("validate", EXAMPLES / "shakespeare_gpt" / name)
        assert code == 0, err
        resolved = yaml.safe_load(out)
        assert resolved["model"]["arch"] == "gpt"
        assert resolved["train"]["max_steps"] == 2000
        assert resolved["train"]["epochs"] is None


def test_artifact(trained: tuple[Path, Path]) -> None:
    _, version = trained
    for name in ("tokenizer.json", "model.safetensors", "recipe.yaml", "card.md", "run.json"):
        assert (version / name).is_file(), name
    assert (version / "plots" / "learning_curves.png").stat().st_size > 0
    valid = json.loads((version / "metrics.json").read_text())["valid"]
    assert math.isclose(valid["perplexity"], math.exp(valid["loss"]), rel_tol=1e-6)
    assert valid["loss"] < math.log(60)  # better than uniform over the characters
    history = pd.read_csv(version / "history.csv")
    assert list(history["step"]) == [10, 20]
    assert {"valid_loss", "valid_perplexity", "train_loss"} <= set(history.columns)
    run = json.loads((version / "run.json").read_text())
    assert run["tokens_per_second"] > 0 and run["flops_per_token"] > 0
    assert run["mfu"] > 0 and run["peak_flops"] > 0
    assert "sample 1" in (version / "card.md").read_text()


def test_evaluate_and_generate(trained: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = trained
    code, out, _ = run_cli("evaluate", "poems", store=store)
    assert code == 0 and "perplexity" in out
    text = tmp_path / "other.txt"
    text.write_text((POEMS / "phoenix_and_the_turtle.txt").read_text()[:2000])
    code, out, err = run_cli("evaluate", "poems", "--data", text, store=store)
    assert code == 0, err
    assert "other.txt" in out
    args = ["generate", "poems", "--prompt", "Let the", "--max-new-tokens", "20", "--seed", "1"]
    first, second = run_cli(*args, store=store), run_cli(*args, store=store)
    assert first[0] == 0 and first[1] == second[1]
    assert first[1].startswith("Let the") and len(first[1]) > len("Let the")
    streamed = run_cli(*args, "--stream", store=store)
    assert streamed[1] == first[1]
    greedy = run_cli("generate", "poems", "--prompt", "Let", "--temperature", "0", store=store)
    model = tensorsmith.load("poems", store=store)
    assert greedy[1] == "Let" + model.generate("Let", 200, temperature=0.0) + "\n"
    stopped = run_cli(*args, "--stop", "e", store=store)[1]
    assert "e" not in stopped[len("Let the") :]
    assert model.evaluate(text.read_text())["perplexity"] > 1.0


def test_bpe_model(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "poems-bpe", data__tokenizer={"kind": "bpe", "vocab_size": 300})
    store = tmp_path / "store"
    code, out, err = run_cli("train", recipe, store=store)
    assert code == 0, out + err
    tok = json.loads((store / "poems-bpe" / "1" / "tokenizer.json").read_text())
    assert len(tok["model"]["vocab"]) <= 300
    code, out, _ = run_cli("generate", "poems-bpe", "--prompt", "love", "--seed", "0", store=store)
    assert code == 0 and out.startswith("love")


def test_token_cache_is_reused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=4, train__eval_every=4)
    store = tmp_path / "store"
    assert run_cli("train", recipe, store=store)[0] == 0
    cache = sorted((store / ".cache" / "tokens").iterdir())
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert len(cache) == 2  # train and valid tokens
    assert run_cli("train", recipe, store=store)[0] == 0
    assert sorted((store / ".cache" / "tokens").iterdir()) == cache
    assert [p.stat().st_mtime_ns for p in cache] == stamps


def test_kill_and_resume_gives_the_same_curve(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        train__max_steps=400,
        train__eval_every=20,
        train__checkpoint_every=20,
        model__dropout=0.1,
    )
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    env = {**os.environ, "TENSORSMITH_STORE": str(killed)}
    cmd = [sys.executable, "-m", "tensorsmith.cli", "train", str(recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = killed / ".checkpoints" / "poems" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (killed / "poems" / "1").exists()
    code, out, err = run_cli("train", recipe, "--resume", store=killed)
    assert code == 0, out + err
    assert run_cli("train", recipe, store=clean)[0] == 0
    a = pd.read_csv(killed / "poems" / "1" / "history.csv")
    b = pd.read_csv(clean / "poems" / "1" / "history.csv")
    pd.testing.assert_frame_equal(
        a[["step", "train_loss", "valid_loss"]], b[["step", "train_loss", "valid_loss"]]
    )
    wa = load_file(str(killed / "poems" / "1" / "model.safetensors"))
    wb = load_file(str(clean / "poems" / "1" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_resume_with_a_changed_shape_is_refused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=2000, train__checkpoint_every=5)
    store = tmp_path / "store"
    env = {**os.environ, "TENSORSMITH_STORE": str(store)}
    cmd = [sys.executable, "-m", "tensorsmith.cli", "train", str(recipe)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = store / ".checkpoints" / "poems" / "checkpoint.pt"
    deadline = time.time() + 120
    while not checkpoint.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    code, _, err = run_cli("train", recipe, "--resume", "--set", "model.n_embd=64", store=store)
    assert code == 1
    assert "model.n_embd" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- bad input


def _fails(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, err


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__source="nowhere/*.txt")
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "nowhere/*.txt")


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    recipe = write_recipe(tmp_path, data__source="empty/*.txt")
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "a.txt")


def test_binary_and_non_utf8_files_are_skipped_and_named(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=2, train__eval_every=2)
    (tmp_path / "corpus" / "image.txt").write_bytes(b"\x89PNG\x00\x00\x01\x02")
    (tmp_path / "corpus" / "latin1.txt").write_bytes("café olé".encode("latin-1"))
    code, out, err = run_cli("train", recipe, store=tmp_path / "s")
    assert code == 0, err
    assert "image.txt" in out + err and "latin1.txt" in out + err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_bytes(b"\x00\x01\x02")
    recipe = write_recipe(tmp_path, data__source="bad/*.txt")
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "x.txt")


def test_block_size_longer_than_the_valid_text(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, model__block_size=100_000)
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "block_size")


def test_prompt_outside_the_vocabulary_and_too_long(trained: tuple[Path, Path]) -> None:
    store, _ = trained
    code, _, err = run_cli(
        "generate", "poems", "--prompt", "☃ love", "--max-new-tokens", "5", store=store
    )
    assert code == 0 and "unknown" in err and "☃" in err
    long_prompt = "the " * 40  # 160 characters, context 16
    code, _out, err = run_cli(
        "generate", "poems", "--prompt", long_prompt, "--max-new-tokens", "5", store=store
    )
    assert code == 0 and "truncated" in err


def test_generation_arguments(trained: tuple[Path, Path]) -> None:
    store, _ = trained
    code, out, _ = run_cli(
        "generate", "poems", "--prompt", "Let", "--max-new-tokens", "0", store=store
    )
    assert code == 0 and out == "Let\n"
    for bad in ("0", "1.5"):
        code, out, err = run_cli(
            "generate", "poems", "--prompt", "Let", "--top-p", bad, store=store
        )
        _fails(code, err, "top_p")
        assert out == ""


def test_verbs_for_the_wrong_kind_of_model(trained: tuple[Path, Path], tmp_path: Path) -> None:
    store, _ = trained
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n")
    code, _, err = run_cli("predict", "poems", "--data", table, store=store)
    _fails(code, err, "language model")
    recipe = write_recipe(tmp_path, train__batch_size="full")
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "batch_size")
