"""The ``finetune`` verb: a recipe, a starting point, rounds until the gate holds, lineage and
promotion. Training, evaluation and the store are the ``train`` verb's own (``run_recipe``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from tensorsmith.api.distributed import Launch, run_ranks
from tensorsmith.errors import RecipeError
from tensorsmith.evaluation.evaluate import Evaluator
from tensorsmith.evaluation.gate import GateResult, parse_gate
from tensorsmith.finetune.rounds import run_rounds
from tensorsmith.finetune.start import Start, open_start
from tensorsmith.recipe import FinetuneSpec, Recipe, load_yaml, parse_recipe
from tensorsmith.recipe.parse import apply_overrides
from tensorsmith.store.aliases import set_alias
from tensorsmith.store.artifact import store_root
from tensorsmith.tasks import TASKS, Prepared, Task
from tensorsmith.training.checkpoints import Run
from tensorsmith.training.run import Trained

if TYPE_CHECKING:
    from tensorsmith.api.model import Model

__all__ = ["Extras", "fine_tune", "finetune", "finetune_recipe", "promote_passed"]


@dataclass
class Extras:
    """What a run adds to its version beyond the common files: a fine-tune's lineage, rounds."""

    files: dict[str, Any] = field(default_factory=dict)
    run: dict[str, Any] = field(default_factory=dict)
    plots: dict[str, dict[str, Any]] = field(default_factory=dict)
    valid_passed: bool | None = None  # a fine-tune: whether a round passed the gate on valid
    card: list[str] = field(default_factory=list)  # sections of the model card


def fine_tune(
    task: Task,
    prepared: Prepared,
    start: Start,
    evaluator: Evaluator,
    out: Console,
    root: Path,
    run: Run,
    state: dict[str, Any] | None,
    mode: str | None,
    extras: Extras,
) -> Trained:
    """Rounds until the gate holds on valid; the version records each round and its parent."""
    conditions = parse_gate(task.recipe.evaluate.gate, task.metric_names, task.name)
    rounds = run_rounds(
        task, prepared, start, evaluator, conditions, out, root / ".cache", run, state, mode
    )
    if rounds.fresh:
        shown = ", ".join(rounds.fresh[:8]) + (" …" if len(rounds.fresh) > 8 else "")
        out.print(f"{task.recipe.name}: started fresh (not in the parent): {shown}", markup=False)
    keys = list(dict.fromkeys(k for r in rounds.records for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rounds.records]
    extras.files["rounds.csv"] = "\n".join(lines) + "\n"
    extras.run.update(
        parent=start.parent,
        rounds=rounds.records,
        fresh=rounds.fresh,
        strategy=_spec(task).strategy,
    )
    extras.valid_passed = rounds.passed if conditions else None
    extras.card += _card_rounds(start, rounds.records, conditions, _spec(task).strategy)
    if conditions:
        c = conditions[0]
        values = [r.get(f"valid_{c.metric}", float("nan")) for r in rounds.records]
        extras.plots["rounds"] = {
            "values": values,
            "metric": c.metric,
            "op": c.op,
            "threshold": c.threshold,
        }
    return rounds.trained


def _card_rounds(
    start: Start, records: list[dict[str, Any]], conditions: list[Any], strategy: str
) -> list[str]:
    """The card's fine-tuning section: the parent, and each round's verdict on valid."""
    parent = start.parent
    where = f"{parent['name']}@{parent['version']}" if "version" in parent else parent.get("path")
    lines = ["## Fine-tuning", "", f"From {where}, strategy {strategy}.", ""]
    metrics = [c.metric for c in conditions]
    header = ["round", "lr", "epochs", "steps", *(f"valid {m}" for m in metrics)]
    header += ["gate"] if metrics else []
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in records:
        cells = [str(r["round"]), f"{r['lr']:.3g}", str(r["epochs"]), str(r["steps"])]
        cells += [f"{r.get(f'valid_{m}', float('nan')):.4g}" for m in metrics]
        cells += [("held" if r["gate_passed"] else "did not hold")] if metrics else []
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _spec(task: Task) -> FinetuneSpec:
    assert task.recipe.finetune is not None
    return task.recipe.finetune


def promote_passed(
    root: Path, task: Task, gate: GateResult | None, version: int, out: Console
) -> None:
    """``finetune.promote``: a version whose gate held (valid and test) gets the alias."""
    spec = task.recipe.finetune
    if spec is None or not spec.promote or gate is None or not gate.passed:
        return
    set_alias(root / task.recipe.name, spec.alias, version)
    out.print(f"promoted {task.recipe.name}@{version} to {task.recipe.name}@{spec.alias}")


def finetune(
    recipe: str | Path | dict[str, Any],
    source: str | None = None,
    overrides: list[str] | None = None,
    store: str | Path | None = None,
    resume: bool | str = False,
    console: Console | None = None,
    ranks: Launch | int | None = None,
) -> Model:
    """Fine-tune from ``source`` (or ``finetune.from``) in rounds until the gate holds;
    ``ranks``: as that many processes (torchrun's launcher)."""
    from tensorsmith.api.training import run_recipe

    parsed, start = finetune_recipe(recipe, source, overrides, store)
    if ranks is not None:
        return run_ranks("finetune", recipe, parsed, overrides, store, resume, ranks, source)
    return run_recipe(parsed, store, resume, console, start)


def finetune_recipe(
    recipe: str | Path | dict[str, Any],
    source: str | None = None,
    overrides: list[str] | None = None,
    store: str | Path | None = None,
    base_dir: Path | None = None,
) -> tuple[Recipe, Start]:
    """A fine-tune's checked recipe (the parent's model keys under its own) and its start;
    ``base_dir``: where a recipe given as a mapping has its relative paths."""
    from tensorsmith.api.recipes import check_recipe, check_sources

    raw, base, name = _raw(recipe)
    base = base_dir or base
    raw = apply_overrides(raw, overrides)
    section = raw.setdefault("finetune", {}) or {}
    raw["finetune"] = section
    if source is not None:
        section["from"] = source
    elif section.get("from") and (base / str(section["from"])).exists():
        section["from"] = str((base / str(section["from"])).resolve())  # relative to the recipe
    if not section.get("from"):
        raise RecipeError(
            "a fine-tune needs a starting point: --from MODEL (NAME, NAME@N, NAME@alias, a "
            "version folder or a Hugging Face checkpoint folder) or finetune.from in the recipe"
        )
    start = open_start(str(section["from"]), store_root(store), str(raw.get("task")))
    model = raw.get("model") or {}
    if isinstance(model, dict) and model.get("arch", start.model.get("arch")) == start.model.get(
        "arch"
    ):  # the parent's architecture, with the keys the recipe changes (dropout …)
        raw["model"] = {**start.model, **model}
    parsed = parse_recipe(raw, base_dir=base, source=name)
    check_recipe(parsed)
    check_sources(parsed)
    if start.task is None and start.checkpoint is not None:  # its tokenizer, for the child
        start.task = TASKS.get(parsed.task).from_checkpoint(parsed, start.checkpoint)
    return parsed, start


def _raw(recipe: str | Path | dict[str, Any]) -> tuple[dict[str, Any], Path, str]:
    if isinstance(recipe, dict):
        return dict(recipe), Path("."), "(recipe)"
    path = Path(recipe)
    if not path.is_file():
        raise RecipeError(f"recipe file {path} does not exist; pass the path of a YAML recipe")
    raw = load_yaml(path.read_text(encoding="utf-8"), str(path))
    if not isinstance(raw, dict):
        raise RecipeError(f"recipe {path} must be a mapping of keys")
    return raw, path.parent, str(path)
