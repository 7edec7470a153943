"""``--nproc-per-node N``: start N ranks of one command through torchrun's own launcher.

The launcher is ``torch.distributed.run`` (what the ``torchrun`` command runs) with its elastic
agent: it starts ``python -m tensorsmith <verb> …`` N times with ``RANK`` / ``WORLD_SIZE`` set,
watches them, tears every rank down when one dies (restarting them ``--max-restarts`` times),
and reports which rank failed and why. A rank records its error for the agent
(:func:`record_failure`), so the report says what went wrong, not only an exit code.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from tensorsmith.errors import RecipeError, TrainingError, TrainingInterrupted, shorten

__all__ = ["RESULT", "check_port", "check_world", "launch", "record_failure"]

RESULT = "TENSORSMITH_RESULT"  # rank 0 writes the stored version's folder here


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def check_world(nproc: int) -> None:
    """One process per GPU, or per CPU core where there is no GPU."""
    if nproc < 1:
        raise RecipeError(f"--nproc-per-node must be 1 or more, got {nproc}")
    if torch.cuda.is_available():
        gpus = torch.cuda.device_count()
        if nproc > gpus:
            raise RecipeError(
                f"--nproc-per-node {nproc} is more than this machine's {gpus} GPUs; each "
                f"process trains on one: use at most {gpus}"
            )
        return
    cores = _cores()
    if nproc > cores:
        raise RecipeError(
            f"--nproc-per-node {nproc} is more than the {cores} CPU cores this process may use; "
            f"each process needs a core of its own: use at most {cores}"
        )


def check_port(port: int) -> None:
    """The rendezvous port must be free on this machine."""
    if not 0 < port < 65536:
        raise RecipeError(f"--master-port must be between 1 and 65535, got {port}")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            raise RecipeError(
                f"port {port} is already in use on this machine (another distributed run?); "
                "choose a free one with --master-port, or leave it out to pick one"
            ) from None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def launch(
    argv: Sequence[str],
    nproc: int,
    max_restarts: int = 0,
    port: int | None = None,
    result: Path | None = None,
) -> None:
    """Run ``python -m tensorsmith *argv`` as ``nproc`` ranks on this machine; wait for them."""
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    if port is not None:  # the caller checked the number of ranks (check_world)
        check_port(port)
    if max_restarts < 0:
        raise RecipeError(f"--max-restarts must be 0 or more, got {max_restarts}")
    threads = max(1, _cores() // nproc) if not torch.cuda.is_available() else 1
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))  # torchrun would warn and say 1
    if result is not None:
        os.environ[RESULT] = str(result)
    args = get_args_parser().parse_args(
        [
            "--nnodes=1",
            f"--nproc-per-node={nproc}",
            f"--max-restarts={max_restarts}",
            # c10d rendezvous (the agent hosts the store): a restart starts a fresh round
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port or _free_port()}",
            f"--rdzv-id=tensorsmith-{os.getpid()}",
            "--module",
            "tensorsmith",
            *argv,
        ]
    )
    try:
        run(args)
    except ChildFailedError as exc:
        raise TrainingError(_failure(exc, nproc)) from None
    except SignalException as exc:  # Ctrl-C or SIGTERM: the agent passed it to every rank
        raise TrainingInterrupted(
            f"interrupted ({signal.Signals(exc.sigval).name}): the ranks saved a checkpoint at "
            f"the step they agreed on; `tensorsmith {argv[0]} RECIPE --nproc-per-node {nproc} "
            "--resume` continues from it"
        ) from None
    finally:
        os.environ.pop(RESULT, None)


def _failure(exc: object, nproc: int) -> str:
    """Which rank failed first, and why: its recorded error, or the signal that killed it."""
    failures = getattr(exc, "failures", {})
    if not failures:
        return f"the distributed run failed ({shorten(str(exc), 200)})"
    rank = min(failures, key=lambda r: (_consequence(failures[r]), failures[r].timestamp, r))
    failure = failures[rank]
    cause = f"exit code {failure.exitcode}"
    if failure.exitcode < 0:
        with contextlib.suppress(ValueError):
            cause = f"killed by {signal.Signals(-failure.exitcode).name}"
    message = _message(failure)
    if message and not message.startswith(("To enable traceback", "Signal ")):
        cause += f": {shorten(re.sub(r'^[A-Za-z]+Error: ', '', message), 300)}"
    others = f"; the agent stopped the other {nproc - 1} ranks" if nproc > 1 else ""
    return f"rank {rank} (pid {failure.pid}) failed, {cause}{others}"


def _message(failure: Any) -> str:
    """What a rank recorded (torchelastic keeps the error file's message, a dict or a str)."""
    message = failure.message
    if isinstance(message, dict):
        message = message.get("message", "")
    return str(message or "")


def _consequence(failure: Any) -> bool:
    """A rank the agent stopped (SIGTERM), or one that lost its peer: not the first cause."""
    message = _message(failure)
    lost = any(s in message for s in ("Connection reset", "Connection closed", "Broken pipe"))
    return failure.exitcode == -signal.SIGTERM or lost


def record_failure(exc: BaseException) -> None:
    """In a rank started by torchrun: leave this error for the agent's report."""
    if not os.environ.get("TORCHELASTIC_ERROR_FILE"):
        return
    from torch.distributed.elastic.multiprocessing.errors import get_error_handler

    with contextlib.suppress(Exception):
        get_error_handler().record_exception(exc)
