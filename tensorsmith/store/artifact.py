"""The model artifact (DESIGN.md §4) and the local store: versions, names, listing.

A version directory appears only when complete: it is written under a hidden name that also
reserves its number (``.3.partial-<pid>``, made with ``mkdir``, which is atomic) and renamed at
the end. Versions are never overwritten. Nothing here unpickles anything: JSON, YAML (safe
loader), CSV and safetensors only.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import re
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tensorsmith.errors import ModelNotFoundError, StoreError, did_you_mean
from tensorsmith.store.aliases import read_aliases
from tensorsmith.tasks.files import FORMAT, damaged, read_json_file

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "Contents",
    "check_writable",
    "list_models",
    "new_version",
    "read_json",
    "read_yaml",
    "resolve",
    "store_root",
    "write_history",
    "write_json",
    "write_version",
]

_VERSION = re.compile(r"^(\d+)$")
_PARTIAL = re.compile(r"^\.(\d+)\.partial-(\d+)$")


def store_root(store: str | Path | None = None) -> Path:
    """``--store DIR``, else ``$TENSORSMITH_STORE``, else ``./models``."""
    return Path(store or os.environ.get("TENSORSMITH_STORE") or "models")


def check_writable(root: Path) -> None:
    """Fail before training, not after, when the store cannot take a new version."""
    probe = root
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise StoreError(
            f"model store {root} cannot be created: {probe} is a file, not a "
            "directory; pass --store DIR or set TENSORSMITH_STORE"
        )
    try:
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".write-test-{os.getpid()}", "w") as f:
            f.write("ok")
        os.remove(root / f".write-test-{os.getpid()}")
    except OSError as exc:
        raise StoreError(
            f"model store {root} is not writable ({exc.strerror}); pass --store DIR "
            "or set TENSORSMITH_STORE to a writable directory"
        ) from None


def _versions(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if _VERSION.match(p.name) and p.is_dir())


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def new_version(root: Path, name: str) -> Iterator[tuple[int, Path]]:
    """Yield (version, temporary dir); on success the dir becomes ``root/name/version``."""
    check_writable(root)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    for p in folder.iterdir():  # partial versions of killed runs
        m = _PARTIAL.match(p.name)
        if m and not _pid_alive(int(m.group(2))):
            shutil.rmtree(p, ignore_errors=True)
    while True:
        taken = _versions(folder) + [
            int(m.group(1)) for p in folder.iterdir() if (m := _PARTIAL.match(p.name))
        ]
        version = max(taken, default=0) + 1
        tmp = folder / f".{version}.partial-{os.getpid()}"
        try:
            tmp.mkdir()
            break
        except FileExistsError:
            continue
    try:
        yield version, tmp
        final = folder / str(version)
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise StoreError(
            f"cannot write version {version} of '{name}' into {folder} ({exc.strerror or exc}); "
            "nothing was stored: free disk space or pass --store DIR, then train again"
        ) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: Path, data: Any) -> None:
    """Strict JSON: a NaN or infinite number (a metric undefined on one row) is written as null."""
    text = json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False)
    path.write_text(text + "\n", encoding="utf-8")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def write_history(path: Path, rows: list[dict[str, float]]) -> None:
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=keys)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (int(v) if k in ("epoch", "step") else v) for k, v in row.items()})


@dataclass
class Contents:
    """Everything one version holds, before it has a number."""

    recipe_yaml: str
    module: nn.Module
    config: dict[str, Any]  # task, arch, dims: what loading needs
    files: dict[str, Any]  # name → text or JSON-able (task state, metrics.json)
    history: list[dict[str, float]]
    run: dict[str, Any]
    plots: Callable[[Path], object] | None
    card: Callable[[int], str]
    # a compressed version's weights format: writes the weights, returns the file's name
    save_weights: Callable[[nn.Module, Path], str] | None = None


def write_version(root: Path, name: str, contents: Contents) -> tuple[int, Path]:
    """Write one complete version (atomically) and return (version, path)."""
    from safetensors.torch import save_model

    with new_version(root, name) as (version, tmp):
        (tmp / "recipe.yaml").write_text(contents.recipe_yaml, encoding="utf-8")
        if contents.save_weights is None:
            save_model(contents.module, str(tmp / "model.safetensors"))
            weights = "model.safetensors"
        else:
            weights = contents.save_weights(contents.module, tmp)
        for file, content in contents.files.items():
            if isinstance(content, str):
                (tmp / file).write_text(content, encoding="utf-8")
            else:
                write_json(tmp / file, content)
        write_history(tmp / "history.csv", contents.history)
        if contents.plots is not None:
            (tmp / "plots").mkdir()
            contents.plots(tmp / "plots")
        contents.run["version"] = version
        write_json(tmp / "run.json", contents.run)
        (tmp / "card.md").write_text(contents.card(version), encoding="utf-8")
        held = sorted(str(p.relative_to(tmp)) for p in tmp.rglob("*") if p.is_file())
        config = {
            "format": FORMAT,
            "name": name,
            "version": version,
            **contents.config,
            "weights": weights,
            "files": [*held, "config.json"],
        }
        write_json(tmp / "config.json", config)
    return version, root / name / str(version)


def resolve(ref: str, root: Path) -> Path:
    """``NAME`` (latest), ``NAME@N``, ``NAME@alias``, or the path of a version directory."""
    as_path = Path(ref)
    if (as_path / "config.json").is_file() or (as_path / "model.safetensors").is_file():
        return as_path
    name, _, version = ref.partition("@")
    names = (
        sorted(p.name for p in root.iterdir() if p.is_dir() and _versions(p))
        if root.is_dir()
        else []
    )
    versions = _versions(root / name)
    if not versions:
        listing = ", ".join(names) if names else "none yet; train one with `tensorsmith train`"
        raise ModelNotFoundError(
            f"no model '{name}' in store {root}{did_you_mean(name, names)} models: {listing}"
        )
    if not version:
        return root / name / str(versions[-1])
    if not version.isdigit():
        aliases = read_aliases(root / name)
        if version not in aliases:
            known = ", ".join(f"{a} → {v}" for a, v in sorted(aliases.items())) or "none"
            numbers = ", ".join(map(str, versions))
            raise ModelNotFoundError(
                f"model '{name}' has no version or alias '{version}' in store {root}"
                f"{did_you_mean(version, aliases) or ';'} versions: {numbers}; aliases: {known}"
            )
        version = str(aliases[version])
    if int(version) not in versions:
        raise ModelNotFoundError(
            f"model '{name}' has no version '{version}' in store {root}; versions: "
            f"{', '.join(map(str, versions))}"
        )
    return root / name / version


def _version_row(name: str, version: int, path: Path) -> dict[str, Any]:
    """What ``tensorsmith models`` shows of one version; a damaged one is marked, not hidden."""
    row: dict[str, Any] = {"name": name, "version": version, "path": str(path), "status": "ok"}
    row.update(task="", arch="", metric="", gate="", date="", aliases="")
    try:
        config = read_json_file(path / "config.json")
        run = read_json_file(path / "run.json")
        metrics = read_json_file(path / "metrics.json")
        for needed in ("recipe.yaml", str(config.get("weights", "model.safetensors"))):
            if not (path / needed).is_file():
                raise damaged(path / needed, "is missing")
    except (StoreError, AttributeError) as exc:
        row["status"] = "damaged: " + str(exc).split(": ", 1)[-1].split(";")[0]
        return row
    key = run.get("key_metric", "")
    split = "test" if metrics.get("test") else "valid"
    value = metrics.get(split, {}).get(key)
    gate = run.get("gate")
    row.update(
        task=config.get("task", ""),
        arch=config.get("arch", ""),
        metric=f"{split} {key} {value:.4g}" if isinstance(value, float) else "",
        gate="" if not gate else ("passed" if gate.get("passed") else "failed"),
        date=str(run.get("finished_at", ""))[:16].replace("T", " "),
    )
    return row


def list_models(root: Path, name: str | None = None) -> list[dict[str, Any]]:
    """One row per stored version: name, version, task, arch, key metric, gate, date, status."""
    if not root.is_dir():
        return []
    rows = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if name is not None and folder.name != name:
            continue
        aliases = read_aliases(folder)
        for version in _versions(folder):
            row = _version_row(folder.name, version, folder / str(version))
            row["aliases"] = ", ".join(a for a, v in sorted(aliases.items()) if v == version)
            rows.append(row)
    return rows
