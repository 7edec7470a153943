"""Shared fixtures: a temporary model store, the CLI (in process, or as a real subprocess), the
examples.

Every test writes into ``tmp_path`` (or a session temp dir), never into the repository.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tempfile
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TABULAR_TASKS = ("regression", "classification")

CliResult = tuple[int, str, str]

# The test processes and the CLI processes they start compute on one torch thread: the
# ``-n auto`` workers already keep every core busy, and a second thread per process only spins
# waiting for a core (tiny kernels run many times slower). Tests about thread counts set theirs.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def cli_env(store: str | Path | None, env: dict[str, str] | None) -> dict[str, str | None]:
    """The environment changes of a CLI run (None: unset); ``store`` is ``TENSORSMITH_STORE``."""
    changes: dict[str, str | None] = {
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "TERM": "dumb",
        "TENSORSMITH_DEBUG": None,
    }
    if store is not None:
        changes["TENSORSMITH_STORE"] = str(store)
    changes.update(env or {})
    return changes


def cli_cwd(store: str | Path | None, cwd: str | Path | None) -> Path:
    """The working directory: never the repository (a stray ./models store must not land
    there); by default the folder of ``store``, or a fresh folder."""
    if cwd is not None:
        return Path(cwd)
    return Path(store).parent if store is not None else Path(tempfile.mkdtemp(prefix="ts-cli-"))


def run_cli_process(
    *args: str | Path,
    store: str | Path | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> CliResult:
    """Run ``python -m tensorsmith.cli ARGS`` in a subprocess; return (returncode, stdout, stderr).

    For the tests whose point is a real process (imports, signals, exit); the others use the
    cheaper in-process :func:`run_cli`.
    """
    full_env = dict(os.environ)
    _set_environ(cli_env(store, env), full_env)
    proc = subprocess.run(
        [sys.executable, "-m", "tensorsmith.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cli_cwd(store, cwd),
        env=full_env,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def run_cli(
    *args: str | Path,
    store: str | Path | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> CliResult:
    """``tensorsmith ARGS`` in this process; return (exit code, stdout, stderr).

    The same typer app, arguments, environment, working directory and consoles as
    :func:`run_cli_process`, without a new interpreter's ~3 s of imports. Python warnings are
    printed to stderr as a new process prints them; an exception that escapes the app is
    exit 1 with its traceback on stderr.
    """
    from typer.testing import CliRunner

    from tensorsmith import cli

    consoles = cli.out, cli.err
    try:
        with _environ(cli_env(store, env)), contextlib.chdir(cli_cwd(store, cwd)):
            cli.out, cli.err = cli.consoles()  # they read COLUMNS, NO_COLOR, TERM when made
            with warnings.catch_warnings():
                _warn_as_a_new_process()
                result = CliRunner().invoke(
                    cli.app, cli._resume_argument([str(a) for a in args]), prog_name="tensorsmith"
                )
    finally:
        cli.out, cli.err = consoles
    stderr = result.stderr
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        stderr += "".join(traceback.format_exception(result.exception))
    return result.exit_code, result.stdout, stderr


@contextlib.contextmanager
def _environ(changes: dict[str, str | None]) -> Iterator[None]:
    before = {key: os.environ.get(key) for key in changes}
    _set_environ(changes)
    try:
        yield
    finally:
        _set_environ(before)


def _set_environ(values: dict[str, str | None], environ: Any = os.environ) -> None:
    for key, value in values.items():
        if value is None:
            environ.pop(key, None)
        else:
            environ[key] = value


def _warn_as_a_new_process() -> None:
    """Python's default warning filters (pytest's are stricter), printed to sys.stderr."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for quiet in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", quiet)
    warnings.showwarning = _print_warning


def _print_warning(message: Any, category: Any, filename: str, lineno: int, *_: Any) -> None:
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno))


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Each test (and the fixtures it sets up) starts on one torch thread, whatever an earlier
    test of this process set (see OMP_NUM_THREADS above)."""
    import torch

    torch.set_num_threads(1)


INFO = "checkpoint/tensorsmith.json"  # written last, with the whole checkpoint


def find_checkpoint(store: Path, name: str) -> Path:
    """The info file (step, epoch, world size) of the checkpoint of the (one) run of ``name`` in
    ``store``, or a path that does not exist."""
    found = sorted((store / ".checkpoints" / name).glob(f"*/{INFO}"))
    return found[0] if found else store / ".checkpoints" / name / "none" / INFO


def example_recipes() -> list[Path]:
    """Every recipe YAML under examples/ (globbed, never a hard-coded list)."""
    return sorted(EXAMPLES.glob("**/*.yaml"))


def recipe_task(path: Path) -> str | None:
    raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    return raw.get("task") if isinstance(raw, dict) else None


def tabular_example_recipes() -> list[Path]:
    """The table recipes that ``train`` runs (fine-tunes are tested in test_finetune.py)."""
    return [
        p
        for p in example_recipes()
        if recipe_task(p) in TABULAR_TASKS and "finetune" not in yaml.safe_load(p.read_text())
    ]


def quiet_console() -> Any:
    """A rich Console that writes nowhere (for ``tensorsmith.train(..., console=...)``)."""
    from rich.console import Console

    return Console(file=io.StringIO())


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """An empty model store under tmp_path (created on first use by tensorsmith)."""
    return tmp_path / "store"


@pytest.fixture
def cli() -> Callable[..., CliResult]:
    """The :func:`run_cli` helper as a fixture."""
    return run_cli


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return EXAMPLES


@pytest.fixture(scope="session")
def windsor_csv() -> Path:
    return EXAMPLES / "windsor_housing" / "windsor_housing.csv"


@pytest.fixture(scope="session")
def session_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store shared by the session (for models that are expensive to train twice)."""
    return tmp_path_factory.mktemp("session") / "store"


# Tiny settings for the examples: a few epochs, plots kept; the examples' quality gates are
# for their full runs (tests/test_figures.py), so a 3-epoch run exits 3 when its gate fails
TINY = ["--set", "train.epochs=3", "--set", "train.log_every=1"]
GATE_FAILED = 3


@pytest.fixture(scope="session")
def trained_examples(session_store: Path) -> dict[str, dict[str, Any]]:
    """Train every tabular example once through the CLI (3 epochs) into ``session_store``.

    Returns ``{recipe path relative to examples/: {"name", "result", "path"}}`` where result is
    the (returncode, stdout, stderr) of ``tensorsmith train`` and path the version directory.
    """
    out: dict[str, dict[str, Any]] = {}
    for recipe in tabular_example_recipes():
        name = yaml.safe_load(recipe.read_text(encoding="utf-8"))["name"]
        result = run_cli("train", recipe, *TINY, store=session_store)
        out[str(recipe.relative_to(EXAMPLES))] = {
            "name": name,
            "result": result,
            "path": session_store / name / "1",
        }
    return out
