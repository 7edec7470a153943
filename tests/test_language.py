"""Language models end to end: corpus → tokenizer → GPT pretraining → evaluate → generate.

Tiny models on two real Shakespeare poems (tests/data/shakespeare), through the real CLI (in
this process; the runs that are killed in a subprocess). Everything runs on one OpenMP thread:
on a loaded two-core machine a second thread makes the tiny per-token kernels of generation
wait on each other (20x slower), and the numbers these tests compare do not depend on the
thread count.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from conftest import EXAMPLES, find_checkpoint, run_cli
from safetensors.torch import load_file

import tensorsmith
from tensorsmith.evaluation.report import format_value

POEMS = Path(__file__).parent / "data" / "shakespeare"
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
TINY = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0}


def cli(*args: str | Path, store: Path) -> tuple[int, str, str]:
    return run_cli(*args, store=store, env=ONE_THREAD)


def write_recipe(folder: Path, name: str = "poems", **changes: object) -> Path:
    """A tiny char-level recipe over a copy of the poems; ``section__key=value`` changes it."""
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


def start_training(recipe: Path, store: Path, *extra: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **ONE_THREAD, "TENSORSMITH_STORE": str(store), "NO_COLOR": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tensorsmith.cli", "train", str(recipe), *extra],
        env=env,
        cwd=recipe.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def kill_after_first_checkpoint(proc: subprocess.Popen[bytes], store: Path) -> Path:
    """SIGKILL the training as soon as it wrote a checkpoint; return the checkpoint."""
    deadline = time.time() + 120
    while (
        not find_checkpoint(store, "poems").exists()
        and time.time() < deadline
        and proc.poll() is None
    ):
        time.sleep(0.02)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    checkpoint = find_checkpoint(store, "poems")
    assert alive and checkpoint.exists(), "the run ended (or never checkpointed) before the kill"
    return checkpoint


def check_artifact(version: Path, steps: list[int]) -> dict[str, float]:
    for name in ("tokenizer.json", "model.safetensors", "recipe.yaml", "card.md", "run.json"):
        assert (version / name).is_file(), name
    assert (version / "plots" / "learning_curves.png").stat().st_size > 1000
    valid = json.loads((version / "metrics.json").read_text())["valid"]
    assert math.isfinite(valid["loss"]) and valid["loss"] > 0
    assert math.isclose(valid["perplexity"], math.exp(valid["loss"]), rel_tol=1e-6)
    history = pd.read_csv(version / "history.csv")
    assert list(history["step"]) == steps  # from step 0: the untrained model's valid loss
    assert (
        history["train_loss"].iloc[1:].notna().all() and (history["train_loss"].iloc[1:] > 0).all()
    )
    for col in ("valid_loss", "valid_perplexity"):
        assert history[col].notna().all() and (history[col] > 0).all(), col
    assert (history["valid_perplexity"] - history["valid_loss"].map(math.exp)).abs().max() < 1e-3
    run = json.loads((version / "run.json").read_text())
    assert run["task"] == "language-modeling" and run["steps"] == steps[-1]
    assert run["tokens_per_second"] > 0 and run["flops_per_token"] > 0
    assert run["peak_flops"] > 0 and 0 < run["mfu"] < 1
    card = (version / "card.md").read_text()
    sample = card.split("### sample 1", 1)[1].split("```")[1]
    assert sample.strip(), "the card's sample is empty"
    return valid


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """In-process generation on one thread too (see the module docstring); restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding poems@1, a tiny char-level GPT trained through the CLI."""
    folder = tmp_path_factory.mktemp("lm")
    store = folder / "store"
    code, out, err = cli("train", write_recipe(folder), store=store)
    assert code == 0, out + err
    return store


# ----------------------------------------------------------------------------- journey


def test_examples_validate() -> None:
    for name in ("recipe.yaml", "bpe.yaml"):
        code, out, err = run_cli("validate", EXAMPLES / "shakespeare_gpt" / name)
        assert code == 0, err
        resolved = yaml.safe_load(out)
        assert resolved["task"] == "language-modeling"
        assert resolved["model"]["arch"] == "gpt" and resolved["model"]["block_size"] == 64
        assert resolved["train"]["max_steps"] == 2000
        assert "seed" in resolved["train"]  # defaults are filled in
        kind = "bpe" if name == "bpe.yaml" else "char"
        assert resolved["data"]["tokenizer"]["kind"] == kind


def test_char_model_artifact(trained: Path) -> None:
    version = trained / "poems" / "1"
    valid = check_artifact(version, [0, 10, 20])
    assert valid["loss"] < math.log(70)  # no worse than uniform over ~65 characters
    tok = json.loads((version / "tokenizer.json").read_text())
    assert "<|endoftext|>" in tok["model"]["vocab"] and "e" in tok["model"]["vocab"]


def test_bpe_model(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, "poems-bpe", data__tokenizer={"kind": "bpe", "vocab_size": 300})
    store = tmp_path / "store"
    code, out, err = cli("train", recipe, store=store)
    assert code == 0, out + err
    version = store / "poems-bpe" / "1"
    check_artifact(version, [0, 10, 20])
    tokenizer = tensorsmith.load("poems-bpe", store=store).task.tokenizer
    assert 257 < tokenizer.vocab_size <= 300
    assert tokenizer.decode(tokenizer.encode("Let the bird of loudest lay")) == (
        "Let the bird of loudest lay"
    )
    model = tensorsmith.load("poems-bpe", store=store)
    assert model.generate("love", 10, seed=0) == model.generate("love", 10, seed=0) != ""


def test_evaluate(trained: Path, tmp_path: Path) -> None:
    valid = json.loads((trained / "poems" / "1" / "metrics.json").read_text())["valid"]
    code, out, err = cli("evaluate", "poems", store=trained)
    assert code == 0, err
    assert "loss" in out and "perplexity" in out
    assert format_value(valid["loss"]) in out and format_value(valid["perplexity"]) in out

    text = tmp_path / "other.txt"
    text.write_text((POEMS / "phoenix_and_the_turtle.txt").read_text(encoding="utf-8")[:1500])
    code, out, err = cli("evaluate", "poems", "--data", text, store=trained)
    assert code == 0, err
    assert "other.txt" in out
    scored = tensorsmith.load("poems", store=trained).evaluate(text.read_text())
    assert set(scored) >= {"loss", "perplexity"}
    assert math.isclose(scored["perplexity"], math.exp(scored["loss"]), rel_tol=1e-6)
    assert format_value(scored["loss"]) in out


def test_generate_sampling_is_reproducible(trained: Path) -> None:
    args = ("generate", "poems", "--prompt", "Let the", "--max-new-tokens", "20", "--seed", "1")
    first, second = cli(*args, store=trained), cli(*args, store=trained)
    assert first[0] == 0, first[2]
    assert first[1] == second[1]
    assert first[1].startswith("Let the") and len(first[1]) > len("Let the\n")
    streamed = cli(*args, "--stream", store=trained)
    assert streamed[0] == 0 and streamed[1] == first[1]
    model = tensorsmith.load("poems", store=trained)
    assert first[1] == "Let the" + model.generate("Let the", 20, seed=1) + "\n"
    assert model.generate("Let the", 20, seed=2) != model.generate("Let the", 20, seed=1)


def test_greedy_generation_is_deterministic_and_matches_the_api(trained: Path) -> None:
    args = ("generate", "poems", "--prompt", "Let", "--max-new-tokens", "10", "--temperature", "0")
    code, out, err = cli(*args, store=trained)
    assert code == 0, err
    model = tensorsmith.load("poems", store=trained)
    continuation = model.generate("Let", 10, temperature=0, seed=0)
    assert continuation
    assert out == "Let" + continuation + "\n"
    for seed in (1, None):  # greedy ignores the seed
        assert model.generate("Let", 10, temperature=0, seed=seed) == continuation


def test_stop_string_truncates(trained: Path) -> None:
    prompt = "Let the"
    base = ("generate", "poems", "--prompt", prompt, "--max-new-tokens", "60", "--seed", "3")
    code, full, err = cli(*base, store=trained)
    assert code == 0, err
    continuation = full[len(prompt) : -1]
    stop = continuation[8]  # a character the same sampling is known to produce
    code, stopped, err = cli(*base, "--stop", stop, store=trained)
    assert code == 0, err
    assert stopped == prompt + continuation[: continuation.index(stop)] + "\n"
    assert stop not in stopped[len(prompt) :]
    assert "\n" not in stopped[len(prompt) : -1] or stop != "\n"


# ----------------------------------------------------------------------------- token cache


def test_token_cache_is_reused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=4, train__eval_every=4)
    store = tmp_path / "store"
    assert cli("train", recipe, store=store)[0] == 0
    cache = sorted((store / ".cache" / "tokens").iterdir())
    stamps = [p.stat().st_mtime_ns for p in cache]
    assert len(cache) == 2  # train and valid tokens
    assert cli("train", recipe, store=store)[0] == 0
    assert (store / "poems" / "2").is_dir()
    assert sorted((store / ".cache" / "tokens").iterdir()) == cache
    assert [p.stat().st_mtime_ns for p in cache] == stamps


# ----------------------------------------------------------------------------- resume


def test_kill_and_resume_gives_the_same_curve(tmp_path: Path) -> None:
    recipe = write_recipe(
        tmp_path,
        train__max_steps=200,
        train__eval_every=20,
        train__checkpoint_every=20,
        model__dropout=0.1,  # dropout draws random numbers: the RNG state must resume too
    )
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    checkpoint = kill_after_first_checkpoint(start_training(recipe, killed), killed)
    assert not (killed / "poems" / "1").exists()
    at = int(json.loads(checkpoint.read_text())["step"])
    assert 20 <= at < 200

    code, out, err = cli("train", recipe, "--resume", store=killed)
    assert code == 0, out + err
    logged = [int(s) for s in re.findall(r"step (\d+)/200", out)]
    assert logged and min(logged) > at, f"resumed at step {at}, but logged {logged}"
    assert not checkpoint.exists()  # a finished run leaves nothing to resume
    code, out, err = cli("train", recipe, store=clean)
    assert code == 0, out + err

    a = pd.read_csv(killed / "poems" / "1" / "history.csv")
    b = pd.read_csv(clean / "poems" / "1" / "history.csv")
    assert list(b["step"]) == list(range(0, 201, 20))
    cols = ["step", "train_loss", "valid_loss"]
    pd.testing.assert_frame_equal(a[cols], b[cols], check_exact=True)  # NaN train loss at step 0
    wa = load_file(str(killed / "poems" / "1" / "model.safetensors"))
    wb = load_file(str(clean / "poems" / "1" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    assert all(torch.equal(wa[k], wb[k]) for k in wb)


def test_resume_with_a_changed_shape_is_refused(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=2000, train__checkpoint_every=5)
    store = tmp_path / "store"
    checkpoint = kill_after_first_checkpoint(start_training(recipe, store), store)
    code, _, err = cli("train", recipe, "--resume", "--set", "model.n_embd=64", store=store)
    assert code == 1, err
    assert "model.n_embd" in err and "Traceback" not in err
    assert checkpoint.exists()  # the refusal keeps the checkpoint for a correct --resume
    assert not (store / "poems").exists()


# ----------------------------------------------------------------------------- bad input


def _fails(code: int, err: str, *needles: str, exit_code: int = 2) -> None:
    assert code == exit_code, err
    assert "Traceback" not in err
    assert "error:" in err
    for needle in needles:
        assert needle in err, err


def test_glob_that_matches_nothing(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, data__source="nowhere/*.txt")
    code, _, err = cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "nowhere/*.txt")
    assert not (tmp_path / "s" / "poems").exists()


def test_empty_corpus(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "a.txt").write_text("")
    (tmp_path / "empty" / "b.txt").write_text("  \n\n")
    recipe = write_recipe(tmp_path, data__source="empty/*.txt")
    code, _, err = cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "empty", "a.txt", "b.txt")


def test_binary_and_non_utf8_files_are_skipped_and_named(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__max_steps=2, train__eval_every=2)
    (tmp_path / "corpus" / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    (tmp_path / "corpus" / "latin1.txt").write_bytes("café olé".encode("latin-1"))
    code, out, err = cli("train", recipe, store=tmp_path / "s")
    assert code == 0, out + err
    said = out + err
    assert "image.txt" in said and "latin1.txt" in said and "skipped" in said
    assert (tmp_path / "s" / "poems" / "1" / "model.safetensors").is_file()

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_bytes(b"\x00\x01\x02")
    (tmp_path / "bad" / "y.txt").write_bytes("naïve".encode("latin-1"))
    recipe = write_recipe(tmp_path, data__source="bad/*.txt")
    code, _, err = cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "x.txt", "y.txt")


def test_block_size_longer_than_the_valid_text(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, model__block_size=5000)
    code, _, err = cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "block_size")


def test_prompt_outside_the_vocabulary(trained: Path) -> None:
    args = ("generate", "poems", "--prompt", "☃ love", "--max-new-tokens", "5", "--seed", "0")
    code, out, err = cli(*args, store=trained)
    assert code == 0, err
    assert out.startswith("☃ love") and len(out) > len("☃ love\n")
    assert "unknown" in err and "☃" in err and "Traceback" not in err


def test_prompt_longer_than_the_context(trained: Path) -> None:
    long_prompt = "the " * 40  # 160 characters; the context is 16
    args = ("generate", "poems", "--prompt", long_prompt, "--max-new-tokens", "5", "--seed", "0")
    code, out, err = cli(*args, store=trained)
    assert code == 0, err
    assert out.startswith(long_prompt) and len(out) > len(long_prompt) + 1
    assert "truncated" in err and "160" in err and "16" in err
    # only the last 16 tokens of the prompt matter
    model = tensorsmith.load("poems", store=trained)
    assert out[len(long_prompt) : -1] == model.generate(long_prompt[-16:], 5, seed=0)


def test_max_new_tokens_zero_prints_the_prompt(trained: Path) -> None:
    code, out, err = cli(
        "generate", "poems", "--prompt", "Let", "--max-new-tokens", "0", store=trained
    )
    assert code == 0, err
    assert out == "Let\n"


@pytest.mark.parametrize("top_p", ["0", "1.5"])
def test_top_p_out_of_range(trained: Path, top_p: str) -> None:
    code, out, err = cli("generate", "poems", "--prompt", "Let", "--top-p", top_p, store=trained)
    _fails(code, err, "top_p", top_p)
    assert out == ""


def test_verbs_for_the_wrong_kind_of_model(trained: Path, tmp_path: Path) -> None:
    table = tmp_path / "t.csv"
    table.write_text("x1,x2\n0.1,0.2\n")
    code, _, err = cli("predict", "poems", "--data", table, store=trained)
    _fails(code, err, "language-modeling model", "generate")

    store = tmp_path / "s"
    code, out, err = cli(
        "train", EXAMPLES / "xor_mlp" / "recipe.yaml", "--set", "train.epochs=1", store=store
    )
    assert code in (0, 3), out + err  # 3: stored, one epoch does not reach the gate
    code, out, err = cli("generate", "xor-mlp", "--prompt", "hello", store=store)
    _fails(code, err, "not for task classification", "predict")
    assert out == ""


def test_full_batch_is_refused_for_a_language_model(tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path, train__batch_size="full")
    code, _, err = cli("train", recipe, store=tmp_path / "s")
    _fails(code, err, "batch_size")


@pytest.mark.parametrize("recipe", ["recipe.yaml", "bpe.yaml"])
def test_shakespeare_examples_train_on_small_settings(recipe: str, tmp_path: Path) -> None:
    """The shipped recipes run on their real corpus, with a tiny model and two steps."""
    small = {
        "model.n_layer": 1,
        "model.n_embd": 32,
        "model.n_head": 2,
        "model.block_size": 32,
        "train.batch_size": 64,
        "train.max_steps": 2,
        "train.eval_every": 2,
        "train.eval_batches": 1,
        "evaluate.samples": 0,
    }
    sets = [arg for k, v in small.items() for arg in ("--set", f"{k}={v}")]
    store = tmp_path / "store"
    code, out, err = run_cli("train", EXAMPLES / "shakespeare_gpt" / recipe, *sets, store=store)
    assert code == 0, out + err
    name = yaml.safe_load((EXAMPLES / "shakespeare_gpt" / recipe).read_text())["name"]
    run = json.loads((store / name / "1" / "run.json").read_text())
    assert run["tokens"]["train"] > 1_000_000  # the whole corpus of plays, not a sample
    assert run["steps"] == 2


def test_generation_leaves_the_thread_count_as_it_was(trained: Path) -> None:
    model = tensorsmith.load("poems", store=trained)
    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        pieces = model.stream("Let", 5, temperature=0.0)
        first = next(pieces)
        assert torch.get_num_threads() == 2  # between tokens, the caller's setting holds
        rest = "".join(pieces)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(outer)
    assert first + rest == model.generate("Let", 5, temperature=0.0)


def test_small_models_draw_each_token_on_one_thread() -> None:
    from tensorsmith.tasks.generation import single_threaded as _single_threaded

    def seen() -> Iterator[int]:
        for _ in range(3):
            yield torch.get_num_threads()

    outer = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert list(_single_threaded(seen(), True)) == [1, 1, 1]
        assert torch.get_num_threads() == 2
        assert list(_single_threaded(seen(), False)) == [2, 2, 2]
    finally:
        torch.set_num_threads(outer)
