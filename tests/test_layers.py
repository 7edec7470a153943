"""The package layers of DESIGN.md §2, enforced by reading every import with ``ast``.

Imports point down only; siblings in one layer (different top-level units at the same level)
do not import each other. Imports inside functions and ``if TYPE_CHECKING:`` blocks count too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import tensorsmith

PACKAGE = Path(tensorsmith.__file__).resolve().parent

# top-level unit (module stem or subpackage) → layer
LAYERS: dict[str, int] = {
    "errors": 0,
    "recipe": 0,
    "registry": 0,
    "data": 1,
    "models": 1,
    "tasks": 2,
    "training": 3,
    "evaluation": 3,
    "planning": 3,
    "store": 3,
    "finetune": 4,
    "compression": 4,
    "serving": 5,
    "api": 6,
    "cli": 7,
    "__main__": 8,  # `python -m tensorsmith`: runs the CLI
    "__init__": 9,  # the public face: may import api and errors
}
# L0 is one layer of three modules: errors and registry are its floor (every module may raise
# the package's errors and keep a registry); recipe uses both
FOUNDATION = {"errors", "registry"}
# DESIGN.md §2: serving never imports training/ or finetune/ (a lower layer never does anyway)
FORBIDDEN = {("serving", "training"), ("serving", "finetune")}


def _modules(package_dir: Path = PACKAGE) -> list[Path]:
    return sorted(p for p in package_dir.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path: Path, package: Path = PACKAGE) -> str:
    parts = list(path.relative_to(package.parent).with_suffix("").parts)
    return ".".join(parts)


def _unit(dotted: str) -> str:
    """``tensorsmith.training.trainer`` → ``training``; ``tensorsmith`` → ``__init__``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _exists(dotted: str, package: Path) -> bool:
    rel = Path(*dotted.split(".")[1:]) if "." in dotted else Path()
    base = package / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, package_dir: Path = PACKAGE) -> list[tuple[int, str, str]]:
    """(line, imported module, source text) for every import in the file, at any depth."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    here = _dotted(path, package_dir)
    is_pkg = path.name == "__init__.py"
    package = here if is_pkg else here.rpartition(".")[0]
    found: list[tuple[int, str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                found.append((node.lineno, alias.name, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom):
            names = ", ".join(a.name for a in node.names)
            text = f"from {'.' * node.level}{node.module or ''} import {names}"
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from tensorsmith import api` imports the submodule tensorsmith.api; a name that
            # is no submodule (`from tensorsmith import train`) comes from the module itself
            subs = [f"{module}.{a.name}" for a in node.names]
            if module.split(".")[0] == "tensorsmith" and all(
                _exists(sub, package_dir) for sub in subs
            ):
                found += [(node.lineno, sub, text) for sub in subs]
            else:
                found.append((node.lineno, module, text))
    return found


def _violations(package_dir: Path = PACKAGE) -> list[str]:
    out: list[str] = []
    for path in _modules(package_dir):
        here = _dotted(path, package_dir)
        src = _unit(here)
        assert src in LAYERS, f"{here}: top-level unit '{src}' has no layer in DESIGN.md §2"
        for line, module, text in _imports(path, package_dir):
            if module.split(".")[0] != "tensorsmith":
                continue
            dst = _unit(module)
            if dst not in LAYERS:
                out.append(f"{here}:{line} `{text}`: unknown unit '{dst}'")
                continue
            where = f"{here}:{line} `{text}`"
            if src == dst:
                continue
            if (src, dst) in FORBIDDEN:
                out.append(f"{where}: {src}/ must never import {dst}/")
            elif dst in FOUNDATION:
                continue
            elif LAYERS[dst] > LAYERS[src]:
                out.append(f"{where}: L{LAYERS[src]} {src} imports up into L{LAYERS[dst]} {dst}")
            elif LAYERS[dst] == LAYERS[src]:
                out.append(f"{where}: siblings in L{LAYERS[src]}: {src} imports {dst}")
    return out


def test_every_module_is_scanned() -> None:
    names = {_dotted(p) for p in _modules()}
    # a scan that silently found nothing would pass every rule below
    for expected in (
        "tensorsmith.recipe.parse",
        "tensorsmith.tasks.predictor",
        "tensorsmith.api.training",
        "tensorsmith.cli",
        "tensorsmith.training.trainer",
        "tensorsmith.models.mlp",
    ):
        assert expected in names
    imported = {m for p in _modules() for _, m, _ in _imports(p)}
    assert "tensorsmith.training.trainer" in imported  # TYPE_CHECKING imports are seen
    assert "tensorsmith.evaluation.metrics" in imported  # so are imports inside functions


def test_imports_point_down_only() -> None:
    violations = _violations()
    assert not violations, "layer violations (DESIGN.md §2):\n  " + "\n  ".join(violations)


def test_data_and_models_are_independent() -> None:
    bad = [
        f"{_dotted(p)}:{line} `{text}`"
        for p in _modules()
        for line, module, text in _imports(p)
        if {_unit(_dotted(p)), _unit(module)} == {"data", "models"}
    ]
    assert not bad, "data/ and models/ import each other:\n  " + "\n  ".join(bad)


L0_FILES = [
    PACKAGE / "errors.py",
    PACKAGE / "registry.py",
    *sorted((PACKAGE / "recipe").glob("*.py")),
]


@pytest.mark.parametrize("path", L0_FILES, ids=lambda p: _dotted(p))
def test_layer_zero_does_not_import_torch(path: Path) -> None:
    bad = [
        f"{_dotted(path)}:{line} `{text}`"
        for line, module, text in _imports(path)
        if module.split(".")[0] in ("torch", "safetensors")
    ]
    assert not bad, "L0 must not import torch:\n  " + "\n  ".join(bad)


def test_serving_cannot_import_training(tmp_path: Path) -> None:
    """DESIGN.md §2: a serving/ module that imports training/ or finetune/ is a violation."""
    fake = tmp_path / "tensorsmith"
    (fake / "serving").mkdir(parents=True)
    (fake / "serving" / "app.py").write_text(
        "from tensorsmith.training.trainer import Trainer\nimport tensorsmith.tasks\n",
        encoding="utf-8",
    )
    found = "\n".join(_violations(fake))
    assert "serving/ must never import training/" in found
    assert "tasks" not in found  # serving may use the Predictor


def test_no_task_comparisons_outside_tasks() -> None:
    """A new task is a file in tasks/ and a registry line: nothing else asks which task."""
    pattern = re.compile(r"task\s*[!=]=|[!=]=\s*[\"'](regression|classification|language-modeling)")
    bad = [
        f"{_dotted(p)}:{i}: {line.strip()}"
        for p in _modules()
        if "tasks" not in p.relative_to(PACKAGE).parts
        for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]
    assert not bad, "task comparisons outside tasks/:\n  " + "\n  ".join(bad)


def test_module_and_function_sizes() -> None:
    """Modules stay under ~500 lines; functions in tasks/, training/ and api.py under ~60."""
    long_modules = [
        f"{_dotted(p)}: {n} lines"
        for p in _modules()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > 500
    ]
    assert not long_modules, long_modules
    watched = [p for p in _modules() if p.relative_to(PACKAGE).parts[0] in ("tasks", "training")]
    watched += sorted((PACKAGE / "api").glob("*.py"))
    long_functions = []
    for path in watched:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 60:
                    long_functions.append(f"{_dotted(path)}.{node.name}: {length} lines")
    assert not long_functions, long_functions


def test_rules_catch_a_violation(tmp_path: Path) -> None:
    """The scanner itself: an upward import, a sibling import and a relative one are seen."""
    fake = tmp_path / "tensorsmith"
    (fake / "models").mkdir(parents=True)
    (fake / "models" / "bad.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from tensorsmith.training.trainer import Trainer\n"
        "def f():\n    from ..data import tabular\n",
        encoding="utf-8",
    )
    tree_imports = {(m, line) for line, m, _ in _imports(fake / "models" / "bad.py", fake)}
    assert ("tensorsmith.training.trainer", 3) in tree_imports
    assert ("tensorsmith.data", 5) in tree_imports
    found = "\n".join(_violations(fake))
    assert "L1 models imports up into L3 training" in found
    assert "siblings in L1: models imports data" in found


def test_public_names_are_pinned() -> None:
    assert sorted(tensorsmith.__all__) == [
        "DataError",
        "Model",
        "ModelNotFoundError",
        "RecipeError",
        "TensorsmithError",
        "compress",
        "evaluate",
        "finetune",
        "generate",
        "lineage",
        "load",
        "models",
        "plan",
        "predict",
        "promote",
        "train",
        "validate",
    ]
    for name in tensorsmith.__all__:
        assert hasattr(tensorsmith, name), name  # the lazy names resolve
    # nothing public beyond __all__ except submodules (which `import tensorsmith.x` attaches)
    import types

    extra = {
        n
        for n, v in vars(tensorsmith).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    } - set(tensorsmith.__all__)
    assert not extra, f"public names not in __all__: {sorted(extra)}"
