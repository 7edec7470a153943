"""The hardware table (``hardware.yaml``, kept as data) and this machine's own entry."""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

from tensorsmith.errors import RecipeError, did_you_mean

__all__ = ["Device", "device", "device_names", "local_memory_bytes"]

TABLE = Path(__file__).with_name("hardware.yaml")


@dataclass(frozen=True)
class Device:
    name: str
    description: str
    peak: dict[str, float | None]  # precision → dense FLOP/s
    memory_bytes: float
    bandwidth: float  # bytes/s
    source: str  # a data sheet, or "measured on this machine"

    def peak_for(self, precision: str) -> float:
        """The peak in ``precision``, or a clear error when the device has none."""
        value = self.peak.get(precision)
        if not value:
            raise RecipeError(
                f"{self.name} ({self.description}) has no {precision} peak in the hardware table;"
                " plan with --set train.precision=fp32"
            )
        return float(value)


@cache
def _table() -> dict[str, dict[str, object]]:
    loaded = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def device_names() -> list[str]:
    return list(_table())


def device(name: str) -> Device:
    """A device of the table by name (``local`` is built from measurements: see api.plan)."""
    entry = _table().get(name)
    if entry is None or name == "local":
        hint = did_you_mean(name, device_names())
        raise RecipeError(
            f"unknown hardware {name!r}{hint}; the hardware table has: "
            f"{', '.join(device_names())} (`tensorsmith plan --hardware list` shows them)"
        )
    return Device(
        name,
        str(entry["description"]),
        {"fp32": _float(entry.get("fp32")), "bf16": _float(entry.get("bf16"))},
        float(str(entry["memory_gb"])) * 1e9,
        float(str(entry["bandwidth_gbs"])) * 1e9,
        str(entry["source"]),
    )


def _float(value: object) -> float | None:
    return None if value is None else float(str(value))


def local_memory_bytes() -> float:
    """This machine's memory: its cgroup's limit when one is set, else the physical memory."""
    limit = Path("/sys/fs/cgroup/memory.max")
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        text = limit.read_text().strip()
    except OSError:
        return float(physical)
    return float(min(int(text), physical)) if text.isdigit() else float(physical)
