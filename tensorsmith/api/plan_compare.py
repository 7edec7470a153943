"""``plan --compare``: a stored run's plan, made now on this machine, beside what it measured."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

from tensorsmith.api.finetuning import finetune_recipe
from tensorsmith.api.planning import Sizes, hardware_device, plan_job
from tensorsmith.errors import StoreError
from tensorsmith.finetune.start import Start
from tensorsmith.planning.estimate import Job, Options, Plan, estimate
from tensorsmith.planning.report import Comparison
from tensorsmith.recipe import Recipe, parse_recipe
from tensorsmith.store.artifact import resolve, store_root
from tensorsmith.tasks.files import read_json_file, read_yaml_file

__all__ = ["compare"]


def compare(model: str, store: str | Path | None = None) -> tuple[str, Comparison, list[str]]:
    """(the version, [(quantity, unit, estimate, measurement)], notes) for a stored model:
    its recipe planned on ``local`` for the steps it ran, against its run.json."""
    path = resolve(model, store_root(store))
    run: dict[str, Any] = read_json_file(path / "run.json")
    if "recipe_dir" not in run:
        raise StoreError(
            f"{path} was trained before runs recorded their recipe's folder, which the plan "
            "needs to size the data; train it again to compare"
        )
    raw = read_yaml_file(path / "recipe.yaml")
    base = Path(run["recipe_dir"])
    resolved: tuple[Recipe, Start | None]
    if raw.get("finetune") is not None:
        resolved = finetune_recipe(raw, None, None, store, base_dir=base)
    else:
        resolved = (parse_recipe(raw, base_dir=base), None)
    local = hardware_device("local", store)
    job = plan_job(raw, None, Sizes(), store, local, resolved=resolved)
    job, notes = _as_run(job, run)
    ranks = run.get("distributed") or {}
    devices = int(ranks.get("world_size", 1))
    if devices > 1:
        notes.append(
            f"trained as {devices} processes ({ranks.get('strategy')}, {ranks.get('backend')}); "
            f"planned as --devices {devices}: data-parallel, each with this machine's step time "
            "÷ devices (communication not counted)"
        )
    plan = estimate(job, Options(local, devices))
    ref = f"{run.get('name', path.parent.name)}@{run.get('version', path.name)}"
    return ref, _rows(plan, job, run, devices), notes


def _as_run(job: Job, run: dict[str, Any]) -> tuple[Job, list[str]]:
    """The job cut to the steps the run took (early stopping ends a run before its length)."""
    notes = [f"measured on {run.get('hardware', {}).get('cpu', '?')}, planned now on this one"]
    steps = int(run.get("steps") or job.steps)
    if job.epochs and run.get("epochs") and int(run["epochs"]) != job.epochs:
        epochs = int(run["epochs"])
        notes.append(f"the run stopped after epoch {epochs} of {job.epochs}: planned for those")
        evaluated = math.ceil(job.eval_samples * epochs / job.epochs)
        evaluations = job.evaluations and epochs
        cut = replace(job, epochs=epochs, eval_samples=evaluated, evaluations=evaluations)
        return replace(cut, steps=steps), notes
    return replace(job, steps=steps), notes


def _rows(plan: Plan, job: Job, run: dict[str, Any], devices: int) -> Comparison:
    seconds = float(plan.value("training time"))
    samples = job.steps * job.batch_size * job.grad_accum
    rows: Comparison = [("training time", "s", seconds, float(run["train_seconds"]))]
    tokens = job.tokens_per_sample > 1 and run.get("tokens_per_second")
    unit, per = ("tokens", job.tokens_per_sample) if tokens else ("samples", 1)
    rate = samples * per / seconds
    rows.append((f"{unit} per second", "1/s", rate, float(run[f"{unit}_per_second"])))
    if devices > 1:  # each rank's own rate, against the plan's share of one device
        ranks = run["distributed"]["ranks"]
        measured = sum(r[f"{unit}_per_second"] for r in ranks) / len(ranks)
        rows.append((f"{unit} per second per rank", "1/s", rate / devices, measured))
    rows.append(("peak memory", "B", float(plan.value("peak")), float(run["peak_memory_bytes"])))
    return rows
