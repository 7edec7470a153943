"""Training runs and their checkpoints: one folder per run, locked while the run is live.

```
<store>/.checkpoints/<name>/<run id>/
  meta.json          run id, start time, the resolved recipe, the data fingerprint
  checkpoint/        the model and optimizer by parameter name (torch.distributed.checkpoint:
                     every rank writes its shards, so a run resumes with another number of
                     processes), and beside them
    trainer.pt       rank 0's trainer state (schedules, RNG, history, callbacks; weights only)
    tensorsmith.json step, epoch, world size, strategy (and a fine-tune's round)
  run.lock           held (flock) by the live process (rank 0); the OS lets go when it dies
```

A checkpoint is written into ``checkpoint.tmp/`` and swapped in whole: a killed process leaves
the previous one intact. Two trainings of one name never share a checkpoint. ``--resume``
continues the newest run of the name that is not live (or the one named by its id), refuses
when the recipe's fixed keys or the data changed, and says which run and step it continues from.
A finished run deletes its own folder and nothing else.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import secrets
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TypeVar

import torch
import yaml

from tensorsmith.data.fingerprint import what_changed
from tensorsmith.errors import TrainingError, shorten
from tensorsmith.recipe import Recipe, recipe_to_yaml
from tensorsmith.training.distributed import World

__all__ = ["RUN_ID", "Run", "Runs", "check_resumable", "save_checkpoint"]

T = TypeVar("T")
RUN_ID = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{4}$")
# keys a resumed run takes from the new recipe: they change how the run is watched, not what
# it computes; every other key is fixed by the checkpoint
EXTRA = "trainer.pt"  # the trainer's state but the model and optimizer: rank 0's, plain tensors
INFO = "tensorsmith.json"  # step, epoch, world size and strategy, inside the checkpoint folder
APPLIED = ("train.threads", "train.checkpoint_every", "train.checkpoint_seconds", "train.log_every")


def save_checkpoint(
    tensors: dict[str, Any], extra: dict[str, Any], folder: Path, info: dict[str, Any], main: bool
) -> None:
    """Write ``tensors`` with ``torch.distributed.checkpoint`` (a collective: every rank calls
    it), rank 0's ``extra`` (torch.save, loaded back weights only) and ``info`` beside them,
    then swap the folder in whole. A failed write (a full disk) leaves the previous one."""
    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.api import CheckpointException

    many = dist.is_initialized() and dist.get_world_size() > 1
    tmp, old = folder.with_name("checkpoint.tmp"), folder.with_name("checkpoint.old")
    try:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        if many:
            dist.barrier()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "assuming ... a single process": it is one
            dcp.save(tensors, checkpoint_id=tmp)
        if many:
            dist.barrier()
        if main:
            torch.save(extra, tmp / EXTRA)
            (tmp / INFO).write_text(json.dumps(info), encoding="utf-8")
            if folder.exists():
                os.replace(folder, old)
            os.replace(tmp, folder)
            shutil.rmtree(old, ignore_errors=True)
    except (OSError, RuntimeError, CheckpointException) as exc:
        if main:
            shutil.rmtree(tmp, ignore_errors=True)
        raise TrainingError(
            f"cannot write the checkpoint {folder} ({shorten(_reason(exc), 120)}); free disk space "
            "(the store needs room for a checkpoint and a version), then resume with --resume"
        ) from None


def _reason(exc: BaseException) -> str:
    """An error's cause in one line (DCP's exceptions carry each rank's traceback)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    lines = str(exc).strip().splitlines()
    return lines[-1] if lines else type(exc).__name__


def _complete(run: Path) -> Path | None:
    """The run's last whole checkpoint folder (a kill during the swap leaves the old one)."""
    for name in ("checkpoint", "checkpoint.old"):
        if (run / name / INFO).is_file():
            return run / name
    return None


def _diff(old: Any, new: Any, prefix: str) -> list[tuple[str, str]]:
    if isinstance(old, dict) and isinstance(new, dict):
        keys = sorted(set(old) | set(new))
        return [d for k in keys for d in _diff(old.get(k), new.get(k), f"{prefix}.{k}")]
    if old == new:
        return []
    return [(prefix, f"{prefix} ({shorten(repr(old), 40)} → {shorten(repr(new), 40)})")]


