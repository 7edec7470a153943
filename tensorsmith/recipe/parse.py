"""YAML in, a validated recipe out: bounded loading, ``--set`` overrides, errors by YAML path.

The recipe is a pydantic discriminated union: ``task`` picks the recipe class (and so the keys
of ``data`` and ``train``), ``model.arch`` picks the model spec. A key that belongs to another
task or architecture is an error that says where it would apply.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Union, cast, get_args, get_origin

import yaml
from pydantic import BaseModel, Field, TypeAdapter, ValidationError

from tensorsmith.errors import RecipeError, did_you_mean, shorten
from tensorsmith.recipe.base import Recipe
from tensorsmith.recipe.images import ImageClassificationRecipe
from tensorsmith.recipe.language import LanguageModelingRecipe
from tensorsmith.recipe.sequences import SequenceClassificationRecipe, SequenceRegressionRecipe
from tensorsmith.recipe.tables import ClassificationRecipe, RegressionRecipe
from tensorsmith.recipe.text import TextClassificationRecipe, TextRegressionRecipe

__all__ = [
    "MAX_RECIPE_BYTES",
    "RECIPES",
    "apply_overrides",
    "load_recipe",
    "load_yaml",
    "parse_recipe",
    "recipe_to_yaml",
]

# task name → recipe class; the discriminated union is built from this map
RECIPES: dict[str, type[Recipe]] = {
    "regression": RegressionRecipe,
    "classification": ClassificationRecipe,
    "language-modeling": LanguageModelingRecipe,
    "image-classification": ImageClassificationRecipe,
    "sequence-regression": SequenceRegressionRecipe,
    "sequence-classification": SequenceClassificationRecipe,
    "text-classification": TextClassificationRecipe,
    "text-regression": TextRegressionRecipe,
}
_ADAPTER: TypeAdapter[Recipe] = TypeAdapter(
    cast(Any, Annotated[Union[tuple(RECIPES.values())], Field(discriminator="task")])  # noqa: UP007
)

MAX_RECIPE_BYTES = 1 << 20  # a recipe is a page of YAML, not a data set
MAX_NODES = 100_000  # nodes after expanding YAML aliases (a "billion laughs" stays small)
MAX_DEPTH = 64


# ----------------------------------------------------------------------------- bounded YAML


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-4`` as a float, as YAML 1.2 does (YAML 1.1 reads a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _expanded_size(node: yaml.Node, source: str) -> int:
    """Nodes the document expands to (aliases counted each time they are used), bounded."""
    sizes: dict[int, int] = {}

    def size(n: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise RecipeError(
                f"{source} is nested more than {MAX_DEPTH} levels deep; a recipe is a few levels "
                "of keys: flatten it"
            )
        if id(n) in sizes:
            return sizes[id(n)]
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child, depth + 1) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k, depth + 1) + size(v, depth + 1) for k, v in n.value)
        if total > MAX_NODES:
            raise RecipeError(
                f"{source} expands to more than {MAX_NODES:,} values (YAML aliases repeat "
                "content): a recipe is a page of settings; remove the repeated aliases"
            )
        sizes[id(n)] = total
        return total

    return size(node, 0)


def load_yaml(text: str, source: str = "(recipe)") -> Any:
    """Parse YAML safely, refusing documents that are huge, too deep or alias bombs."""
    if len(text.encode("utf-8", errors="replace")) > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"{source} is larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a page of "
            "settings (data goes in data.source)"
        )
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, source)
        return loader.construct_document(node)
    except RecursionError:
        raise RecipeError(
            f"{source} is nested too deeply to read; a recipe is a few levels of keys"
        ) from None
    finally:
        loader.dispose()


# ----------------------------------------------------------------------------- overrides


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides; values are parsed as YAML (``lr=0.1`` is a float)."""
    out = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key.strip()):
            raise RecipeError(
                f"bad override '{shorten(item)}': expected KEY=VALUE with a dotted key, "
                "for example --set train.optimizer.lr=0.01"
            )
        parts = key.strip().split(".")
        node: dict[str, Any] = out
        for part in parts[:-1]:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        try:
            node[parts[-1]] = load_yaml(value, f"--set {key}") if value.strip() else None
        except yaml.YAMLError:
            node[parts[-1]] = value
    return out


