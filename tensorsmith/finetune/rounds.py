"""The gate loop: fine-tune in rounds until ``evaluate.gate`` holds on the valid split.

Each round starts from the weights the round before ended with (the best ones, when early
stopping restores them), with the policy's learning rate and length, and is judged on the valid
split alone. The loop stops at the first round whose valid metrics pass the gate; the test
split is evaluated once, after the loop. Every round is recorded (``rounds.csv``).

A run killed in any round resumes: the run's folder holds ``rounds.json`` (the rounds done)
and the weights the next round starts from; the trainer's checkpoint holds the round in flight.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from safetensors.torch import load_file, save_file

from tensorsmith.evaluation.evaluate import Evaluator, evaluate
from tensorsmith.evaluation.gate import Condition, check_gate
from tensorsmith.finetune.adapt import merge, plan_round
from tensorsmith.finetune.start import Start, load_matching
from tensorsmith.models import build_model
from tensorsmith.recipe import FinetuneSpec, Recipe
from tensorsmith.tasks import Prepared, Task
from tensorsmith.training.run import Trained, train_module
from tensorsmith.training.trainer import FitResult

__all__ = ["Rounds", "run_rounds"]


@dataclass
class Rounds:
    """What the loop did: the last round's training, each round's record, the gate on valid."""

    trained: Trained
    records: list[dict[str, Any]] = field(default_factory=list)
    passed: bool = False
    fresh: list[str] = field(default_factory=list)


def _round_recipe(recipe: Recipe, spec: FinetuneSpec, r: int) -> Recipe:
    """The recipe of round ``r``: the policy's length (the learning rate goes to the plan)."""
    train = recipe.train
    factor = spec.policy.length_factor ** (r - 1)
    key = "max_steps" if "max_steps" in type(train).model_fields else "epochs"
    length = max(1, round(getattr(train, key) * factor))
    return recipe.model_copy(update={"train": train.model_copy(update={key: length})})


class _State:
    """The loop's progress, kept in the run's folder so that a killed run resumes."""

    def __init__(self, folder: Path, main: bool = True) -> None:
        self.main = main
        self.path = folder / "rounds.json"
        self.weights = folder / "round-start.safetensors"

    def read(self) -> dict[str, Any]:
        if not self.path.is_file():
            return {"records": [], "fresh": [], "last": None}
        return dict(json.loads(self.path.read_text(encoding="utf-8")))

    def write(self, state: dict[str, Any], weights: dict[str, torch.Tensor]) -> None:
        if not self.main:  # several ranks: rank 0 writes
            return
        save_file({k: v.contiguous() for k, v in weights.items()}, str(self.weights))
        self.path.write_text(json.dumps(state, indent=2), encoding="utf-8")

    def start_weights(self, default: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return load_file(str(self.weights)) if self.weights.is_file() else default


def run_rounds(
    task: Task,
    prepared: Prepared,
    start: Start,
    evaluator: Evaluator,
    conditions: Sequence[Condition],
    console: Console,
    cache: Path,
    run: Any,  # training.checkpoints.Run: its folder keeps the loop's state
    resume: dict[str, Any] | None,
    monitor_mode: str | None,
) -> Rounds:
    recipe = task.recipe
    spec = recipe.finetune
    assert spec is not None
    state = _State(run.folder, run.main)
    saved = state.read()
    records: list[dict[str, Any]] = saved["records"]
    weights = state.start_weights(start.weights)
    lr, decay = recipe.train.optimizer.lr, recipe.train.optimizer.weight_decay
    trained: Trained | None = None
    for r in range(len(records) + 1, spec.rounds + 1):
        task.recipe = _round_recipe(recipe, spec, r)
        plan = plan_round(spec, weights, lr, decay, r)
        console.print(f"{recipe.name}: round {r} of {spec.rounds}", markup=False)
        run.info["round"] = r  # a checkpoint says its round: a kill after a round was recorded
        if resume and resume.get("round", r) != r:  # but before its checkpoint went is not
            resume = None  # resumed into the next round
        trained = train_module(
            task, prepared, evaluator.in_loop if evaluator.has_valid else None, console, cache,
            run.load if resume else None, run.save, monitor_mode, adapt=plan, world=run.world,
        )  # fmt: skip
        resume = None  # only the round in flight resumes from the checkpoint
        trained.module = merge(trained.module)
        record = _judge(task, trained, evaluator, conditions, r, plan.lr)
        records.append(record)
        saved["fresh"] = saved["fresh"] or plan.fresh
        weights = {k: v.detach().clone() for k, v in trained.module.state_dict().items()}
        last = {"fit": asdict(trained.fit), "record": trained.record}
        state.write({"records": records, "fresh": saved["fresh"], "last": last}, weights)
        run.forget_checkpoint()  # the next round's trainer starts afresh
        _say(console, recipe, record, conditions)
        if record["gate_passed"]:
            break
    task.recipe = recipe
    if trained is None:  # every round was done before a kill: the last round's model, read back
        trained = _rebuild(task, prepared, weights, saved["last"])
    return Rounds(trained, records, bool(records and records[-1]["gate_passed"]), saved["fresh"])


def _judge(
    task: Task,
    trained: Trained,
    evaluator: Evaluator,
    conditions: Sequence[Condition],
    r: int,
    lr: float,
) -> dict[str, Any]:
    """A round is decided on the valid split alone."""
    if "valid" not in evaluator.splits:
        raise ValueError("a fine-tune's rounds are decided on the valid split: it is empty")
    names = list(dict.fromkeys([*evaluator.metrics, *(c.metric for c in conditions)]))
    valid = evaluate(task, trained.module, evaluator.splits["valid"], names)
    gate = check_gate(list(conditions), valid)
    return {
        "round": r,
        "lr": lr,
        "epochs": trained.fit.epochs,
        "steps": trained.fit.steps,
        "train_seconds": trained.fit.train_seconds,
        "trainable_parameters": trained.record["trainable_parameters"],
        "gate_passed": gate.passed,
        **{f"valid_{k}": v for k, v in valid.items() if not isinstance(v, list)},
    }


def _say(
    console: Console, recipe: Recipe, record: dict[str, Any], conditions: Sequence[Condition]
) -> None:
    if not conditions:
        loss = record.get("valid_loss", record.get(f"valid_{recipe.key_metric}"))
        console.print(f"{recipe.name}: round {record['round']} done ({loss})", markup=False)
        return
    shown = ", ".join(
        f"{c.metric} {record.get(f'valid_{c.metric}', float('nan')):.4g} (needs {c.op} "
        f"{c.threshold:g})"
        for c in conditions
    )
    verdict = "held" if record["gate_passed"] else "did not hold"
    console.print(
        f"{recipe.name}: round {record['round']}: the gate {verdict} on valid: {shown}",
        markup=False,
    )


def _rebuild(
    task: Task, prepared: Prepared, weights: dict[str, torch.Tensor], last: Any
) -> Trained:
    """The last round's result, read back: a run killed after its last round and before the
    store resumes into storing it."""
    module = build_model(task.recipe.model, prepared.dims)
    load_matching(module, weights)
    return Trained(module.eval(), FitResult(**last["fit"]), dict(last["record"]))
