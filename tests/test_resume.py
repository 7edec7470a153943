"""Nothing is lost (DESIGN.md §6): repeatable runs, exact resume after SIGKILL, refused resumes.

The kill test runs the real CLI in a subprocess, kills it with SIGKILL after its first
checkpoint, resumes it (in a subprocess too), and compares the result bit for bit with an
uninterrupted run; the refused resumes run the CLI in process.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import find_checkpoint, run_cli
from rich.console import Console
from safetensors.torch import load_file

import tensorsmith

ROOT = Path(__file__).resolve().parents[1]
XOR = ROOT / "examples" / "xor_mlp" / "recipe.yaml"
CANCER = ROOT / "examples" / "breast_cancer" / "recipe.yaml"
NAME = "xor-mlp"
# long enough that the kill lands mid-run (each epoch is 12 steps and an evaluation); dropout
# so that the RNG state is part of what a checkpoint must restore; one thread keeps tiny
# models fast on a busy machine
EPOCHS = 400
EVERY = 20
LONG = [
    f"train.epochs={EPOCHS}",
    f"train.checkpoint_every={EVERY}",
    "model.dropout=0.2",
    "train.threads=1",
    "train.log_every=1000",
    "evaluate.plots=false",
]


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    """``train.threads`` sets torch's global thread count; give other tests theirs back."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _cli(*args: str, store: Path) -> list[str]:
    return [sys.executable, "-m", "tensorsmith.cli", *args, "--store", str(store)]


def _sets(overrides: list[str]) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONHASHSEED": "0", "COLUMNS": "200"}
    for key in ("TENSORSMITH_DEBUG", "TENSORSMITH_STORE"):
        env.pop(key, None)
    return env


def _run(args: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout, check=False
    )


def _weights(store: Path, version: int = 1) -> dict[str, torch.Tensor]:
    return load_file(str(store / NAME / str(version) / "model.safetensors"))


def _history(store: Path, version: int = 1) -> list[dict[str, str]]:
    return _history_at(store / NAME / str(version))


def _checkpoint(store: Path) -> Path:
    return find_checkpoint(store, NAME)


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    differ = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differ, f"tensors differ: {differ}"


def _quiet() -> Console:
    return Console(file=io.StringIO())


# ----------------------------------------------------------------------------- repeatability


def test_same_recipe_twice_gives_identical_weights(tmp_path: Path) -> None:
    overrides = ["train.epochs=15", "model.dropout=0.2", "train.threads=1", "evaluate.plots=false"]
    for store in ("a", "b"):
        tensorsmith.train(XOR, overrides, store=tmp_path / store, console=_quiet())
    _assert_same_weights(_weights(tmp_path / "a"), _weights(tmp_path / "b"))
    assert _history(tmp_path / "a") == _history(tmp_path / "b")
    # and the seed matters: a different seed gives different weights
    tensorsmith.train(XOR, [*overrides, "train.seed=1"], store=tmp_path / "c", console=_quiet())
    other = _weights(tmp_path / "c")
    assert any(not torch.equal(v, other[k]) for k, v in _weights(tmp_path / "a").items())


