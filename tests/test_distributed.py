"""Training as several processes on torch.distributed (gloo on this CPU), started by torchrun.

Two processes with half the batch each follow one process with the whole batch: the loss curves
agree within 1e-4 (the MLP, and the GPT under DDP and FSDP; the MLP's weights too: Adam's
normalisation magnifies float-rounding differences in a GPT's near-zero gradients). A run
killed with SIGKILL resumes with two processes or one. A rank that dies is named with its
cause; --max-restarts restarts the ranks, which resume. Bad settings are refused before a
process starts.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from conftest import EXAMPLES, INFO, run_cli, run_cli_process
from safetensors.torch import load_file
from test_finetune import _poems_lm, _tiny_gpt2, _xor_child

from tensorsmith.data.loading import shard_of

XOR = EXAMPLES / "xor_mlp" / "recipe.yaml"
SMALL = ["train.epochs=6", "train.batch_size=14", "evaluate.gate={}", "evaluate.plots=false"]
pytestmark = pytest.mark.skipif(
    not torch.distributed.is_available(), reason="this torch has no torch.distributed"
)


def sets(*values: str) -> list[str]:
    return [a for v in values for a in ("--set", v)]


def train(store: Path, *values: str) -> list[str]:
    """The arguments of ``tensorsmith train XOR`` with these keys, into ``store``."""
    return ["train", str(XOR), *sets(*values), "--store", str(store)]


def history(store: Path, name: str, version: int = 1) -> pd.DataFrame:
    return pd.read_csv(store / name / str(version) / "history.csv")


def weights(store: Path, name: str, version: int = 1) -> dict[str, torch.Tensor]:
    return load_file(str(store / name / str(version) / "model.safetensors"))


def run_json(store: Path, name: str, version: int = 1) -> dict[str, Any]:
    return dict(json.loads((store / name / str(version) / "run.json").read_text()))


def assert_same_curves(a: pd.DataFrame, b: pd.DataFrame, columns: list[str]) -> None:
    assert len(a) == len(b) and len(a) > 1
    for column in columns:
        x, y = a[column].to_numpy(float), b[column].to_numpy(float)
        finite = np.isfinite(x)
        assert finite.sum() > 1 and np.array_equal(finite, np.isfinite(y)), column
        assert np.abs(x[finite] - y[finite]).max() < 1e-4, (column, x, y)


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tol: float) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=tol, rtol=0), key


# ----------------------------------------------------------------------------- the shards


@pytest.mark.parametrize("rows,size", [(14, 2), (8, 3), (2, 3), (13, 2)])
def test_the_parts_of_a_batch_cover_it_once_and_weigh_its_rows(rows: int, size: int) -> None:
    index = torch.randperm(50)[:rows]
    parts = [shard_of(index, 50, rank, size) for rank in range(size)]
    real = [p for p, share in parts if share > 0]
    assert torch.equal(torch.cat(real), index)  # every row once, in order
    shares = [share for _, share in parts]
    # the mean over the ranks of share × (a part's mean) is the mean of the whole batch
    values = torch.randn(50)
    whole = values[index].mean()
    mean = sum(s * values[p].mean() for p, s in parts if s > 0) / size
    assert torch.allclose(mean, whole, atol=1e-6)
    assert sum(shares) == pytest.approx(size)
    # a slice past the end of the data (an unshuffled last batch) is cut at the end
    cut = [shard_of(slice(40, 40 + rows), 50, r, size) for r in range(size)]
    covered = [i for part, share in cut if share > 0 for i in range(50)[part]]
    assert covered == list(range(40, min(50, 40 + rows)))


# ----------------------------------------------------------------------------- same result


def test_two_processes_follow_one_the_mlp_through_torchrun(tmp_path: Path) -> None:
    """The cluster form (torchrun -m tensorsmith) against one process, same global batch.

    199 of the moons leave 119 train rows: batches of 14 (7 + 7 rows a rank) and a last batch
    of 7, cut 4 + 3, whose parts are weighted 8/7 and 6/7.
    """
    moons = (EXAMPLES / "xor_mlp" / "moons.csv").read_text().splitlines()
    odd = tmp_path / "moons199.csv"
    odd.write_text("\n".join(moons[:200]) + "\n")
    small = [*SMALL, f"data.source={odd}"]
    one, two = tmp_path / "one", tmp_path / "two"
    code, out, err = run_cli("train", XOR, *sets(*small), store=one)
    assert code == 0, out + err
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    port = str(_free_port())
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=2"]
    proc = subprocess.run(
        [*torchrun, f"--master-port={port}", "-m", "tensorsmith", *train(two, *small)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_same_curves(
        history(one, "xor-mlp"), history(two, "xor-mlp"), ["train_loss", "valid_loss"]
    )
    assert_same_weights(weights(one, "xor-mlp"), weights(two, "xor-mlp"), 1e-4)
    record = run_json(two, "xor-mlp")["distributed"]
    assert record["world_size"] == 2 and record["backend"] == "gloo"
    assert record["strategy"] == "ddp"
    assert [r["rank"] for r in record["ranks"]] == [0, 1]
    assert all(r["samples_per_second"] > 0 for r in record["ranks"])
    assert "distributed" not in run_json(one, "xor-mlp")
    assert run_json(one, "xor-mlp")["rows"]["train"] == 119
    assert proc.stdout.count("saved ") == 1  # rank 0 alone speaks


def test_l_bfgs_on_the_full_batch_follows_one_process(tmp_path: Path) -> None:
    """batch_size: full with L-BFGS (the linear example): 464 rows split 232 + 232, the line
    search reading the global loss on both ranks."""
    recipe = EXAMPLES / "windsor_housing" / "recipe.yaml"
    one, two = tmp_path / "one", tmp_path / "two"
    code, out, err = run_cli("train", recipe, *sets("evaluate.plots=false"), store=one)
    assert code == 0, out + err
    code, out, err = run_cli_process(
        "train", recipe, "--nproc-per-node", "2", *sets("evaluate.plots=false"), store=two
    )
    assert code == 0, out + err
    name = "windsor-housing"
    assert_same_curves(history(one, name), history(two, name), ["train_loss"])
    assert_same_weights(weights(one, name), weights(two, name), 1e-4)


def test_early_stopping_stops_every_rank_at_the_epoch_one_process_stops(tmp_path: Path) -> None:
    stop = [
        "train.epochs=200",
        "train.early_stopping={monitor: valid_loss, patience: 3, min_delta: 0.01}",
        *SMALL[1:],
    ]
    one, two = tmp_path / "one", tmp_path / "two"
    code, out, err = run_cli("train", XOR, *sets(*stop), store=one)
    assert code == 0, out + err
    code, out, err = run_cli_process("train", XOR, "--nproc-per-node", "2", *sets(*stop), store=two)
    assert code == 0, out + err
    runs = [run_json(store, "xor-mlp") for store in (one, two)]
    assert runs[0]["stopped_early"] and runs[1]["stopped_early"]
    assert runs[0]["epochs"] == runs[1]["epochs"] < 200
    assert runs[0]["best"]["epoch"] == runs[1]["best"]["epoch"]  # the same weights restored
    assert_same_weights(weights(one, "xor-mlp"), weights(two, "xor-mlp"), 1e-4)


def _sonnets_recipe(folder: Path) -> Path:
    raw = {
        "name": "poems",
        "task": "language-modeling",
        "data": {
            "source": str(EXAMPLES / "shakespeare_gpt" / "plays" / "sonnets.txt"),
            "tokenizer": {"kind": "char"},
            "split": {"valid": 0.1, "seed": 0},
        },
        "model": {
            "arch": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
            "dropout": 0.0,
        },
        "train": {
            "max_steps": 6, "batch_size": 8, "eval_every": 3, "eval_batches": 3, "grad_clip": 1.0,
            "precision": "fp32",
            "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.1},
            "schedule": {"name": "cosine", "warmup_steps": 2},
        },
        "evaluate": {"metrics": ["loss"], "samples": 0, "plots": False},
    }  # fmt: skip
    path = folder / "poems.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_two_processes_follow_one_the_gpt_with_ddp_and_fsdp(tmp_path: Path) -> None:
    recipe = _sonnets_recipe(tmp_path)
    one = tmp_path / "one"
    code, out, err = run_cli("train", recipe, store=one)
    assert code == 0, out + err
    for strategy in ("ddp", "fsdp"):
        store = tmp_path / strategy
        code, out, err = run_cli_process(
            "train", recipe, "--nproc-per-node", "2", *sets(f"train.distributed={strategy}"),
            store=store,
        )  # fmt: skip
        assert code == 0, out + err
        assert_same_curves(history(one, "poems"), history(store, "poems"), ["valid_loss"])
        assert_same_curves(history(one, "poems"), history(store, "poems"), ["train_loss"])
        record = run_json(store, "poems")
        assert record["distributed"]["strategy"] == strategy
        assert all(r["tokens_per_second"] > 0 for r in record["distributed"]["ranks"])
        assert "tokens/s" in out and out.count("saved ") == 1


def test_a_fine_tune_in_rounds_runs_as_two_processes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    for store in (one, two):
        code, out, err = run_cli("train", XOR, *sets("train.epochs=20", *SMALL[2:]), store=store)
        assert code == 0, out + err
    child = _xor_child(tmp_path, rounds=2)
    code, out, err = run_cli("finetune", child, store=one)
    assert code in (0, 3), out + err
    code, out, err = run_cli_process("finetune", child, "--nproc-per-node", "2", store=two)
    assert code in (0, 3), out + err
    rounds = [run_json(store, "moons")["rounds"] for store in (one, two)]
    assert len(rounds[0]) == len(rounds[1]) >= 1
    for a, b in zip(*rounds, strict=True):
        assert a["valid_log_loss"] == pytest.approx(b["valid_log_loss"], abs=1e-4)
    assert run_json(two, "moons")["distributed"]["world_size"] == 2


def test_a_hugging_face_checkpoint_fine_tunes_sharded_by_fsdp(tmp_path: Path) -> None:
    recipe = _poems_lm(tmp_path, "poems-gpt2")
    raw = yaml.safe_load(recipe.read_text())
    del raw["model"]  # the checkpoint's architecture: hf-causal, GPT-2 blocks
    raw["data"]["tokenizer"] = {"kind": "bpe"}
    raw["train"]["precision"] = "fp32"
    raw["finetune"] = {"from": "tiny-gpt2", "strategy": "full"}
    recipe.write_text(yaml.safe_dump(raw), encoding="utf-8")
    _tiny_gpt2(tmp_path / "tiny-gpt2", tmp_path / "corpus")
    one, two = tmp_path / "one", tmp_path / "two"
    code, out, err = run_cli("finetune", recipe, store=one)
    assert code == 0, out + err
    fsdp = sets("train.distributed=fsdp")
    code, out, err = run_cli_process("finetune", recipe, "--nproc-per-node", "2", *fsdp, store=two)
    assert code == 0, out + err
    # GPT-2 keeps its dropout in training, so the train losses differ; evaluation has none
    a, b = history(one, "poems-gpt2"), history(two, "poems-gpt2")
    assert_same_curves(a, b, ["valid_loss"])
    assert run_json(two, "poems-gpt2")["distributed"]["strategy"] == "fsdp"
    whole, gathered = weights(one, "poems-gpt2"), weights(two, "poems-gpt2")  # not shards
    assert {k: v.shape for k, v in whole.items()} == {k: v.shape for k, v in gathered.items()}


# ----------------------------------------------------------------------------- killed, resumed


LONG = ["train.epochs=40", "train.checkpoint_every=1", "evaluate.gate={}", "evaluate.plots=false"]


def _start(store: Path, *args: str) -> subprocess.Popen[str]:
    """``tensorsmith train XOR`` as two ranks, in its own process group (a scheduler's kill
    reaches the launcher and every rank)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tensorsmith", *train(store, *LONG), "--nproc-per-node=2", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def _checkpointed(store: Path, at_least: int = 2, proc: Any = None) -> dict[str, Any]:
    deadline = time.time() + 120
    while time.time() < deadline:
        for info in (store / ".checkpoints" / "xor-mlp").glob(f"*/{INFO}"):
            try:
                saved = dict(json.loads(info.read_text()))
            except (OSError, ValueError):
                continue
            if saved["epoch"] >= at_least:
                return saved
        assert proc is None or proc.poll() is None, "the run ended before a checkpoint"
        time.sleep(0.02)
    raise AssertionError("no checkpoint within 120 s")


