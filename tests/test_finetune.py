"""Fine-tuning in rounds until the gate holds (issue 10): the gate loop, strategies, lineage,
promotion, resume inside a round, and every refusal a careless user meets.

The gate-loop test counts evaluations with a proxy around each split: rounds are decided on
the valid split alone and the test split is evaluated exactly once, after the last round.
Hugging Face checkpoints (tiny random BERT and GPT-2) are in test_finetune_hf.py.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
import yaml
from conftest import EXAMPLES, find_checkpoint, run_cli
from rich.console import Console
from safetensors.torch import load_file

import tensorsmith
from tensorsmith import RecipeError, TensorsmithError
from tensorsmith.evaluation.evaluate import Evaluator

ROUNDS = EXAMPLES / "windsor_rounds"
XOR = EXAMPLES / "xor_mlp" / "recipe.yaml"
GATE_FAILED = 3
POEMS = Path(__file__).parent / "data" / "shakespeare"
TINY_GPT = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0}


def _quiet() -> Console:
    return Console(file=io.StringIO())


@pytest.fixture(autouse=True)
def _keep_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with the windsor_rounds parent and a small xor-mlp parent."""
    root = tmp_path_factory.mktemp("finetune") / "store"
    tensorsmith.train(ROUNDS / "parent.yaml", store=root, console=_quiet())
    tensorsmith.train(
        XOR, ["train.epochs=60", "evaluate.plots=false"], store=root, console=_quiet()
    )
    return root


def _xor_child(folder: Path, **finetune: Any) -> Path:
    """A fine-tune recipe of xor-mlp on the same moons (a copy of the data beside it)."""
    (folder / "moons.csv").write_bytes((EXAMPLES / "xor_mlp" / "moons.csv").read_bytes())
    recipe = {
        "name": "moons",
        "task": "classification",
        "data": {
            "source": "moons.csv",
            "target": "label",
            "types": {"label": "category"},
            "split": {"valid": 0.2, "test": 0.2, "seed": 0},
        },
        "train": {"epochs": 5, "batch_size": 10, "optimizer": {"name": "adam", "lr": 0.05}},
        "evaluate": {"plots": False},
        "finetune": {"from": "xor-mlp", **finetune},
    }
    path = folder / "moons.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- the gate loop


class _Counted:
    """An evaluation split that counts how often its batches are drawn."""

    def __init__(self, split: Any, name: str, log: list[str]) -> None:
        self._split, self._name, self._log = split, name, log

    def batches(self, limit: int | None = None) -> Any:
        self._log.append(self._name)
        return self._split.batches(limit)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)