class Run:
    """One training run's folder, locked by this process while it lives."""

    def __init__(self, folder: Path, lock: IO[str] | None, info: dict[str, Any] | None = None):
        self.folder = folder
        self.id = folder.name
        self._lock = lock  # None: a rank other than 0, which shares rank 0's run
        self.info = dict(info or {})  # world size and strategy, written with each checkpoint
        self.world = World()  # this process's place in the run (set by the caller)

    @property
    def main(self) -> bool:
        return self._lock is not None

    @property
    def checkpoint(self) -> Path:
        return self.folder / "checkpoint"

    def saved(self) -> dict[str, Any] | None:
        """The info of the run's last checkpoint, or None when it has none."""
        folder = _complete(self.folder)
        if folder is None:
            return None
        return dict(json.loads((folder / INFO).read_text(encoding="utf-8")))

    def save(self, state: dict[str, Any]) -> None:
        """``state["extra"]`` (rank 0's) is written beside the sharded part, as plain tensors."""
        tensors = {k: v for k, v in state.items() if k != "extra"}
        extra = state.get("extra") or {}
        info = {"step": extra.get("step"), "epoch": extra.get("epoch"), **self.info}
        save_checkpoint(tensors, extra, self.checkpoint, info, self.main)

    def load(self, template: dict[str, Any]) -> dict[str, Any]:
        """Fill ``template`` (the live trainer's state) from the last checkpoint."""
        import torch.distributed.checkpoint as dcp

        folder = _complete(self.folder)
        try:
            if folder is None:
                raise FileNotFoundError(f"no checkpoint in {self.folder}")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "assuming ... a single process": it is one
                dcp.load(template, checkpoint_id=folder)
            extra = torch.load(folder / EXTRA, map_location="cpu", weights_only=True)
        except BaseException as exc:  # a damaged folder: DCP raises many types
            if isinstance(exc, KeyboardInterrupt | SystemExit):
                raise
            raise TrainingError(
                f"the checkpoint of run {self.id} ({self.checkpoint}) is damaged "
                f"({type(exc).__name__}: {shorten(_reason(exc), 100)}); delete {self.folder} and "
                "train without --resume"
            ) from None
        return {**template, "extra": extra}

    def forget_checkpoint(self) -> None:
        """A fine-tune's round is done: the next round's trainer starts afresh."""
        if self.main:
            for name in ("checkpoint", "checkpoint.old", "checkpoint.tmp"):
                shutil.rmtree(self.folder / name, ignore_errors=True)

    def record_data(self, data: dict[str, Any]) -> None:
        """Add the fingerprint of the data the run reads to its meta.json."""
        if not self.main:
            return
        path = self.folder / "meta.json"
        meta = json.loads(path.read_text(encoding="utf-8"))
        meta["data"] = data
        path.write_text(json.dumps(meta, indent=2), encoding="utf-8")

    def release(self) -> None:
        """Let go of the lock; the folder stays when it holds a checkpoint to resume."""
        if self._lock is None:
            return
        if not self._lock.closed:
            self._lock.close()
        if _complete(self.folder) is None:
            self._remove()

    def finish(self) -> None:
        """The run is stored: nothing is left to resume."""
        if self._lock is None:
            return
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

    def join(self, run_id: str) -> Run:
        """Rank 0's run, for another rank: same folder, no lock (rank 0 holds it)."""
        return Run(self.folder / run_id, None)

    def _interrupted(self) -> list[Path]:
        """Folders of runs with a checkpoint, newest checkpoint first."""
        if not self.folder.is_dir():
            return []
        found = [(folder, p) for p in self.folder.iterdir() if (folder := _complete(p))]
        found.sort(key=lambda fp: (fp[0] / INFO).stat().st_mtime, reverse=True)
        return [p for _, p in found]

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
                return run, run.saved() or {}, accepted
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