def _ranks_of(launcher: int) -> dict[int, int]:
    """rank → pid of the ranks a launcher started (read from /proc)."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == launcher:
            env = dict(e.decode().split("=", 1) for e in environ if b"=" in e)
            if "RANK" in env:
                found[int(env["RANK"])] = int(entry.name)
    return found


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a store whose two-rank run was SIGKILLed mid-run, a store of the same run uninterrupted)"""
    root = tmp_path_factory.mktemp("killed")
    whole = root / "whole"
    code, out, err = run_cli_process(
        "train", XOR, "--nproc-per-node", "2", *sets(*LONG), store=whole
    )
    assert code == 0, out + err
    store = root / "store"
    proc = _start(store)
    saved = _checkpointed(store, 2, proc)
    ranks = _ranks_of(proc.pid)
    for pid in [proc.pid, *ranks.values()]:  # every process at once, as an OOM kill or a
        os.kill(pid, signal.SIGKILL)  # preempted node does: the last checkpoint is what is left
    proc.wait()
    _gone(ranks.values())
    assert 0 < saved["epoch"] < 40 and saved["world_size"] == 2
    return store, whole


def _gone(pids: Any, seconds: float = 60) -> None:
    deadline = time.time() + seconds
    while any(Path(f"/proc/{pid}").exists() for pid in pids):
        assert time.time() < deadline, f"ranks {list(pids)} still run"
        time.sleep(0.05)