def test_rounds_are_decided_on_valid_and_test_is_evaluated_once(
    store: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[str] = []
    original = Evaluator.__init__

    def counting(self: Evaluator, task: Any, splits: Any, *args: Any, **kw: Any) -> None:
        original(self, task, {k: _Counted(v, k, drawn) for k, v in splits.items()}, *args, **kw)

    monkeypatch.setattr(Evaluator, "__init__", counting)
    model = tensorsmith.finetune(ROUNDS / "recipe.yaml", store=store, console=_quiet())

    rounds = model.run["rounds"]
    assert rounds[0]["gate_passed"] is False  # the example's promise: round 1 falls short …
    assert rounds[-1]["gate_passed"] is True and len(rounds) <= 3  # … and it holds by round 3
    assert all("valid_mape" in r and not any(k.startswith("test") for k in r) for r in rounds)
    assert drawn.count("test") == 1, drawn  # once, after the loop
    assert drawn.count("valid") >= 2 * len(rounds)  # every epoch of every round, and each verdict
    assert drawn[-1] == "test"  # after every valid evaluation

    folder = store / "windsor-rounds" / str(model.version)
    with open(folder / "rounds.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert [int(r["round"]) for r in table] == list(range(1, len(rounds) + 1))
    assert table[0]["gate_passed"] == "False" and table[-1]["gate_passed"] == "True"
    assert (folder / "plots" / "rounds.png").stat().st_size > 10_000
    run = json.loads((folder / "run.json").read_text())
    assert run["parent"]["name"] == "windsor-outside" and run["parent"]["version"] == 1
    assert "columns prefarea are not used" in " ".join(run["notes"])
    card = (folder / "card.md").read_text()
    assert "## Fine-tuning" in card and "From windsor-outside@1, strategy head." in card
    assert card.count("did not hold") == len(rounds) - 1
    # finetune.promote: the gate held on valid and on test, so the version is production now
    assert tensorsmith.load("windsor-rounds@production", store=store).version == model.version
    chain = tensorsmith.lineage("windsor-rounds", store=store)
    assert [c["ref"] for c in chain] == [f"windsor-rounds@{model.version}", "windsor-outside@1"]


def test_a_gate_that_never_holds_exits_3_and_the_version_is_kept_and_marked(
    store: Path, tmp_path: Path
) -> None:
    overrides = ["--set", "finetune.rounds=2", "--set", "evaluate.gate.mape=<= 0.01"]
    code, out, err = run_cli(
        "finetune", ROUNDS / "recipe.yaml", *overrides, "--store", store, cwd=tmp_path
    )
    assert code == GATE_FAILED, err
    assert "round 2: the gate did not hold on valid" in out
    listed = [m for m in tensorsmith.models("windsor-rounds", store=store) if m["gate"]]
    newest = max(listed, key=lambda m: m["version"])
    assert "FAILED" in str(newest["gate"]).upper() or newest["gate"] is False
    run = json.loads((store / "windsor-rounds" / str(newest["version"]) / "run.json").read_text())
    assert [r["gate_passed"] for r in run["rounds"]] == [False, False]
    aliases = json.loads((store / "windsor-rounds" / "aliases.json").read_text())
    assert aliases.get("production") != newest["version"]  # not promoted


# ----------------------------------------------------------------------------- strategies


def _weights(store: Path, name: str, version: int | None = None) -> dict[str, torch.Tensor]:
    folder = tensorsmith.load(name if version is None else f"{name}@{version}", store=store).path
    return load_file(str(Path(folder) / "model.safetensors"))


def test_head_strategy_trains_the_head_alone(store: Path, tmp_path: Path) -> None:
    parent = _weights(store, "xor-mlp", 1)
    model = tensorsmith.finetune(
        _xor_child(tmp_path, strategy="head"), store=store, console=_quiet()
    )
    child = _weights(store, "moons", model.version)
    assert child.keys() == parent.keys()
    changed = sorted(k for k in parent if not torch.equal(parent[k], child[k]))
    head = sorted(parent)[-2:]  # the output layer's weight and bias
    assert changed and set(changed) <= set(head), changed
    assert model.run["strategy"] == "head"
    assert model.run["rounds"][0]["trainable_parameters"] < sum(v.numel() for v in parent.values())


def test_freeze_patterns_keep_the_named_weights(store: Path, tmp_path: Path) -> None:
    parent = _weights(store, "xor-mlp", 1)
    first = sorted(parent)[0]
    pattern = first.rsplit(".", 1)[0] + ".*"
    model = tensorsmith.finetune(
        _xor_child(tmp_path, freeze=[pattern]), store=store, console=_quiet()
    )
    child = _weights(store, "moons", model.version)
    frozen = [k for k in parent if k.startswith(first.rsplit(".", 1)[0] + ".")]
    assert frozen and all(torch.equal(parent[k], child[k]) for k in frozen)
    assert any(not torch.equal(parent[k], child[k]) for k in parent if k not in frozen)


def _poems_lm(folder: Path, name: str, **changes: Any) -> Path:
    corpus = folder / "corpus"
    if not corpus.exists():
        corpus.mkdir()
        for f in POEMS.glob("*.txt"):
            (corpus / f.name).write_bytes(f.read_bytes())
    recipe: dict[str, Any] = {
        "name": name,
        "task": "language-modeling",
        "data": {"source": "corpus/*.txt", "tokenizer": {"kind": "char"}, "split": {"valid": 0.1}},
        "model": {"arch": "gpt", **TINY_GPT},
        "train": {"max_steps": 12, "batch_size": 4, "eval_every": 6, "eval_batches": 2},
        "evaluate": {"samples": 0, "plots": False},
        **changes,
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe), encoding="utf-8")
    return path


def test_lora_on_our_gpt_is_merged_into_plain_weights(tmp_path: Path) -> None:
    store = tmp_path / "store"
    tensorsmith.train(_poems_lm(tmp_path, "poems-base"), store=store, console=_quiet())
    child = _poems_lm(
        tmp_path,
        "poems-lora",
        finetune={"from": "poems-base", "strategy": "lora", "lora": {"rank": 4, "alpha": 8}},
    )
    model = tensorsmith.finetune(child, store=store, console=_quiet())
    parent, merged = _weights(store, "poems-base"), _weights(store, "poems-lora")
    assert merged.keys() == parent.keys()  # no lora_A / lora_B / base_layer keys: plain weights
    assert not any("lora" in k for k in merged)
    changed = [k for k in parent if not torch.equal(parent[k], merged[k])]
    assert changed and all(k.endswith(".weight") for k in changed)
    trainable = model.run["rounds"][0]["trainable_parameters"]
    assert 0 < trainable < sum(v.numel() for v in parent.values()) // 4
    text = "".join(tensorsmith.generate("poems-lora", "Shall I", store=store, max_new_tokens=8))
    assert len(text) >= 8


# ----------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("finetune", "said"),
    [
        ({"strategy": "lora", "lora": {"targets": ["no_such_layer"]}}, "no_such_layer"),
        ({"rounds": 0}, "finetune.rounds"),
    ],
)
def test_bad_finetune_sections_are_refused(
    store: Path, tmp_path: Path, finetune: dict[str, Any], said: str
) -> None:
    with pytest.raises(TensorsmithError) as caught:
        tensorsmith.finetune(_xor_child(tmp_path, **finetune), store=store, console=_quiet())
    assert said in str(caught.value)