# ----------------------------------------------------------------------------- parsing


def parse_recipe(
    raw: dict[str, Any] | Recipe,
    overrides: list[str] | None = None,
    base_dir: Path | str = ".",
    source: str = "(recipe)",
) -> Recipe:
    """Validate a recipe given as a dict (already loaded YAML) with optional overrides."""
    if isinstance(raw, Recipe):
        raw = raw.model_dump(mode="json", by_alias=True)
    if not isinstance(raw, dict):
        raise RecipeError(
            f"recipe {source} must be a mapping of keys (name, task, data, model, train, "
            f"evaluate), got {type(raw).__name__}"
        )
    raw = apply_overrides(raw, overrides)
    task = raw.get("task")
    cls = RECIPES.get(task) if isinstance(task, str) else None
    resolved = cls.resolve_defaults(raw) if cls is not None else raw
    try:
        recipe = _ADAPTER.validate_python(resolved)
    except ValidationError as exc:
        raise RecipeError(_format_errors(exc, resolved, source)) from None
    recipe.base_dir = Path(base_dir).resolve()
    return recipe


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read a YAML recipe file; relative paths inside resolve against its folder."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file {p} does not exist; pass the path of a YAML recipe")
    try:
        raw = load_yaml(p.read_text(encoding="utf-8"), str(p))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {p} is not valid YAML: {shorten(str(exc), 400)}") from None
    if raw is None:
        raise RecipeError(f"recipe {p} is empty; start one with `tensorsmith init DATAFILE`")
    return parse_recipe(raw, overrides, base_dir=p.parent, source=str(p))


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``validate`` prints and the artifact stores)."""
    data = recipe.model_dump(mode="json", exclude={"base_dir"}, by_alias=True)
    if data.get("finetune") is None:
        data.pop("finetune", None)  # only a fine-tune's recipe has the section
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)


# ----------------------------------------------------------------------------- error messages


def _members(annotation: Any) -> dict[str, type[BaseModel]]:
    """The model classes an annotation allows, by their tag (``arch``) or their name."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    args = get_args(annotation) or (annotation,)
    out: dict[str, type[BaseModel]] = {}
    for arg in args:
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            tag = arg.model_fields.get("arch")
            out[str(tag.default) if tag is not None else arg.__name__] = arg
    return out


def _walk(loc: tuple[Any, ...]) -> tuple[list[str], type[BaseModel] | None, list[str]]:
    """(path of YAML keys, the model class at the end, the union tags passed on the way)."""
    path: list[str] = []
    tags: list[str] = []
    node: type[BaseModel] | None = None
    union: dict[str, type[BaseModel]] = dict(RECIPES)
    for part in loc:
        if union and str(part) in union:
            node, union = union[str(part)], {}
            tags.append(str(part))
            continue
        path.append(str(part))
        field = node.model_fields.get(str(part)) if node is not None else None
        members = _members(field.annotation) if field is not None else {}
        node, union = (next(iter(members.values())), {}) if len(members) == 1 else (None, members)
    return path, node, tags


def _variants(
    cls: type[BaseModel], path: list[str], label: str
) -> Iterator[tuple[str, type[BaseModel]]]:
    """(label, model class) for every union branch reachable from ``cls`` along ``path``."""
    if not path:
        yield label, cls
        return
    field = cls.model_fields.get(path[0])
    if field is None:
        return
    members = _members(field.annotation)
    for tag, member in members.items():
        tagged = f"model.arch {tag}" if "arch" in member.model_fields else label
        yield from _variants(member, path[1:], tagged)