# ----------------------------------------------------------------------------- kill and resume


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """A store whose run was SIGKILLed after a checkpoint, and a store of the uninterrupted run
    (trained at the same time in a second process)."""
    base = tmp_path_factory.mktemp("resume")
    killed_store, full_store = base / "killed", base / "full"
    env = _env()
    full = subprocess.Popen(
        _cli("train", str(XOR), *_sets(LONG), store=full_store),
        cwd=base,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    victim = subprocess.Popen(
        _cli("train", str(XOR), *_sets(LONG), store=killed_store),
        cwd=base,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not _checkpoint(killed_store).exists():
            if victim.poll() is not None:
                pytest.fail(
                    f"the run ended (exit {victim.returncode}) before writing a checkpoint; "
                    f"stderr: {victim.stderr.read() if victim.stderr else ''}"
                )
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 180 s")
            time.sleep(0.02)
        time.sleep(0.3)  # land the kill between checkpoints, so resume must replay epochs
        if victim.poll() is not None:
            pytest.fail(
                f"the run finished (exit {victim.returncode}) before it could be killed; "
                "make EPOCHS larger so the kill lands mid-run"
            )
        victim.send_signal(signal.SIGKILL)
        assert victim.wait(timeout=30) == -signal.SIGKILL
        _, full_err = full.communicate(timeout=240)
        assert full.returncode == 0, full_err
        yield {"killed": killed_store, "full": full_store, "cwd": base}
    finally:
        for proc in (victim, full):
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_kill_leaves_no_version(killed: dict[str, Path]) -> None:
    store = killed["killed"]
    assert _checkpoint(store).is_file()
    folder = store / NAME
    if folder.exists():
        visible = [p.name for p in folder.iterdir() if not p.name.startswith(".")]
        assert not visible, f"a killed run left version directories: {visible}"
    assert tensorsmith.models(store=store) == []
    state = json.loads(_checkpoint(store).read_text())
    assert 0 < state["epoch"] < EPOCHS, "the checkpoint should be from the middle of the run"


def test_resume_refuses_a_changed_model(killed: dict[str, Path], tmp_path: Path) -> None:
    store = tmp_path / "store"
    shutil.copytree(killed["killed"], store)
    sets = _sets([*LONG, "model.hidden=[5]"])
    code, out, err = run_cli("train", str(XOR), *sets, "--resume", store=store, cwd=tmp_path)
    assert code == 1, out + err
    assert "model.hidden" in err
    assert "Traceback" not in err
    assert _checkpoint(store).is_file()  # the refused resume keeps the checkpoint
    assert tensorsmith.models(store=store) == []


def test_resume_after_kill_equals_uninterrupted_run(killed: dict[str, Path]) -> None:
    store = killed["killed"]
    killed_at = json.loads(_checkpoint(store).read_text())["epoch"]
    result = _run(
        _cli("train", str(XOR), *_sets(LONG), "--resume", store=store),
        killed["cwd"],
    )
    assert result.returncode == 0, result.stdout + result.stderr
    resumed, full = _weights(store), _weights(killed["full"])
    _assert_same_weights(resumed, full)
    rows, full_rows = _history(store), _history(killed["full"])
    assert len(rows) == EPOCHS and killed_at < EPOCHS
    assert rows == full_rows

    # (d) a complete run removes its checkpoint; --resume then has nothing to resume
    assert not _checkpoint(store).exists()
    code, out, err = run_cli("train", str(XOR), *_sets(LONG), "--resume", store=store)
    assert code == 1, out + err
    assert "nothing to resume" in err
    assert [m["version"] for m in tensorsmith.models(store=store)] == [1]


# ----------------------------------------------------------------------------- early stopping


def test_early_stopping_restores_the_best_weights(tmp_path: Path) -> None:
    overrides = [
        "train.early_stopping.patience=3",
        "train.threads=1",
        "evaluate.plots=false",
        "train.optimizer.lr=0.01",
    ]
    trained = tensorsmith.train(CANCER, overrides, store=tmp_path, console=_quiet())
    model = tensorsmith.load(trained.path)
    assert isinstance(model, type(trained))
    history = _history_at(Path(model.path))
    losses = [float(r["valid_loss"]) for r in history]
    assert model.run["stopped_early"] is True
    assert len(history) < 200, "patience 3 should have stopped the run early"
    best = min(losses)
    assert losses[-1] > best, "the last epoch is not the best: restoring must matter"

    # the stored weights give the best valid loss, computed here from scratch
    valid = model.data_splits()["valid"]
    enc = model.task.preprocessor.transform(valid)
    with torch.no_grad():
        out = model.module(torch.from_numpy(enc.x))
    loss = F.binary_cross_entropy_with_logits(
        out.squeeze(-1), torch.tensor(enc.y, dtype=torch.float32)
    ).item()
    assert loss == pytest.approx(best, rel=1e-5, abs=1e-6)
    assert loss != pytest.approx(losses[-1], rel=1e-5, abs=1e-6)


def _history_at(path: Path) -> list[dict[str, str]]:
    with open(path / "history.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))