def test_lora_targets_that_match_nothing_list_the_modules(store: Path, tmp_path: Path) -> None:
    recipe = _xor_child(tmp_path, strategy="lora", lora={"targets": ["attn"]})
    with pytest.raises(TensorsmithError) as caught:
        tensorsmith.finetune(recipe, store=store, console=_quiet())
    message = str(caught.value)
    assert "attn" in message and "layers" in message  # the model's own Linear names are listed


def test_a_parent_of_another_task_is_refused_naming_both(store: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(_xor_child(tmp_path).read_text())
    recipe["task"] = "regression"
    recipe["data"]["target"] = "x1"
    del recipe["data"]["types"]
    with pytest.raises(TensorsmithError) as caught:
        tensorsmith.finetune(recipe, store=store, console=_quiet())
    message = str(caught.value)
    assert "classification" in message and "regression" in message


@pytest.mark.parametrize("source", ["no-such-model", "no-such-model@3", "/no/such/folder"])
def test_a_missing_starting_point_is_named(store: Path, tmp_path: Path, source: str) -> None:
    code, _, err = run_cli(
        "finetune", _xor_child(tmp_path), "--from", source, "--store", store, cwd=tmp_path
    )
    assert code != 0 and "Traceback" not in err
    assert source.split("@")[0].strip("/").split("/")[-1] in err


def test_hugging_face_checkpoints_with_pickles_custom_code_or_damage_are_refused(
    store: Path, tmp_path: Path
) -> None:
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (pickled / "pytorch_model.bin").write_bytes(b"not read")
    custom = tmp_path / "custom"
    custom.mkdir()
    (custom / "config.json").write_text(
        json.dumps({"model_type": "bert", "auto_map": {"AutoModel": "modeling_x.Model"}})
    )
    (custom / "model.safetensors").write_bytes(b"")
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    (damaged / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 1}))
    (damaged / "model.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    from tokenizers import Tokenizer, models

    Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")).save(
        str(damaged / "tokenizer.json")
    )
    recipe = _poems_lm(tmp_path, "poems-hf")
    cases = ((pickled, "pickle"), (custom, "its own model code"), (damaged, "model.safetensors"))
    for folder, said in cases:
        with pytest.raises(TensorsmithError) as caught:
            tensorsmith.finetune(recipe, str(folder), store=store, console=_quiet())
        assert said in str(caught.value)


