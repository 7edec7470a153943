"""The package layers of DESIGN.md §2, enforced by reading every import with ``ast``.

Imports point down only; siblings in one layer (different top-level units at the same level)
do not import each other. Imports inside functions and ``if TYPE_CHECKING:`` blocks count too:
a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
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
    "training": 2,
    "evaluation": 2,
    "planning": 2,
    "store": 2,
    "finetune": 3,
    "compression": 3,
    "serving": 4,
    "api": 5,
    "pipelines": 5,  # the per-task halves of api.py
    "cli": 6,
    "__main__": 6,
    "__init__": 7,  # the public face: may import api and errors
}
# errors is the floor of L0: every module may raise the package's errors
FOUNDATION = {"errors"}
# api.py is the only module that knows every stage; it dispatches to pipelines/ (not back)
SAME_LAYER_ALLOWED = {("api", "pipelines")}
# DESIGN.md §2: serving never imports training/ or finetune/
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
            elif LAYERS[dst] == LAYERS[src] and (src, dst) not in SAME_LAYER_ALLOWED:
                out.append(f"{where}: siblings in L{LAYERS[src]}: {src} imports {dst}")
    return out


def test_every_module_is_scanned() -> None:
    names = {_dotted(p) for p in _modules()}
    # a scan that silently found nothing would pass every rule below
    for expected in (
        "tensorsmith.recipe",
        "tensorsmith.api",
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


@pytest.mark.parametrize("name", ["recipe", "errors", "registry"])
def test_layer_zero_does_not_import_torch(name: str) -> None:
    path = PACKAGE / f"{name}.py"
    bad = [
        f"tensorsmith.{name}:{line} `{text}`"
        for line, module, text in _imports(path)
        if module.split(".")[0] in ("torch", "safetensors")
    ]
    assert not bad, "L0 must not import torch:\n  " + "\n  ".join(bad)


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
    assert "L1 models imports up into L2 training" in found
    assert "siblings in L1: models imports data" in found


def test_public_names_are_pinned() -> None:
    assert sorted(tensorsmith.__all__) == [
        "DataError",
        "Model",
        "ModelNotFoundError",
        "RecipeError",
        "TensorsmithError",
        "evaluate",
        "load",
        "models",
        "predict",
        "train",
        "validate",
    ]
    for name in tensorsmith.__all__:
        assert hasattr(tensorsmith, name), name
    # nothing public beyond __all__ except submodules (which `import tensorsmith.x` attaches)
    import types

    extra = {
        n
        for n, v in vars(tensorsmith).items()
        if not n.startswith("_") and not isinstance(v, types.ModuleType)
    } - set(tensorsmith.__all__)
    assert not extra, f"public names not in __all__: {sorted(extra)}"
