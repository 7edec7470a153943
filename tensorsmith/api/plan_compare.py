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
    plan = estimate(job, Options(local))
    ref = f"{run.get('name', path.parent.name)}@{run.get('version', path.name)}"
    return ref, _rows(plan, job, run), notes


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


def _rows(plan: Plan, job: Job, run: dict[str, Any]) -> Comparison:
    seconds = float(plan.value("training time"))
    samples = job.steps * job.batch_size * job.grad_accum
    rows: Comparison = [("training time", "s", seconds, float(run["train_seconds"]))]
    if job.tokens_per_sample > 1 and run.get("tokens_per_second"):
        rate = samples * job.tokens_per_sample / seconds
        rows.append(("tokens per second", "1/s", rate, float(run["tokens_per_second"])))
    else:
        rows.append(("samples per second", "1/s", samples / seconds, run["samples_per_second"]))
    rows.append(("peak memory", "B", float(plan.value("peak")), float(run["peak_memory_bytes"])))
    return rows
