"""``models``: the store's versions, without importing torch (the command answers at once)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from tensorsmith.errors import StoreError
from tensorsmith.store.aliases import lineage as chain
from tensorsmith.store.aliases import set_alias
from tensorsmith.store.artifact import list_models, resolve, store_root
from tensorsmith.tasks.files import read_json_file


def models(name: str | None = None, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The stored versions, newest last."""
    return list_models(store_root(store), name)


def promote(ref: str, alias: str = "production", store: str | Path | None = None) -> dict[str, Any]:
    """Point ``alias`` of a model at the version ``ref`` names; returns the model's aliases."""
    path = resolve(ref, store_root(store))
    config = read_json_file(path / "config.json")  # a damaged version is not promoted
    run = read_json_file(path / "run.json")
    gate = run.get("gate") if isinstance(run, dict) else None
    if not isinstance(config, dict) or "version" not in config:
        raise StoreError(f"{path} is not a version folder of the store; promote NAME@N")
    return {
        "name": config["name"],
        "version": int(config["version"]),
        "aliases": set_alias(path.parent, alias, int(config["version"])),
        "gate": gate,
    }


def lineage(ref: str, store: str | Path | None = None) -> list[dict[str, Any]]:
    """The version ``ref`` names, then its parent, its parent's parent … down to the start."""
    return chain(resolve(ref, store_root(store)))


def lineage_lines(ref: str, store: str | Path | None = None) -> list[str]:
    """``models NAME --lineage`` as lines: the version, then each parent indented below it."""
    lines = []
    for depth, link in enumerate(lineage(ref, store)):
        note = " (gone)" if link.get("missing") else ""
        kind = f"  [{link['kind']}]" if link.get("kind") not in (None, "store") else ""
        prefix = "  " * (depth - 1) + "└─ " if depth else ""
        lines.append(f"{prefix}{link['ref']}{note}{kind}")
    return lines


def models_table(rows: list[dict[str, Any]]) -> Table:
    """What ``tensorsmith models`` prints: one row per version; aliases and status only when
    a version has them."""
    columns = ["name", "version", "task", "arch", "metric", "gate", "date"]
    if any(row["aliases"] for row in rows):
        columns.append("aliases")
    if any(row["status"] != "ok" for row in rows):
        columns.append("status")
    table = Table()
    widest = max(len(str(row["name"])) for row in rows)
    for col in columns:
        if col == "name":  # a name is never cut: the other columns wrap instead
            table.add_column(col, no_wrap=True, min_width=widest)
        else:
            table.add_column(col, justify="right" if col == "version" else "left")
    for row in rows:
        table.add_row(*(str(row[c]) for c in columns))
    return table
