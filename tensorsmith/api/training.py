"""The ``train`` verb: a recipe through the task, the one training run, evaluation and the store."""

from __future__ import annotations

import datetime as dt
import os
import time
from functools import partial
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tensorsmith.api.distributed import Launch, check_ranks, run_ranks
from tensorsmith.api.finetuning import Extras, fine_tune, promote_passed
from tensorsmith.api.model import Model
from tensorsmith.api.recipes import RecipeLike, validate
from tensorsmith.data.fingerprint import fingerprint
from tensorsmith.errors import RecipeError, TensorsmithError, TrainingError
from tensorsmith.evaluation.evaluate import Evaluator
from tensorsmith.evaluation.gate import ConditionResult, GateResult, check_gate, parse_gate
from tensorsmith.evaluation.metrics import MetricValue, monitor_mode
from tensorsmith.evaluation.plots import draw_plots
from tensorsmith.evaluation.report import format_gate, model_card, print_metrics
from tensorsmith.finetune.start import Start
from tensorsmith.recipe import Recipe, recipe_to_yaml
from tensorsmith.store.artifact import (
    Contents,
    check_writable,
    store_root,
    write_version,
)
from tensorsmith.tasks import Outputs, Prepared, Task, create_task
from tensorsmith.tasks.predictor import Predictor
from tensorsmith.training.checkpoints import Run, Runs, check_resumable
from tensorsmith.training.distributed import World, join, leave
from tensorsmith.training.launch import RESULT, record_failure
from tensorsmith.training.run import Trained, train_module


def _monitor(task: Task, prepared: Prepared) -> tuple[str | None, str | None]:
    es = task.recipe.train.early_stopping
    if es is None:
        return None, None
    if es.monitor.startswith("valid_") and "valid" not in prepared.splits:
        raise RecipeError(
            f"train.early_stopping.monitor is {es.monitor} but the valid split is "
            "empty; set data.split.valid or monitor train_loss"
        )
    mode = es.mode if es.mode != "auto" else None
    return es.monitor, mode or monitor_mode(es.monitor, task.metric_names, "monitor")


def train(
    recipe: RecipeLike,
    overrides: list[str] | None = None,
    store: str | Path | None = None,
    resume: bool | str = False,
    console: Console | None = None,
    ranks: Launch | int | None = None,
) -> Model:
    """Train a recipe and store the model as a new version; returns the stored model.

    ``resume``: True continues the newest interrupted run of the recipe's name, a run id that
    run; the checkpoint's fixed keys and the data must be unchanged. ``ranks``: train as that
    many processes (torchrun's launcher), each on its share of every batch.
    """
    parsed = validate(recipe, overrides)
    if parsed.finetune is not None:
        raise RecipeError(
            "this recipe has a finetune section: fine-tune it with `tensorsmith finetune "
            "RECIPE`, or remove the section to train from scratch"
        )
    if ranks is not None:
        return run_ranks("train", recipe, parsed, overrides, store, resume, ranks)
    return run_recipe(parsed, store, resume, console)


def run_recipe(
    parsed: Recipe,
    store: str | Path | None,
    resume: bool | str,
    console: Console | None,
    start: Start | None = None,
) -> Model:
    """Train (or, from ``start``, fine-tune) a checked recipe into a new stored version."""
    started = time.perf_counter()
    root = store_root(store)
    check_writable(root)
    # one process, or a rank of a torchrun job (the process group opened)
    world = join(parsed.train.distributed)
    try:
        if world.many:
            check_ranks(parsed, world.size)
        out = console or Console(highlight=False)
        if not world.main:  # rank 0 alone speaks
            out = Console(quiet=True)
        task = create_task(parsed)
        if start is not None and start.task is not None:
            task.inherit(start.task)
        run, state = _shared_run(root, task, resume, out, world)
        try:
            model = _train_run(root, task, run, state, out, started, start)
        except BaseException:
            run.release()  # the checkpoint stays for --resume
            raise
        run.finish()
        return model
    except BaseException as exc:
        if world.many:
            record_failure(exc)  # the launcher's report names this rank and this cause
        raise
    finally:
        leave(world)


