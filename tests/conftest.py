"""Shared fixtures: a temporary model store, the CLI as a real subprocess, the examples.

Every test writes into ``tmp_path`` (or a session temp dir), never into the repository.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "examples"
TABULAR_TASKS = ("regression", "classification")

CliResult = tuple[int, str, str]


def run_cli(
    *args: str | Path,
    store: str | Path | None = None,
    cwd: str | Path | None = None,
    env: dict[str, str] | None = None,
    timeout: float = 300,
) -> CliResult:
    """Run ``python -m tensorsmith.cli ARGS`` in a subprocess; return (returncode, stdout, stderr).

    ``store`` is passed as ``TENSORSMITH_STORE`` (so it works for every verb); the working
    directory defaults to a fresh folder outside the repository when ``store`` is given.
    """
    full_env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1", "TERM": "dumb"}
    full_env.pop("TENSORSMITH_DEBUG", None)
    if store is not None:
        full_env["TENSORSMITH_STORE"] = str(store)
    full_env.update(env or {})
    if cwd is None:  # never the repository: a stray default ./models store must not land there
        cwd = Path(store).parent if store is not None else tempfile.mkdtemp(prefix="ts-cli-")
    proc = subprocess.run(
        [sys.executable, "-m", "tensorsmith.cli", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout, proc.stderr


def find_checkpoint(store: Path, name: str) -> Path:
    """The checkpoint of the (one) run of ``name`` in ``store``, or a path that does not exist."""
    found = sorted((store / ".checkpoints" / name).glob("*/checkpoint.pt"))
    return found[0] if found else store / ".checkpoints" / name / "none" / "checkpoint.pt"


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
