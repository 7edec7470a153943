"""Nothing silently wrong: data fingerprints, one checkpoint per run, values preprocessing
cannot take, damaged files, a full disk. Each case failed (silently, or with a raw exception)
before the error contract covered it.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import EXAMPLES, INFO, run_cli
from rich.console import Console

import tensorsmith
from tensorsmith.data.text import DataWarning

WINDSOR_CSV = EXAMPLES / "windsor_housing" / "windsor_housing.csv"
XOR = EXAMPLES / "xor_mlp" / "recipe.yaml"


def quiet() -> Console:
    return Console(file=io.StringIO())


def linear_recipe(folder: Path, csv: Path, **extra: Any) -> Path:
    raw = {
        "name": "houses",
        "task": "regression",
        "data": {"source": str(csv), "target": "price", **extra},
        "model": {"arch": "linear"},
        "evaluate": {"plots": False},
    }
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- data fingerprints


def test_evaluate_refuses_data_that_changed(tmp_path: Path) -> None:
    csv = tmp_path / "houses.csv"
    csv.write_bytes(WINDSOR_CSV.read_bytes())
    model = tensorsmith.train(linear_recipe(tmp_path, csv), store=tmp_path / "s", console=quiet())
    data = json.loads((Path(model.path) / "data.json").read_text())
    assert data["files"][str(csv.resolve())]["sha256"]
    assert set(data["splits"]) == {"train", "valid", "test"}
    assert tensorsmith.evaluate("houses", store=tmp_path / "s") == model.metrics  # unchanged data

    pd.read_csv(csv).sample(frac=1.0, random_state=1).to_csv(csv, index=False)  # shuffled rows
    code, _, err = run_cli("evaluate", "houses", store=tmp_path / "s")
    assert code == 2, err
    assert "houses.csv changed" in " ".join(err.split()) and "--data" in err
    # new data is evaluated with --data, whatever it holds
    code, out, err = run_cli("evaluate", "houses", "--data", csv, store=tmp_path / "s")
    assert code == 0, err
    assert "houses.csv" in out and "r2" in out


def test_resume_refuses_changed_data_and_changed_fixed_keys(tmp_path: Path) -> None:
    store = tmp_path / "store"
    csv = tmp_path / "moons.csv"
    csv.write_bytes((EXAMPLES / "xor_mlp" / "moons.csv").read_bytes())
    recipe = tmp_path / "xor.yaml"
    raw = yaml.safe_load(XOR.read_text())
    raw["data"]["source"] = str(csv)
    recipe.write_text(yaml.safe_dump(raw))
    kill_after_checkpoint(start(recipe, store, "train.epochs=100000"), store, "xor-mlp")

    code, _, err = run_cli(
        "train",
        recipe,
        "--resume",
        "--set",
        "train.epochs=100000",
        "--set",
        "train.optimizer.lr=0.01",
        store=store,
    )
    assert code == 1 and "train.optimizer.lr (0.05 → 0.01)" in err and "fixes" in err, err
    with open(csv, "a") as f:
        f.write("0.5,0.5,1\n")
    code, _, err = run_cli("train", recipe, "--resume", "--set", "train.epochs=100000", store=store)
    assert code == 1 and "moons.csv changed" in " ".join(err.split()), err
    assert len(list((store / ".checkpoints" / "xor-mlp").glob(f"*/{INFO}"))) == 1


def start(recipe: Path, store: Path, *sets: str) -> subprocess.Popen[bytes]:
    fixed = ("train.checkpoint_every=2", "train.threads=1", "evaluate.gate={}")
    args = [a for s in (*sets, *fixed) for a in ("--set", s)]
    env = {**os.environ, "TENSORSMITH_STORE": str(store)}
    return subprocess.Popen(
        [sys.executable, "-m", "tensorsmith", "train", str(recipe), *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=store.parent,
    )


def kill_after_checkpoint(proc: subprocess.Popen[bytes], store: Path, name: str) -> Path:
    """SIGKILL a training once it wrote a checkpoint; return the run's folder."""
    deadline = time.time() + 120
    found: list[Path] = []
    while not found and time.time() < deadline and proc.poll() is None:
        known = sorted((store / ".checkpoints" / name).glob(f"*/{INFO}"))
        found = [p for p in known if _owned_by(p.parent.parent, proc.pid)]
        time.sleep(0.05)
    alive = proc.poll() is None
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert alive and found, "the run ended (or never checkpointed) before the kill"
    return found[0].parent.parent