def test_ranks_stop_with_a_checkpoint_when_the_launcher_is_killed(tmp_path: Path) -> None:
    """torchrun starts the ranks in sessions of their own; they must not train on orphaned."""
    store = tmp_path / "store"
    proc = _start(store)
    _checkpointed(store, 1, proc)
    ranks = _ranks_of(proc.pid)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _gone(ranks.values())
    left = _checkpointed(store, 1)
    assert 0 < left["epoch"] < 40 and not (store / "xor-mlp").exists()


@pytest.mark.parametrize("nproc", [2, 1])
def test_a_killed_run_resumes_with_two_processes_or_one(
    killed: tuple[Path, Path], tmp_path: Path, nproc: int
) -> None:
    store = tmp_path / "store"
    shutil.copytree(killed[0], store)
    ranks = ["--nproc-per-node", "2"] if nproc == 2 else []
    code, out, err = run_cli_process("train", XOR, "--resume", *ranks, *sets(*LONG), store=store)
    assert code == 0, out + err
    assert "resuming run" in out and "written by 2 processes" in out
    # the same world size reaches the same weights; another one, the same within float sums
    tol = 1e-6 if nproc == 2 else 1e-4
    assert_same_weights(weights(store, "xor-mlp"), weights(killed[1], "xor-mlp"), tol)
    assert_same_curves(history(store, "xor-mlp"), history(killed[1], "xor-mlp"), ["valid_loss"])
    assert not (store / ".checkpoints").exists()