def _shared_run(
    root: Path, task: Task, resume: bool | str, out: Console, world: World
) -> tuple[Run, dict[str, Any] | None]:
    """Rank 0 opens the run (new or resumed) and every other rank joins the same one."""
    if not world.many:
        run, state = _open_run(root, task, resume, out)
    elif world.main:
        try:
            run, state = _open_run(root, task, resume or _restarted(), out)
        except TensorsmithError as exc:
            world.broadcast((type(exc).__name__, str(exc), None))
            raise
        world.broadcast(("", run.id, state))
    else:
        error, text, state = world.broadcast(None)
        if error:
            raise TrainingError(text)
        run = Runs(root, task.recipe.name).join(text)
    run.world = world
    run.info = world.record()
    return run, state


def _restarted() -> bool:
    """torchrun's agent restarted the ranks (--max-restarts): continue the interrupted run."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def _open_run(
    root: Path, task: Task, resume: bool | str, out: Console
) -> tuple[Run, dict[str, Any] | None]:
    """A new run, or the interrupted one to continue (with its checkpoint's info)."""
    runs = Runs(root, task.recipe.name)
    if not resume:
        return runs.start(task.recipe), None
    files = task.data_files()
    run, state, (task.recipe, applied) = runs.resume(
        resume if isinstance(resume, str) else None,
        lambda meta: check_resumable(meta, task.recipe, files),
    )
    where = f"step {state['step']}" + (f" (epoch {state['epoch']})" if state["epoch"] else "")
    ranks = state.get("world_size", 1)
    by = f", written by {ranks} processes" if ranks > 1 else ""
    out.print(f"resuming run {run.id} of {task.recipe.name} from {where}{by}")
    if applied:
        out.print(f"the resumed run applies the changed keys: {'; '.join(applied)}")
    return run, state


def _train_run(
    root: Path,
    task: Task,
    run: Run,
    state: dict[str, Any] | None,
    out: Console,
    started: float,
    start: Start | None,
) -> Model:
    recipe, world = task.recipe, run.world
    if not world.main:
        world.barrier()  # rank 0 prepares first: it alone writes the cache the others read
    prepared = task.prepare(root / ".cache", out)
    if world.main:
        world.barrier()
    data = fingerprint(task.data_files(), prepared.split_digests)
    run.record_data(data)
    notes = [*(start.notes if start else []), *prepared.notes]
    for note in notes:
        out.print(f"{recipe.name}: {note}", markup=False)
    monitor, mode = _monitor(task, prepared)
    evaluator = Evaluator(task, prepared.splits, recipe.evaluate.metrics, monitor, world)
    extras = Extras(files={"data.json": data}, run={"notes": notes} if notes else {})
    if start is None:
        trained = train_module(
            task, prepared, evaluator.in_loop if evaluator.has_valid else None, out,
            root / ".cache", run.load if state else None, run.save, mode, world=world,
        )  # fmt: skip
    else:
        trained = fine_tune(task, prepared, start, evaluator, out, root, run, state, mode, extras)
    if not world.main:  # rank 0 evaluates the test split and stores the version
        return Model(Predictor.load(world.broadcast(None)))
    metrics = evaluator.final(trained.module)  # the test split: evaluated once, here
    gate = _gate(task, metrics, extras.valid_passed)
    version, path = _store(root, task, prepared, trained, evaluator, metrics, gate, started, extras)
    _report(out, task, trained, metrics, gate, version, path)
    promote_passed(root, task, gate, version, out)
    if os.environ.get(RESULT):  # the launcher that started the ranks returns this version
        Path(os.environ[RESULT]).write_text(str(path.resolve()), encoding="utf-8")
    world.broadcast(path)
    return Model(Predictor.load(path))


def _judged(metrics: dict[str, Any]) -> str:
    """The split a gate is checked on: test when there is one, else valid."""
    return "test" if "test" in metrics else "valid"


def _gate(
    task: Task, metrics: dict[str, dict[str, MetricValue]], valid_passed: bool | None = None
) -> GateResult | None:
    """The gate on the test split (valid without one); a fine-tune whose rounds never passed
    on valid fails it whatever the test split says."""
    if not task.recipe.evaluate.gate:
        return None
    conditions = parse_gate(task.recipe.evaluate.gate, task.metric_names, task.name)
    result = check_gate(conditions, metrics.get(_judged(metrics), {}))
    if valid_passed is False:
        reason = "no fine-tuning round passed the gate on the valid split"
        result = GateResult([*result.results, ConditionResult(conditions[0], None, False, reason)])
    return result


def _artifact_recipe(recipe: Recipe) -> str:
    """The resolved recipe with data paths made absolute, so the artifact stands on its own."""
    data = yaml.safe_load(recipe_to_yaml(recipe))
    data["data"]["source"] = str(recipe.path(recipe.data.source).resolve())
    split = data["data"].get("split", {})
    for key in ("train", "valid", "test"):
        if isinstance(split.get(key), str):
            split[key] = str(recipe.path(split[key]).resolve())
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


def _store(
    root: Path,
    task: Task,
    prepared: Prepared,
    trained: Trained,
    evaluator: Evaluator,
    metrics: dict[str, dict[str, MetricValue]],
    gate_result: GateResult | None,
    started: float,
    extras: Extras,
) -> tuple[int, Path]:
    recipe = task.recipe
    gate = gate_result.to_dict() if gate_result is not None else None
    run = {
        "name": recipe.name,
        "task": task.name,
        "arch": recipe.model.arch,
        "recipe_dir": str(Path(recipe.base_dir).resolve()),  # where data.source resolves
        **trained.record,
        "wall_seconds": time.perf_counter() - started,
        "dims": prepared.dims,
        prepared.size_unit: prepared.sizes,
        "key_metric": task.key_metric,
        "gate": gate,
        "parent": None,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extras.run,
    }
    judged = _judged(metrics)
    shown = evaluator.outputs.get(judged)
    plots = {**(task.plots(trained.module, shown) if shown is not None else {}), **extras.plots}
    draw = partial(
        draw_plots,
        history=trained.fit.history,
        plots=plots,
        loss_label=task.loss_label(),
        split=judged,
        best=trained.fit.best_row,
    )
    contents = Contents(
        recipe_yaml=_artifact_recipe(recipe),
        module=trained.module,
        config={
            "task": task.name,
            "arch": recipe.model.arch,
            "dims": prepared.dims,
            "model": recipe.model.model_dump(mode="json"),  # a HF checkpoint's own config too
        },
        files={**task.state(), "metrics.json": metrics, **extras.files},
        history=trained.fit.history,
        run=run,
        plots=draw if recipe.evaluate.plots else None,
        card=lambda v: _card(task, trained, run, metrics, gate, v, shown, judged, extras.card),
    )
    return write_version(root, recipe.name, contents)


def _card(
    task: Task,
    trained: Trained,
    run: dict[str, Any],
    metrics: dict[str, dict[str, MetricValue]],
    gate: dict[str, Any] | None,
    version: int,
    outputs: Outputs | None,
    split: str,
    extra: list[str],
) -> str:
    recipe, fit = task.recipe, trained.fit
    length = f"{fit.epochs} epochs ({fit.steps} steps)" if fit.epochs else f"{fit.steps} steps"
    hw = run["hardware"]
    machine = hw["cpu"] if hw["device"] == "cpu" else hw.get("gpu", hw["device"])
    facts = [
        f"- task: {task.name}",
        f"- architecture: {recipe.model.arch} ({run['parameters']:,} parameters)",
        *task.card_lines(run),
        f"- trained {length} in {fit.train_seconds:,.1f} s ({run['precision']} on {machine}), "
        f"seed {recipe.train.seed}",
    ]
    if fit.stopped_early and fit.stop_reason:
        unit = "epoch" if fit.epochs else "step"
        best = fit.best_row or {}
        restored = f"; restored {unit} {int(best[unit])}" if unit in best else ""
        facts.append(
            f"- stopped early at {unit} {fit.epochs or fit.steps}: {fit.stop_reason}{restored}"
        )
    facts += [f"- note: {note}" for note in run.get("notes", [])]
    ref = f"{recipe.name}@{version}"
    sections = [*extra, *task.card_sections(trained.module, outputs, split)]
    return model_card(
        f"{recipe.name} (version {version})", facts, metrics, gate, sections, task.usage(ref)
    )


def _report(
    out: Console,
    task: Task,
    trained: Trained,
    metrics: dict[str, dict[str, MetricValue]],
    gate: GateResult | None,
    version: int,
    path: Path,
) -> None:
    print_metrics(metrics, out, title=f"{task.recipe.name}@{version}", labels=task.labels)
    if gate is not None:
        out.print(format_gate(gate))
    record = trained.record
    if "tokens_per_second" in record:
        speed = f"{record['tokens_per_second']:,.0f} tokens/s ({record['precision']})"
        if record.get("mfu") is not None:
            speed += f", MFU {record['mfu']:.1%} of {record['peak_flops'] / 1e12:.2f} TFLOP/s"
        out.print(speed)
    out.print(f"saved {path.resolve()}")
