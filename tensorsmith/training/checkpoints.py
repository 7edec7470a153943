"""Training runs and their checkpoints: one folder per run, locked while the run is live.

```
<store>/.checkpoints/<name>/<run id>/
  meta.json       run id, start time, the resolved recipe, the data fingerprint
  checkpoint.pt   the trainer's whole state, written atomically (torch.save, weights only)
  run.lock        held (flock) by the live process; the OS lets go when the process dies
```

Two trainings of one name never share a checkpoint. ``--resume`` continues the newest run of
the name that is not live (or the one named by its id), refuses when the recipe's fixed keys
or the data changed, and says which run and step it continues from. A finished run deletes its
own folder and nothing else.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
import yaml

from tensorsmith.data.fingerprint import what_changed
from tensorsmith.errors import TrainingError, shorten
from tensorsmith.recipe import Recipe, recipe_to_yaml

__all__ = ["RUN_ID", "Run", "Runs", "check_resumable", "save_checkpoint"]

T = TypeVar("T")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
# keys a resumed run takes from the new recipe: they change how the run is watched, not what
# it computes; every other key is fixed by the checkpoint
APPLIED = ("train.threads", "train.checkpoint_every", "train.checkpoint_seconds", "train.log_every")


def save_checkpoint(payload: dict[str, Any], path: Path) -> None:
    """Write atomically: a killed process leaves the previous checkpoint intact, and a failed
    write (a full disk) leaves no temporary file behind."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise TrainingError(
            f"cannot write the checkpoint {path} ({shorten(reason, 120)}); free disk space "
            "(the store needs room for a checkpoint and a version), then resume with --resume"
        ) from None
    finally:
        tmp.unlink(missing_ok=True)


def _diff(old: Any, new: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    if old == new:
        return []
    return [(prefix, f"{prefix} ({shorten(repr(old), 40)} → {shorten(repr(new), 40)})")]


class Run:
    """One training run's folder, locked by this process while it lives."""

    def __init__(self, folder: Path, lock: IO[str]) -> None:
        self.folder = folder
        self.id = folder.name
        self._lock = lock

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint.pt"

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(state, self.checkpoint)

    def record_data(self, data: dict[str, Any]) -> None:
        """Add the fingerprint of the data the run reads to its meta.json."""
        path = self.folder / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["data"] = data
        path.write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def release(self) -> None:
        """Let go of the lock; the folder stays when it holds a checkpoint to resume."""
        if not self._lock.closed:
            self._lock.close()
        if not self.checkpoint.exists():
            self._remove()

    def finish(self) -> None:
        """The run is stored: nothing is left to resume."""
        if not self._lock.closed:
            self._lock.close()
        self._remove()

    def _remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)
        for parent in (self.folder.parent, self.folder.parent.parent):  # <name>, .checkpoints
            try:
                parent.rmdir()  # only when empty
            except OSError:
                break


