"""What a person sees: the live line at 80 columns, piped logs, early stopping said, Ctrl-C,
the gate's exit code, a CLI that answers at once, and MFU that never passes 100%."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import EXAMPLES, run_cli
from safetensors.torch import load_file

from tensorsmith.training.progress import Progress, fit_line
from tensorsmith.training.state import TrainControl, TrainState

XOR = EXAMPLES / "xor_mlp" / "recipe.yaml"
WINDSOR_MLP = EXAMPLES / "windsor_housing" / "mlp.yaml"


def in_terminal(args: list[str], columns: int, cwd: Path) -> tuple[int, str]:
    """Run `tensorsmith ARGS` on a pseudo-terminal of ``columns``; (exit code, what it drew)."""
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": str(columns), "LINES": "24", "TERM": "xterm"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorsmith", *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        env=env,
        cwd=cwd,
    )
    os.close(secondary)
    chunks = []
    while True:
        ready, _, _ = select.select([primary], [], [], 0.2)
        if ready:
            try:
                data = os.read(primary, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    os.close(primary)
    return proc.wait(), b"".join(chunks).decode("utf-8", errors="replace")


def test_the_live_line_keeps_counter_loss_and_eta_at_80_columns(tmp_path: Path) -> None:
    code, drawn = in_terminal(
        ["train", str(WINDSOR_MLP), "--store", str(tmp_path / "s"), "--set", "train.epochs=40",
         "--set", "train.early_stopping=null"],
        80,
        tmp_path,
    )  # fmt: skip
    assert code == 0, drawn
    frames = [f for f in re.split(r"[\r\n]", drawn) if f.startswith("epoch ")]
    assert len(frames) >= 5, drawn
    for frame in frames:
        assert len(frame.rstrip()) <= 80, frame
        assert re.match(r"epoch \d+/40 ", frame), frame
        assert "loss " in frame and "eta " in frame, frame
    assert any("val " in f for f in frames)  # the valid loss shows when it fits


def test_the_live_loss_mid_epoch_is_the_epochs_mean_so_far() -> None:
    """What the live line shows between evaluations: at the epoch's last batch it is the
    epoch's train_loss (a sum of batch losses once showed 15× the loss)."""
    import torch

    from tensorsmith.data.loading import EpochFeed, Tensors
    from tensorsmith.recipe import parse_recipe
    from tensorsmith.training.state import Callback
    from tensorsmith.training.trainer import Trainer

    raw = yaml.safe_load(XOR.read_text())
    raw["train"].update(epochs=2, batch_size=10)
    spec = parse_recipe(raw, base_dir=XOR.parent).train
    seen: list[tuple[int, int, float]] = []

    class Watch(Callback):
        wants_steps = True

        def on_step_end(self, state: TrainState, control: TrainControl, loss: Any) -> None:
            seen.append((state.epoch, state.batch, float(loss)))

    torch.manual_seed(0)
    x, y = torch.randn(120, 2), torch.randint(0, 2, (120, 1)).float()
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.Sigmoid(), torch.nn.Linear(3, 1))
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    fit = Trainer(spec, [Watch()]).fit(
        model, EpochFeed(Tensors(x, y), 10, 0), lambda m, b: bce(m(b[0]), b[1])
    )
    for epoch, row in enumerate(fit.history):
        last = [loss for e, b, loss in seen if e == epoch and b == 12]
        assert last == [pytest.approx(row["train_loss"], rel=1e-6)]


def test_fields_are_dropped_least_important_first() -> None:
    fields = [(0, "epoch 90/300"), (0, "loss 0.2326"), (2, "val 0.25"), (5, "1,234 samples/s"),
              (7, "mfu 41%"), (8, "lr 0.001"), (0, "eta 0:00:12")]  # fmt: skip
    wide = fit_line(fields, 200)
    assert all(text in wide for _, text in fields)
    narrow = fit_line(fields, 40)
    assert narrow.startswith("epoch 90/300") and "loss 0.2326" in narrow and "eta 0:00:12" in narrow
    assert "lr" not in narrow and "mfu" not in narrow and len(narrow) <= 40


