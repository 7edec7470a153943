"""The ``compress`` verb: one method on a stored model, parent and child measured side by side,
the child stored as the parent's next version (its lineage names the parent).

The child is first written to a staging store and loaded back through ``Predictor.load``, so
what is measured is what a user will load; then it is written, with its report
(``compression.json``, the card), as a new version of the parent's name.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from tensorsmith.api.model import Model
from tensorsmith.compression import Child
from tensorsmith.compression.measure import Measured, measure, parameter_counts
from tensorsmith.compression.report import card_section, print_report, report_rows
from tensorsmith.errors import RecipeError
from tensorsmith.evaluation.report import model_card
from tensorsmith.finetune.start import folder_digest
from tensorsmith.models.formats import FORMATS
from tensorsmith.recipe import Recipe
from tensorsmith.store.artifact import Contents, check_writable, resolve, store_root, write_version
from tensorsmith.tasks.predictor import Predictor
from tensorsmith.training.hardware import hardware, library_versions

__all__ = ["Compression", "compress", "write_child"]


@dataclass
class Compression:
    """What to do: exactly one of quantize, prune, distill, onnx (and that method's options)."""

    quantize: str | None = None  # int8 | int8-weight | int4-weight
    prune: float | None = None  # the fraction of weights (or units) to remove
    structured: bool = False
    recover_epochs: int = 0
    distill: str | Path | None = None  # the student's recipe
    temperature: float = 4.0
    alpha: float = 0.9
    onnx: bool = False
    preprocessing: bool = True  # ONNX: the fitted preprocessing inside the graph

    def check(self) -> str:
        """The one method asked for; a usage error for none, several, or a stray option."""
        chosen = [
            name
            for name, given in (
                ("--quantize", self.quantize is not None),
                ("--prune", self.prune is not None),
                ("--distill", self.distill is not None),
                ("--onnx", self.onnx),
            )
            if given
        ]
        if self.prune is None and (self.structured or self.recover_epochs):
            raise RecipeError("--structured and --recover-epochs go with --prune FRACTION")
        if not self.onnx and not self.preprocessing:
            raise RecipeError("--no-preprocessing goes with --onnx")
        if self.recover_epochs < 0:
            raise RecipeError(f"--recover-epochs must be 0 or more, got {self.recover_epochs}")
        if len(chosen) != 1:
            what = "none" if not chosen else " and ".join(chosen)
            raise RecipeError(
                f"compress does one thing at a time; given {what}: pass one of --quantize "
                "int8|int8-weight|int4-weight, --prune FRACTION, --distill STUDENT.yaml, --onnx "
                "(compress the child again for a second step)"
            )
        return chosen[0].lstrip("-")


def compress(
    ref: str,
    how: Compression | None = None,
    store: str | Path | None = None,
    console: Console | None = None,
    budget: float = 1.0,
    **options: Any,
) -> Model:
    """Compress the stored model ``ref`` and store the child as its next version: ``how`` or
    the options of ``Compression`` (``quantize="int8"``, ``prune=0.5, structured=True`` …);
    ``budget``: seconds of timing per latency figure."""
    started = time.perf_counter()
    how = how or Compression(**options)
    method = how.check()
    root = store_root(store)
    check_writable(root)
    path = resolve(ref, root)
    parent = Predictor.load(path)  # a damaged version stops here, with what is wrong
    out = console or Console(highlight=False)
    child = _run_method(method, how, parent, out, root / ".cache")
    for note in child.notes:
        out.print(f"{parent.recipe.name}: {note}", markup=False)
    staged, counts = _stage(root, parent, child)
    try:
        before = measure(parent, budget=budget)
        after = measure(Predictor.load(staged), counts, budget=budget)
    finally:
        shutil.rmtree(staged.parent.parent, ignore_errors=True)
    machine = _machine()
    rows = report_rows(before, after)
    report = _report(parent, child, before, after, machine)
    card = card_section(rows, parent.name, child.method, machine)
    contents = _contents(parent, child, after, report, card, started)
    version, final = write_version(root, parent.recipe.name, contents)
    print_report(rows, parent.name, f"{parent.recipe.name}@{version}", machine, out)
    out.print(f"saved {final.resolve()}")
    return Model(Predictor.load(final))


def _run_method(
    method: str, how: Compression, parent: Predictor, out: Console, cache: Path
) -> Child:
    if method == "quantize":
        from tensorsmith.compression.quantize import quantize

        assert how.quantize is not None
        return quantize(parent, how.quantize)
    if method == "prune":
        from tensorsmith.compression.prune import prune, recover

        assert how.prune is not None
        child = prune(parent, how.prune, how.structured)
        return (
            recover(parent, child, how.recover_epochs, out, cache) if how.recover_epochs else child
        )
    if method == "distill":
        from tensorsmith.api.recipes import validate
        from tensorsmith.compression.distill import distill

        student = validate(how.distill)  # type: ignore[arg-type]
        return distill(parent, student, out, cache, how.temperature, how.alpha)
    from tensorsmith.compression.onnx_export import export_onnx

    return export_onnx(parent, how.preprocessing)


def write_child(root: Path, parent: Predictor, child: Child) -> Path:
    """``child`` written as the next version of ``parent``'s name in the store ``root``, without
    a report: loadable through ``Predictor.load`` (the verb measures it from here)."""
    _, path = write_version(root, parent.recipe.name, _contents(parent, child, None, {}, [], 0.0))
    return path


def _stage(root: Path, parent: Predictor, child: Child) -> tuple[Path, tuple[int, int] | None]:
    """The child written as a loadable version in a staging store (for measuring), and its
    (parameters, non-zero parameters) where its module does not hold them as parameters."""
    staging = root / ".cache" / f"compress-staging-{os.getpid()}-{id(child)}"
    path = write_child(staging, parent, child)
    # a quantized or exported model holds the parent's weights in another form: its counts
    counts = parameter_counts(parent.module) if child.format is not None else None
    return path, counts


def _machine() -> str:
    hw = hardware("cpu")
    return str(hw.get("cpu") or hw.get("device"))


def _report(
    parent: Predictor, child: Child, before: Measured, after: Measured, machine: str
) -> dict[str, Any]:
    return {
        "parent": f"{parent.recipe.name}@{parent.config.get('version')}",
        "method": child.method,
        "format": child.format or "safetensors-fp32",
        "machine": machine,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "parent_measured": before.to_dict(),
        "child_measured": after.to_dict(),
    }


def _contents(
    parent: Predictor,
    child: Child,
    measured: Measured | None,
    report: dict[str, Any],
    card: list[str],
    started: float,
) -> Contents:
    from tensorsmith.api.training import _artifact_recipe

    recipe: Recipe = child.recipe
    files: dict[str, Any] = dict(parent.task.state())
    if parent.data:
        files["data.json"] = parent.data
    if measured is not None:
        files["metrics.json"] = {measured.split: measured.metrics}
        files["compression.json"] = report
    run = _run_record(parent, child, started)
    fmt = child.format
    return Contents(
        recipe_yaml=_artifact_recipe(recipe),
        module=child.module,
        config={
            "task": parent.task.name,
            "arch": recipe.model.arch,
            "dims": child.dims,
            "model": recipe.model.model_dump(mode="json"),
            "compression": {"method": child.method, "format": fmt},
        },
        files=files,
        history=child.history,
        run=run,
        plots=None,
        card=lambda v: _card(parent, child, run, measured, card, v),
        save_weights=None if fmt is None else FORMATS.get(fmt).save,
    )


def _run_record(parent: Predictor, child: Child, started: float) -> dict[str, Any]:
    return {
        "name": parent.recipe.name,
        "task": parent.task.name,
        "arch": child.recipe.model.arch,
        "recipe_dir": str(parent.run.get("recipe_dir", parent.path)),
        "dims": child.dims,
        "key_metric": parent.run.get("key_metric", ""),
        "gate": None,
        "parent": {
            "kind": "store",
            "ref": parent.name,
            "name": parent.recipe.name,
            "version": int(parent.config.get("version", 0)),
            "path": str(parent.path.resolve()),
            "sha256": folder_digest(parent.path),
        },
        "compression": child.method,
        "hardware": hardware("cpu"),
        "versions": library_versions(),
        "wall_seconds": time.perf_counter() - started if started else 0.0,
        "finished_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "notes": child.notes,
        **child.run,
    }


def _card(
    parent: Predictor,
    child: Child,
    run: dict[str, Any],
    measured: Measured | None,
    section: list[str],
    version: int,
) -> str:
    name = parent.recipe.name
    facts = [
        f"- task: {parent.task.name}",
        f"- architecture: {child.recipe.model.arch}, compressed from {parent.name}",
        f"- weights format: {child.format or 'safetensors (fp32)'}",
        *(f"- note: {note}" for note in child.notes),
    ]
    metrics = {measured.split: measured.metrics} if measured is not None else {}
    usage = parent.task.usage(f"{name}@{version}")
    return model_card(f"{name} (version {version})", facts, metrics, None, section, usage)