def _lock(folder: Path) -> IO[str] | None:
    """The run's lock, or None when another live process holds it."""
    handle = open(folder / "run.lock", "a+", encoding="utf-8")  # noqa: SIM115 (held open)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class Runs:
    """The training runs of one model name in a store."""

    def __init__(self, root: Path, name: str) -> None:
        self.folder = root / ".checkpoints" / name
        self.name = name

    def start(self, recipe: Recipe) -> Run:
        """A new run: its id, its folder, its lock and its recipe."""
        while True:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
            folder = self.folder / f"{stamp}-{secrets.token_hex(2)}"
            try:
                folder.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        lock = _lock(folder)
        assert lock is not None  # a folder made a moment ago has no other holder
        meta = {
            "run_id": folder.name,
            "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "pid": os.getpid(),
            "recipe": recipe_to_yaml(recipe),
            "data": {},
        }
        (folder / "meta.json").write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return Run(folder, lock)

    def _interrupted(self) -> list[Path]:
        """Folders of runs with a checkpoint, newest checkpoint first."""
        if not self.folder.is_dir():
            return []
        found = [p for p in self.folder.iterdir() if (p / "checkpoint.pt").is_file()]
        return sorted(found, key=lambda p: (p / "checkpoint.pt").stat().st_mtime, reverse=True)

    def resume(
        self, run_id: str | None, accept: Callable[[dict[str, Any]], T]
    ) -> tuple[Run, dict[str, Any], T]:
        """(run, its checkpoint, what ``accept`` made of its meta) to continue.

        ``run_id`` names the run; otherwise the newest run that is not live and that ``accept``
        takes (it raises TrainingError for a run whose fixed keys or data differ) is chosen, so
        two interrupted runs of one name with different settings each resume with their own
        recipe.
        """
        candidates = self._candidates(run_id)
        refusals: list[str] = []
        for folder in candidates:
            lock = _lock(folder)
            if lock is None:
                if run_id is not None:
                    raise TrainingError(
                        f"run {run_id} of '{self.name}' is still training in another process; "
                        "wait for it, or stop it first"
                    )
                continue
            run = Run(folder, lock)
            try:
                accepted = accept(self._meta(run))
                return run, self._checkpoint(run), accepted
            except TrainingError as exc:
                run.release()
                if run_id is not None:
                    raise
                refusals.append(str(exc))
        if refusals:
            others = f" (interrupted runs: {', '.join(p.name for p in candidates)})"
            raise TrainingError(refusals[0] + others)
        raise TrainingError(
            f"nothing to resume for '{self.name}': no interrupted run with a checkpoint in "
            f"{self.folder}; run `tensorsmith train` without --resume to start"
        )

    def _candidates(self, run_id: str | None) -> list[Path]:
        candidates = self._interrupted()
        if run_id is None:
            return candidates
        chosen = [p for p in candidates if p.name == run_id]
        if not chosen:
            known = ", ".join(p.name for p in candidates) or "none"
            raise TrainingError(
                f"no interrupted run '{run_id}' of '{self.name}' in {self.folder}; runs with "
                f"a checkpoint: {known}"
            )
        return chosen

    def _checkpoint(self, run: Run) -> dict[str, Any]:
        try:
            state: dict[str, Any] = torch.load(
                run.checkpoint, map_location="cpu", weights_only=True
            )
        except Exception as exc:  # a truncated or damaged file: torch raises many types
            raise TrainingError(
                f"the checkpoint of run {run.id} ({run.checkpoint}) is damaged "
                f"({type(exc).__name__}: {shorten(str(exc), 100)}); delete {run.folder} and "
                "train without --resume"
            ) from None
        return state

    def _meta(self, run: Run) -> dict[str, Any]:
        try:
            meta: dict[str, Any] = json.loads((run.folder / "meta.json").read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise TrainingError(
                f"run {run.id} of '{self.name}' is damaged: its meta.json cannot be read "
                f"({shorten(str(exc), 80)}); delete {run.folder} and train without --resume"
            ) from None
        return meta


def check_resumable(
    meta: dict[str, Any], recipe: Recipe, files: list[Path]
) -> tuple[Recipe, list[str]]:
    """The recipe a resumed run continues with, and the changed keys it applies.

    Refuses (naming the keys or files) when a key the checkpoint fixes changed, or the data did.
    """
    then = yaml.safe_load(meta["recipe"])
    now = yaml.safe_load(recipe_to_yaml(recipe))
    changes = [
        d for key in ("data", "model", "train") for d in _diff(then.get(key), now.get(key), key)
    ]
    fixed = [text for path, text in changes if path not in APPLIED]
    run = meta.get("run_id", "?")
    if fixed:
        raise TrainingError(
            f"cannot resume run {run} of '{recipe.name}': its checkpoint fixes keys that the "
            f"recipe changed: {'; '.join(fixed)}; restore them, or train from scratch without "
            "--resume"
        )
    changed = what_changed(meta.get("data", {}), files)
    if changed:
        raise TrainingError(
            f"cannot resume run {run} of '{recipe.name}': the data changed since it started: "
            f"{'; '.join(changed)}; restore the data, or train from scratch without --resume"
        )
    return recipe, [text for path, text in changes if path in APPLIED]