def test_piped_output_is_one_record_per_line(tmp_path: Path) -> None:
    code, out, err = run_cli(
        "train", WINDSOR_MLP, "--set", "train.log_every=5", store=tmp_path / "s"
    )
    assert code == 0, err
    records = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert records and all("train_loss" in r and "valid_loss" in r and "eta" in r for r in records)
    assert any(len(r) > 80 for r in records)  # long records stay whole, never wrapped
    assert not any("eta 0:00:00" in r and "0 samples/s" in r for r in records[:1])


def test_early_stopping_is_said_and_marked(tmp_path: Path) -> None:
    code, out, err = run_cli("train", WINDSOR_MLP, store=tmp_path / "s")
    assert code == 0, err
    run = json.loads((tmp_path / "s" / "windsor-housing-mlp" / "1" / "run.json").read_text())
    assert run["stopped_early"] is True
    stop, best = run["epochs"], int(run["best"]["epoch"])
    message = f"stopped early at epoch {stop}: valid_loss did not improve for"
    assert message in out and f"restored epoch {best}" in out
    card = (tmp_path / "s" / "windsor-housing-mlp" / "1" / "card.md").read_text()
    assert message in card and f"restored epoch {best}" in card


def test_ctrl_c_saves_a_checkpoint_and_resume_continues_from_it(tmp_path: Path) -> None:
    """SIGINT mid-epoch: a checkpoint of that step, exit 130; --resume reaches the same
    weights as a run that was never interrupted."""
    recipe = tmp_path / "xor.yaml"
    raw = yaml.safe_load(XOR.read_text())
    raw["data"]["source"] = str(EXAMPLES / "xor_mlp" / "moons.csv")
    raw["train"].update({"epochs": 300, "threads": 1, "checkpoint_seconds": 3600})
    raw["evaluate"].update({"plots": False, "gate": {}})
    recipe.write_text(yaml.safe_dump(raw))
    store = tmp_path / "s"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tensorsmith", "train", str(recipe), "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    for line in proc.stdout:  # the first progress record: training is under way
        if line.startswith("epoch "):
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    saved = re.search(r"saved a checkpoint at step (\d+)", err)
    assert saved and "--resume" in err and "Traceback" not in err, err
    code, out, err = run_cli("train", recipe, "--resume", store=store)
    assert code == 0, err
    assert f"from step {saved.group(1)}" in out
    code, _, err = run_cli("train", recipe, store=tmp_path / "clean")
    assert code == 0, err
    a = load_file(str(store / "xor-mlp" / "1" / "model.safetensors"))
    b = load_file(str(tmp_path / "clean" / "xor-mlp" / "1" / "model.safetensors"))
    assert all((a[k] == b[k]).all() for k in b)