def _unknown_key(path: list[str], node: type[BaseModel] | None, tags: list[str]) -> str:
    key, parent = path[-1], path[:-1]
    where = ".".join(path)
    valid = sorted(k for k in (node.model_fields if node is not None else {}) if k != "base_dir")
    here = f"task {tags[0]}" if tags else ""
    if parent == ["model"] and node is not None and "arch" in node.model_fields:
        here = f"model.arch {node.model_fields['arch'].default}"
    elsewhere = sorted(
        {
            label or f"task {task}"
            for task, cls in RECIPES.items()
            for label, model in _variants(cls, parent, "")
            if key in model.model_fields and (label or f"task {task}") != here
        }
    )
    if elsewhere and here:
        return (
            f"key '{key}' at {where} does not apply to {here} (it applies to "
            f"{', '.join(elsewhere)}); valid keys here: {', '.join(valid)}"
        )
    hint = did_you_mean(key, valid)
    return f"unknown key '{shorten(key)}' at {where}{hint} valid keys here: {', '.join(valid)}"


def _lookup(raw: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(raw, dict) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and part.isdigit() and int(part) < len(raw):
            raw = raw[int(part)]
        else:
            return None
    return raw


def _tag_error(err: Any, path: list[str], raw: dict[str, Any]) -> str:
    ctx = err.get("ctx", {})
    key = str(ctx.get("discriminator", "")).strip("'")
    where = ".".join([*path, key]) if path else key
    expected = re.findall(r"'([^']+)'", str(ctx.get("expected_tags", ""))) or list(RECIPES)
    if err["type"] == "union_tag_not_found":
        return f"missing required key {where}; choices: {', '.join(expected)}"
    tag = str(ctx.get("tag", ""))
    noun = "a task" if where == "task" else f"an architecture for task {raw.get('task')}"
    return (
        f"{where}: '{shorten(tag)}' is not {noun}{did_you_mean(tag, expected) or ';'} "
        f"choices: {', '.join(expected)}"
    )


def _value_error(errs: list[Any], path: list[str], raw: dict[str, Any]) -> str:
    """One line for the errors at one path (a union such as ``int | 'full'`` gives several)."""
    value = _lookup(raw, path)
    msgs = []
    for err in errs:
        msg = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "literal_error" and value is not None:
            allowed = re.findall(r"'([^']+)'", str(err.get("ctx", {}).get("expected", "")))
            msg += did_you_mean(str(value), allowed).replace("; did", ": did")
        msgs.append(msg)
    shown = (
        f" (got {shorten(repr(value))})"
        if value is not None and not isinstance(value, dict)
        else ""
    )
    return f"{'.'.join(path) or '(top level)'}: {' or '.join(msgs)}{shown}"


def _format_errors(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines: list[str] = []
    by_path: dict[str, list[Any]] = {}
    for err in exc.errors():
        loc = tuple(
            p
            for p in err["loc"]
            if not (isinstance(p, str) and (p.startswith("function-") or "[" in p))
            and p not in ("int", "str", "float", "bool")
        )
        path, _, tags = _walk(loc)
        kind = err["type"]
        if kind == "extra_forbidden":
            lines.append(_unknown_key(path, _walk(loc[:-1])[1], tags))
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            lines.append(_tag_error(err, path, raw))
        elif kind == "missing":
            lines.append(f"missing required key {'.'.join(path)}")
        else:
            key = ".".join(path)
            if key not in by_path:
                lines.append(key)  # a placeholder, filled in below in order
            by_path.setdefault(key, []).append(err)
    lines = [
        _value_error(by_path[line], line.split(".") if line else [], raw)
        if line in by_path
        else line
        for line in lines
    ]
    unique = list(dict.fromkeys(lines))
    more = f"\n  … and {len(unique) - 10} more" if len(unique) > 10 else ""
    return f"invalid recipe {source}:\n  - " + "\n  - ".join(unique[:10]) + more