def test_resuming_with_another_strategy_is_refused(
    killed: tuple[Path, Path], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    shutil.copytree(killed[0], store)
    code, out, err = run_cli(
        "train", XOR, "--resume", *sets(*LONG, "train.distributed=none"), store=store
    )
    assert code == 1, out + err
    assert "train.distributed ('auto' → 'none')" in err and "fixes" in err
    assert list((store / ".checkpoints").glob(f"*/*/{INFO}"))  # the checkpoint stays


def test_plan_compare_sets_the_plan_for_as_many_devices_as_ranks(
    killed: tuple[Path, Path],
) -> None:
    code, out, err = run_cli("plan", "--compare", "xor-mlp", "--json", store=killed[1])
    assert code == 0, out + err
    shown = json.loads(out)
    rows = {r["quantity"]: r for r in shown["rows"]}
    rank = rows["samples per second per rank"]
    ranks = run_json(killed[1], "xor-mlp")["distributed"]["ranks"]
    assert rank["measured"] == pytest.approx(sum(r["samples_per_second"] for r in ranks) / 2)
    assert rank["estimated"] == pytest.approx(rows["samples per second"]["estimated"] / 2)
    assert any("planned as --devices 2" in note for note in shown["notes"])


# ----------------------------------------------------------------------------- a rank dies


def test_a_rank_that_dies_is_named_with_its_cause(tmp_path: Path) -> None:
    proc = _start(tmp_path / "store")
    _checkpointed(tmp_path / "store", 1, proc)
    ranks = _ranks_of(proc.pid)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, out + err
    last = err.strip().splitlines()[-1]
    assert f"rank 1 (pid {ranks[1]}) failed, killed by SIGKILL" in last, err
    assert "Traceback" not in err


def test_ctrl_c_stops_every_rank_at_one_step_with_a_checkpoint(tmp_path: Path) -> None:
    """The terminal's SIGINT reaches the launcher and every rank (and the agent forwards it
    again): the ranks agree on a step, save, and the launcher says how to resume."""
    store = tmp_path / "store"
    proc = _start(store)
    _checkpointed(store, 1, proc)
    os.killpg(proc.pid, signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, out + err
    assert "interrupted (SIGINT)" in err and "--nproc-per-node 2 --resume" in err, err
    assert "mismatch" not in err and "Traceback" not in err, err
    assert 0 < _checkpointed(store, 1)["epoch"] < 40
    code, out, err = run_cli_process(
        "train", XOR, "--resume", "--nproc-per-node", "2", *sets(*LONG), store=store
    )
    assert code == 0 and "resuming run" in out, out + err


def test_max_restarts_restarts_the_ranks_and_they_resume(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = _start(store, "--max-restarts", "1")
    _checkpointed(store, 1, proc)
    os.kill(_ranks_of(proc.pid)[1], signal.SIGKILL)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out + err
    assert "resuming run" in out
    assert run_json(store, "xor-mlp")["epochs"] == 40


# ----------------------------------------------------------------------------- bad settings


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_more_processes_than_cores_is_refused(tmp_path: Path) -> None:
    code, _, err = run_cli("train", XOR, "--nproc-per-node", "999", store=tmp_path)
    assert code == 2 and "more than the" in err and "CPU cores" in err and "at most" in err, err


def test_a_batch_that_does_not_split_says_the_nearest_that_does(tmp_path: Path) -> None:
    code, _, err = run_cli(
        "train", XOR, "--nproc-per-node", "2", *sets("train.batch_size=11"), store=tmp_path
    )
    assert code == 2 and "train.batch_size 11 does not split over 2" in err, err
    assert "set train.batch_size to 10 or 12" in err


def test_fsdp_for_an_architecture_without_blocks_is_refused(tmp_path: Path) -> None:
    code, _, err = run_cli(
        "train", XOR, "--nproc-per-node", "2", *sets("train.distributed=fsdp"), store=tmp_path
    )
    assert code == 2 and "fsdp" in err and "mlp architecture has none" in err and "ddp" in err


def test_a_port_in_use_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run_cli(
            "train", XOR, "--nproc-per-node", "2", "--master-port", str(port), store=tmp_path
        )
    assert code == 2 and f"port {port} is already in use" in err, err


@pytest.mark.parametrize(
    "args,message",
    [
        (["--nproc-per-node", "2", *sets("train.distributed=none")], "distributed is none but 2"),
        (["--max-restarts", "2"], "go with --nproc-per-node"),
        (["--nproc-per-node", "0"], "must be 1 or more"),
    ],
)
def test_launcher_options_that_make_no_sense(tmp_path: Path, args: list[str], message: str) -> None:
    code, _, err = run_cli("train", XOR, *args, store=tmp_path)
    assert code == 2 and message in err, err
    assert not (tmp_path / "xor-mlp").exists()