def test_a_failed_gate_exits_3_and_stores_the_version(tmp_path: Path) -> None:
    code, out, err = run_cli(
        "train", WINDSOR_MLP, "--set", "train.epochs=2", "--set", "evaluate.gate={r2: '>= 0.99'}",
        store=tmp_path / "s",
    )  # fmt: skip
    assert code == 3, out + err
    assert "gate" in err and "r2" in err and "windsor-housing-mlp@1" in err
    assert (tmp_path / "s" / "windsor-housing-mlp" / "1" / "model.safetensors").is_file()


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        ["--version"],
        ["validate", str(XOR)],
        ["models"],
        ["init", str(EXAMPLES / "windsor_housing" / "windsor_housing.csv"), "--target", "price"],
    ],
    ids=lambda a: a[0],
)
def test_light_commands_do_not_import_torch(args: list[str], tmp_path: Path) -> None:
    code = (
        "import sys\nfrom tensorsmith.cli import main\nsys.argv = ['tensorsmith', *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        "print('TORCH', 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "TENSORSMITH_STORE": str(tmp_path / "store")}
    proc = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr
    assert "TORCH False" in proc.stdout, proc.stdout


def test_version_models_and_unknown_names(tmp_path: Path) -> None:
    code, out, _ = run_cli("--version")
    assert code == 0 and re.match(r"tensorsmith \d+\.\d+", out)
    store = tmp_path / "s"
    assert run_cli("train", WINDSOR_MLP, "--set", "train.epochs=1", store=store)[0] in (0, 3)
    code, _, err = run_cli("models", "nope", store=store)
    assert code == 2 and "no model named 'nope'" in err and "windsor-housing-mlp" in err
    code, out, _ = run_cli("models", store=store, env={"COLUMNS": "80"})
    assert code == 0 and "windsor-housing-mlp" in out  # never cut to "windsor-h…"


def test_init_to_stdout_names_the_data_absolutely(tmp_path: Path) -> None:
    data = EXAMPLES / "windsor_housing" / "windsor_housing.csv"
    code, out, err = run_cli("init", data, "--target", "price", cwd=tmp_path)
    assert code == 0, err
    assert yaml.safe_load(out)["data"]["source"] == str(data.resolve())
    elsewhere = tmp_path / "sub"
    elsewhere.mkdir()
    (elsewhere / "r.yaml").write_text(out)
    assert run_cli("validate", elsewhere / "r.yaml")[0] == 0
    broken = yaml.safe_load(out)
    broken["data"]["source"] = "windsor_housing.csv"  # relative to the recipe: not there
    (elsewhere / "r.yaml").write_text(yaml.safe_dump(broken))
    code, _, err = run_cli("validate", elsewhere / "r.yaml")
    assert code == 2 and "data.source" in err and "does not exist" in err


def test_precision_auto_follows_the_hardware(tmp_path: Path) -> None:
    from tensorsmith.training.hardware import cpu_name, native_bf16

    lm = {
        "name": "poems",
        "task": "language-modeling",
        "data": {"source": str(EXAMPLES / "shakespeare_gpt" / "plays" / "sonnets.txt")},
        "model": {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 16},
        "train": {"max_steps": 4},
        "evaluate": {"samples": 0, "plots": False},
    }
    recipe = tmp_path / "lm.yaml"
    recipe.write_text(yaml.safe_dump(lm))
    code, out, err = run_cli("validate", recipe)
    assert code == 0 and "precision: auto" in out
    assert yaml.safe_load(out)["train"]["eval_every"] == 1  # a tenth of 4 steps, at least 1
    code, _, err = run_cli("train", recipe, store=tmp_path / "s")
    assert code == 0, err
    run = json.loads((tmp_path / "s" / "poems" / "1" / "run.json").read_text())
    assert run["precision_setting"] == "auto"
    assert run["precision"] == ("bf16" if native_bf16("cpu") else "fp32")
    assert run["hardware"]["cpu"] == cpu_name() and run["hardware"]["cpu"] not in ("x86_64", "")
    history = [r for r in (tmp_path / "s" / "poems" / "1" / "history.csv").read_text().splitlines()]
    assert history[1].startswith("0,")  # the curve starts at step 0
    assert run["mfu"] <= 1.0


def test_mfu_is_never_shown_above_100_percent() -> None:
    import torch

    stream = io.StringIO()
    progress = Progress(10, "step", 1, "tokens", 1e9, 1e9, stream=stream, live=False)
    state = TrainState(torch.nn.Linear(1, 1), 10, "step", tokens_per_sample=1000)
    control = TrainControl()
    progress.on_fit_start(state, control)
    for step in (1, 2):
        state.step, state.samples = step, step * 10_000  # 10M tokens/s at 1e9 FLOP per token
        time.sleep(0.01)
        progress.on_eval_end(state, control, {"step": float(step), "train_loss": 1.0})
    lines = stream.getvalue().splitlines()
    assert "eta --" in lines[0] and "tokens/s" not in lines[0]  # no rate before one is measured
    assert "mfu 100.0%" in lines[1]
