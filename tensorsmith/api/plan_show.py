"""What ``tensorsmith plan`` shows: a plan, a sweep, a comparison or the hardware table, as
tables for a person or as JSON for a program."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from tensorsmith.api.plan_compare import compare
from tensorsmith.api.planning import Sizes, hardware_table, plan, sweep
from tensorsmith.errors import RecipeError
from tensorsmith.planning.report import (
    print_comparison,
    print_hardware,
    print_plan,
    print_sweep,
    sweep_plot,
)

__all__ = ["PlanRequest", "show_plan"]


@dataclass
class PlanRequest:
    recipe: Path | None = None
    hardware: str = "local"
    devices: int = 1
    price: float | None = None
    mfu: float | None = None
    overrides: list[str] = field(default_factory=list)
    sizes: Sizes = field(default_factory=Sizes)
    sweep: str | None = None  # KEY=V1,V2,…
    compare: str | None = None  # a stored model
    plot: Path = Path("plan-sweep.png")
    as_json: bool = False
    store: Path | None = None


def show_plan(r: PlanRequest, console: Console) -> None:
    if r.hardware == "list":
        devices = hardware_table(r.store)
        if r.as_json:
            console.print_json(json.dumps([d.__dict__ for d in devices]))
        else:
            print_hardware(devices, console)
        return
    if r.compare is not None:
        name, rows, notes = compare(r.compare, r.store)
        if r.as_json:
            keys = ("quantity", "unit", "estimated", "measured")
            shown = [dict(zip(keys, row, strict=True)) for row in rows]
            console.print_json(json.dumps({"model": name, "rows": shown, "notes": notes}))
        else:
            print_comparison(name, rows, notes, console)
        return
    if r.recipe is None:
        raise RecipeError("plan needs a RECIPE (or --compare MODEL, or --hardware list)")
    if r.sweep is not None:
        _show_sweep(r, console)
        return
    made = plan(r.recipe, r.hardware, r.devices, r.price, r.mfu, r.overrides, r.sizes, r.store)
    if r.as_json:
        console.print_json(json.dumps(made.to_dict()))
    else:
        print_plan(made, console)


def _show_sweep(r: PlanRequest, console: Console) -> None:
    key, _, listed = (r.sweep or "").partition("=")
    values = [v.strip() for v in listed.split(",") if v.strip()]
    plans = sweep(
        r.recipe or Path(), key.strip(), values, r.hardware, r.devices, r.price, r.mfu,
        r.overrides, r.sizes, r.store,
    )  # fmt: skip
    if r.as_json:
        console.print_json(json.dumps([p.to_dict() for p in plans]))
        return
    print_sweep(plans, key, values, console)
    console.print(f"plot: {sweep_plot(plans, key, values, r.plot)}")