def test_a_gate_on_a_metric_the_task_does_not_compute(store: Path, tmp_path: Path) -> None:
    recipe = yaml.safe_load(_xor_child(tmp_path).read_text())
    recipe["evaluate"]["gate"] = {"perplexity": "<= 3"}
    with pytest.raises(RecipeError) as caught:
        tensorsmith.finetune(recipe, store=store, console=_quiet())
    assert "perplexity" in str(caught.value)


def test_labels_and_columns_the_parent_never_saw(store: Path, tmp_path: Path) -> None:
    path = _xor_child(tmp_path)
    with open(tmp_path / "moons.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    with open(tmp_path / "moons.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*rows[0].keys(), "noise"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({**row, "noise": i % 7, **({"label": "2"} if i % 9 == 0 else {})})
    model = tensorsmith.finetune(path, store=store, console=_quiet())
    notes = " ".join(model.run["notes"])
    assert "labels the parent never saw: 2" in notes and "output layer starts fresh" in notes
    assert "columns noise are not used" in notes
    assert any("noise" in note for note in model.run["notes"])
    assert model.run["fresh"]  # the output layer for three classes
    assert set(model.predict(pd.DataFrame({"x1": [0.5], "x2": [0.1]})).columns) >= {
        "proba_0",
        "proba_1",
        "proba_2",
    }


def test_promote_of_a_version_that_does_not_exist(store: Path, tmp_path: Path) -> None:
    code, _, err = run_cli("promote", "windsor-outside@99", "--store", store, cwd=tmp_path)
    assert code != 0 and "Traceback" not in err
    assert "windsor-outside" in err and "99" in err


# ----------------------------------------------------------------------------- resume


def _cli(*args: str | Path, store: Path) -> list[str]:
    return [sys.executable, "-m", "tensorsmith.cli", *map(str, args), "--store", str(store)]


def test_a_fine_tune_killed_inside_round_2_resumes_to_the_same_weights(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0", "COLUMNS": "200"}
    env.pop("TENSORSMITH_STORE", None)
    stores = {k: tmp_path / k for k in ("killed", "full")}
    for root in stores.values():
        tensorsmith.train(
            XOR, ["train.epochs=20", "evaluate.plots=false"], store=root, console=_quiet()
        )
    child = _xor_child(tmp_path, rounds=2)
    long = ["--set", "train.epochs=160", "--set", "train.checkpoint_every=10",
            "--set", "train.log_every=1000", "--set", "evaluate.gate.accuracy=>= 0.999",
            "--set", "model.dropout=0.2"]  # fmt: skip
    full = subprocess.Popen(
        _cli("finetune", child, *long, store=stores["full"]), cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    victim = subprocess.Popen(
        _cli("finetune", child, *long, store=stores["killed"]), cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    rounds_file = None
    deadline = time.monotonic() + 240
    while True:  # wait for round 1 to end and round 2 to write its first checkpoint
        found = sorted((stores["killed"] / ".checkpoints" / "moons").glob("*/rounds.json"))
        rounds_file = found[0] if found else None
        if rounds_file is not None and find_checkpoint(stores["killed"], "moons").exists():
            break
        assert victim.poll() is None, victim.stderr.read() if victim.stderr else ""
        assert time.monotonic() < deadline, "round 2 never checkpointed"
        time.sleep(0.02)
    time.sleep(0.2)
    assert victim.poll() is None, "the fine-tune ended before the kill; lengthen the rounds"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert full.wait(timeout=300) == GATE_FAILED, full.stderr.read() if full.stderr else ""

    resumed = subprocess.run(
        _cli("finetune", child, *long, "--resume", store=stores["killed"]),
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert resumed.returncode == GATE_FAILED, resumed.stderr
    a, b = _weights(stores["killed"], "moons"), _weights(stores["full"], "moons")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    runs = [json.loads((s / "moons" / "1" / "run.json").read_text()) for s in stores.values()]
    assert [r["round"] for r in runs[0]["rounds"]] == [1, 2]
    drop = ("train_seconds",)
    assert [{k: v for k, v in r.items() if k not in drop} for r in runs[0]["rounds"]] == [
        {k: v for k, v in r.items() if k not in drop} for r in runs[1]["rounds"]
    ]


# ----------------------------------------------------------------------------- Hugging Face


def _tiny_gpt2(folder: Path, corpus: Path) -> Path:
    """A random 2-layer GPT-2 saved with save_pretrained, and a byte-level BPE tokenizer.json
    trained on the corpus (what a downloaded checkpoint folder holds)."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = ByteLevelBPETokenizer()
    tok.train([str(p) for p in sorted(corpus.glob("*.txt"))], vocab_size=300, show_progress=False)
    tok.add_special_tokens(["<|endoftext|>"])
    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=tok.get_vocab_size(), n_positions=64, n_embd=32, n_layer=2, n_head=2
    )
    GPT2LMHeadModel(config).save_pretrained(folder, safe_serialization=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def test_a_gpt2_checkpoint_fine_tunes_with_lora_and_generates_offline(tmp_path: Path) -> None:
    store = tmp_path / "store"
    recipe = _poems_lm(tmp_path, "poems-gpt2")  # also copies the poems into tmp_path/corpus
    raw = yaml.safe_load(recipe.read_text())
    del raw["model"]  # the checkpoint's architecture
    raw["data"]["tokenizer"] = {"kind": "bpe"}
    raw["finetune"] = {  # a path in the recipe is relative to the recipe's folder
        "from": "tiny-gpt2",
        "strategy": "lora",
        "lora": {"rank": 4, "targets": ["c_attn"]},
    }
    recipe.write_text(yaml.safe_dump(raw), encoding="utf-8")
    checkpoint = _tiny_gpt2(tmp_path / "tiny-gpt2", tmp_path / "corpus")
    assert Path.cwd() != tmp_path
    model = tensorsmith.finetune(recipe, store=store, console=_quiet())

    folder = Path(model.path)
    config = json.loads((folder / "config.json").read_text())
    assert config["arch"] == "hf-causal"
    assert config["model"]["config"]["model_type"] == "gpt2"  # the checkpoint's own config
    recipe_stored = yaml.safe_load((folder / "recipe.yaml").read_text())
    assert recipe_stored["model"]["config"]["model_type"] == "gpt2"
    weights = load_file(str(folder / "model.safetensors"))
    assert not any("lora" in k for k in weights)  # merged: serving needs no peft
    original = load_file(str(checkpoint / "model.safetensors"))
    attn = [k for k in original if k.endswith("attn.c_attn.weight")]
    ours = {k.removeprefix("model."): v for k, v in weights.items()}
    assert attn and all(not torch.equal(original[k], ours[k]) for k in attn)  # LoRA moved them
    mlp = [k for k in original if k.endswith("mlp.c_fc.weight")]
    assert all(torch.equal(original[k], ours[k]) for k in mlp)  # untargeted layers untouched
    from tokenizers import Tokenizer

    line = "Shall I compare thee to a summer's day?"
    theirs, kept = (Tokenizer.from_file(str(f / "tokenizer.json")) for f in (checkpoint, folder))
    assert kept.encode(line).ids == theirs.encode(line).ids  # the checkpoint's own tokenizer
    run = json.loads((folder / "run.json").read_text())
    assert run["parent"]["kind"] == "huggingface" and len(run["parent"]["sha256"]) == 64

    # loads and generates with no network and no peft in the path
    again = tensorsmith.load(str(folder))
    text = again.generate("Shall I compare", max_new_tokens=12, temperature=0.0)
    assert text == again.generate("Shall I compare", max_new_tokens=12, temperature=0.0)
    assert len(text) > 0
    chain = tensorsmith.lineage(str(folder))
    assert chain[-1]["ref"] == "tiny-gpt2" and chain[-1]["kind"] == "huggingface"