def _owned_by(folder: Path, pid: int) -> bool:
    try:
        return int(json.loads((folder / "meta.json").read_text())["pid"]) == pid
    except (OSError, ValueError, KeyError):
        return False


def test_two_runs_of_one_name_keep_their_own_checkpoints(tmp_path: Path) -> None:
    """Two trainings of one name with different settings, both killed: each resumes with its own
    recipe, a live run is never taken over, and finishing one keeps the other's checkpoint."""
    store = tmp_path / "store"
    slow, length = "train.optimizer.lr=0.01", "train.epochs=150"
    run_a = kill_after_checkpoint(start(XOR, store, slow, length), store, "xor-mlp")
    run_b = kill_after_checkpoint(start(XOR, store, length), store, "xor-mlp")
    live = start(XOR, store, "train.epochs=1000000")
    try:
        run_c = live_checkpoint(live, store)
        code, _, err = run_cli("train", XOR, "--resume", run_c.name, store=store)
        assert code == 1 and "still training" in err, err
    finally:
        live.kill()
        live.wait()

    # run C (newest) and run B differ from these settings; run A is the one they fit
    code, out, err = run_cli(
        "train",
        XOR,
        "--resume",
        "--set",
        slow,
        "--set",
        length,
        "--set",
        "evaluate.gate={}",
        store=store,
    )
    assert code == 0, out + err
    assert f"resuming run {run_a.name}" in out
    assert not run_a.exists() and run_b.is_dir() and run_c.is_dir()
    code, out, err = run_cli(
        "train",
        XOR,
        "--resume",
        run_b.name,
        "--set",
        length,
        "--set",
        "evaluate.gate={}",
        store=store,
    )
    assert code == 0, out + err
    assert f"resuming run {run_b.name}" in out and not run_b.exists() and run_c.is_dir()
    lrs = [
        yaml.safe_load((store / "xor-mlp" / v / "recipe.yaml").read_text())["train"]["optimizer"]
        for v in ("1", "2")
    ]
    assert [o["lr"] for o in lrs] == [0.01, 0.05]


def live_checkpoint(proc: subprocess.Popen[bytes], store: Path) -> Path:
    """The folder of a live run once it checkpointed (the process keeps running)."""
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        for meta in (store / ".checkpoints" / "xor-mlp").glob("*/meta.json"):
            if _owned_by(meta.parent, proc.pid) and (meta.parent / INFO).exists():
                return meta.parent
        time.sleep(0.05)
    raise AssertionError("the live run wrote no checkpoint")


@pytest.fixture(scope="module")
def killed_xor(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store holding one xor-mlp run (150 epochs), SIGKILLed after its first checkpoint."""
    store = tmp_path_factory.mktemp("killed") / "store"
    kill_after_checkpoint(start(XOR, store, "train.epochs=150"), store, "xor-mlp")
    return store


def copy_of_killed(killed_xor: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the ``killed_xor`` store for one test to resume: (store, the run's folder)."""
    store = tmp_path / "store"
    shutil.copytree(killed_xor, store)
    (run,) = (store / ".checkpoints" / "xor-mlp").iterdir()
    return store, run


def test_resume_applies_the_keys_that_only_watch_the_run(killed_xor: Path, tmp_path: Path) -> None:
    store, run = copy_of_killed(killed_xor, tmp_path)
    code, out, err = run_cli(
        "train",
        XOR,
        "--resume",
        "--set",
        "train.epochs=150",
        "--set",
        "train.log_every=50",
        "--set",
        "train.checkpoint_every=7",
        "--set",
        "evaluate.gate={}",
        store=store,
    )
    assert code == 0, out + err
    flat = " ".join(out.split())
    assert f"resuming run {run.name} of xor-mlp from step" in flat
    assert "applies the changed keys: train.checkpoint_every (2 → 7); train.log_every" in flat
    stored = yaml.safe_load((store / "xor-mlp" / "1" / "recipe.yaml").read_text())
    assert stored["train"]["log_every"] == 50 and stored["train"]["checkpoint_every"] == 7


def test_a_damaged_checkpoint_is_named(killed_xor: Path, tmp_path: Path) -> None:
    store, run = copy_of_killed(killed_xor, tmp_path)
    checkpoint = next((run / "checkpoint").glob("*.distcp"))
    checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    code, _, err = run_cli("train", XOR, "--resume", "--set", "train.epochs=150", store=store)
    assert code == 1, err
    assert "damaged" in err and run.name in err and "Traceback" not in err


# ----------------------------------------------------------------------------- a full disk


def _small_files(limit: int) -> None:
    """A process whose files may not grow past ``limit`` bytes (as on a full disk)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_a_full_disk_during_a_checkpoint_leaves_no_temp_file(tmp_path: Path) -> None:
    store = tmp_path / "store"
    recipe = tmp_path / "lm.yaml"
    raw = {
        "name": "poems",
        "task": "language-modeling",
        "data": {"source": str(EXAMPLES / "shakespeare_gpt" / "plays" / "sonnets.txt")},
        "model": {"arch": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 64, "block_size": 32},
        "train": {"max_steps": 50, "checkpoint_every": 5, "eval_every": 50},
    }
    recipe.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "tensorsmith", "train", str(recipe), "--store", str(store)],
        capture_output=True,
        text=True,
        preexec_fn=lambda: _small_files(400_000),  # the checkpoint holds ~1.2 MB
        timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "cannot write the checkpoint" in proc.stderr and "Traceback" not in proc.stderr
    left = [p for p in store.rglob("*") if p.name.endswith(".tmp") or ".partial-" in p.name]
    assert not left, left
    assert not (store / "poems").exists()


# ----------------------------------------------------------------------------- column types


def test_a_few_non_numbers_do_not_make_a_category(tmp_path: Path) -> None:
    df = pd.read_csv(WINDSOR_CSV).astype({"lotsize": object})
    df.loc[[3, 40], "lotsize"] = "?"
    csv = tmp_path / "dirty.csv"
    df.to_csv(csv, index=False)
    code, out, err = run_cli("train", linear_recipe(tmp_path, csv), store=tmp_path / "s")
    assert code == 0, out + err
    flat = " ".join(out.split())
    assert "column 'lotsize' is numeric but for 2 cells ('?') in rows 4, 41" in flat
    prep = json.loads((tmp_path / "s" / "houses" / "1" / "preprocess.json").read_text())
    assert prep["types"]["lotsize"] == "number"


# ----------------------------------------------------------------------------- predict-time values


def test_values_preprocessing_cannot_take_are_counted(tmp_path: Path) -> None:
    model = tensorsmith.train(
        linear_recipe(tmp_path, WINDSOR_CSV, transforms={"lotsize": "log"}),
        store=tmp_path / "s",
        console=quiet(),
    )
    rows = pd.read_csv(WINDSOR_CSV).drop(columns=["price"]).head(6).astype({"lotsize": object})
    rows.loc[0, "lotsize"] = "big"  # text in a number column
    rows.loc[1, "lotsize"] = -5  # log cannot take it
    rows.loc[2, "bedrooms"] = 400  # far outside the training range
    rows.loc[3, "airco"] = "maybe"  # neither yes nor no
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictions = model.predict(rows)
    notes = predictions.attrs["notes"]
    assert len(notes) == 3 and all(issubclass(w.category, DataWarning) for w in caught)
    joined = " ".join(notes)
    assert "column 'lotsize': 1 values that are not numbers (imputed), 1 values log" in joined
    assert "column 'bedrooms': 1 values far outside the training range [1, 6]" in joined
    assert "column 'airco': 1 values not yes/no" in joined
    assert np.isfinite(predictions["price_predicted"]).all()

    path = tmp_path / "rows.csv"
    rows.to_csv(path, index=False)
    code, _, err = run_cli("predict", "houses", "--data", path, store=tmp_path / "s")
    assert code == 0, err
    assert err.count("warning: column") == 3 and "'bedrooms'" in err


def test_a_header_with_spaces_still_predicts(tmp_path: Path) -> None:
    model = tensorsmith.train(
        linear_recipe(tmp_path, WINDSOR_CSV), store=tmp_path / "s", console=quiet()
    )
    rows = pd.read_csv(WINDSOR_CSV).drop(columns=["price"]).head(3)
    path = tmp_path / "spaced.csv"
    rows.rename(columns=lambda c: f" {c} ").to_csv(path, index=False)
    code, out, err = run_cli("predict", "houses", "--data", path, store=tmp_path / "s")
    assert code == 0, err
    expected = model.predict(rows)["price_predicted"].to_numpy()
    got = pd.read_csv(io.StringIO(out))["price_predicted"].to_numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5)


# ----------------------------------------------------------------------------- the store


def test_one_row_writes_valid_json(tmp_path: Path) -> None:
    csv = tmp_path / "one.csv"
    pd.read_csv(WINDSOR_CSV).head(8).to_csv(csv, index=False)
    model = tensorsmith.train(
        linear_recipe(tmp_path, csv, split={"valid": 0.0, "test": 0.125}),
        store=tmp_path / "s",
        console=quiet(),
    )
    text = (Path(model.path) / "metrics.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert json.loads(text)["test"]["r2"] is None  # R² of one row is undefined


def test_models_marks_a_damaged_version_and_the_name_still_resolves_to_it(tmp_path: Path) -> None:
    store = tmp_path / "s"
    for _ in range(2):
        tensorsmith.train(linear_recipe(tmp_path, WINDSOR_CSV), store=store, console=quiet())
    (store / "houses" / "2" / "metrics.json").write_text("{not json")
    code, out, err = run_cli("models", store=store)
    assert code == 0, err
    flat = " ".join(out.split())
    assert "damaged: metrics.json is not valid JSON" in flat
    assert flat.count("houses") == 2  # both versions listed, the damaged one marked
    code, _, err = run_cli("evaluate", "houses", store=store)
    assert code == 1 and "houses/2" in err and "metrics.json" in err, err


def test_init_out_into_a_new_folder(tmp_path: Path) -> None:
    out = tmp_path / "new" / "deeper" / "recipe.yaml"
    code, _, err = run_cli("init", WINDSOR_CSV, "--target", "price", "--out", out)
    assert code == 0, err
    assert tensorsmith.validate(out).data.target == "price"


# ----------------------------------------------------------------------------- generation


def test_streamed_text_equals_the_decoded_tokens(tmp_path: Path) -> None:
    """Incremental decoding gives exactly the text of decoding every token at once (byte-level
    BPE splits multi-byte characters across tokens)."""
    from tensorsmith.data.tokenizer import TextTokenizer
    from tensorsmith.tasks.generation import text_pieces

    text = "Füße — naïve café, 日本語 テキスト; emoji 🎭🎭 and plain words. " * 40
    tok = TextTokenizer.train("bpe", [text], vocab_size=300)
    ids = tok.encode(text)
    assert "".join(text_pieces(tok, iter(ids), None)) == tok.decode(ids) == text
    cut = "".join(text_pieces(tok, iter(ids), ["🎭🎭 and"]))
    assert cut == text[: text.index("🎭🎭 and")]
