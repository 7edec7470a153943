"""The typed recipe (DESIGN.md §3): YAML in, a strict pydantic v2 model out.

One schema, several faces: the YAML file, ``--set a.b=c`` overrides and the Python API all pass
through :func:`load_recipe` / :func:`parse_recipe`. Unknown keys are errors that suggest the
nearest valid key; defaults depend on ``task`` and are filled in before validation, so
``tensorsmith validate`` prints the fully resolved recipe.

No torch import here: this is layer L0.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tensorsmith.errors import RecipeError, did_you_mean

__all__ = [
    "ACTIVATIONS",
    "ARCHS",
    "LOSSES",
    "OPTIMIZERS",
    "SCHEDULES",
    "TASKS",
    "Recipe",
    "apply_overrides",
    "load_recipe",
    "parse_recipe",
    "recipe_to_yaml",
]

Task = Literal["regression", "classification", "language-modeling"]
TASKS: tuple[str, ...] = ("regression", "classification", "language-modeling")
# Names that registries in lower layers implement; tests check both lists agree.
ARCHS: tuple[str, ...] = ("linear", "mlp", "gpt")
ACTIVATIONS: tuple[str, ...] = ("sigmoid", "tanh", "relu", "gelu")
OPTIMIZERS: tuple[str, ...] = ("sgd", "adam", "adamw", "rmsprop", "adagrad")
SCHEDULES: tuple[str, ...] = ("constant", "step", "cosine", "linear", "plateau")
LOSSES: tuple[str, ...] = ("mse", "mae", "huber", "bce", "cross_entropy")
ColumnType = Literal["number", "category", "binary", "text"]
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SplitSpec(_Strict):
    """Random / stratified / grouped fractions, or explicit files (train, valid, test)."""

    valid: float | str = 0.15
    test: float | str | None = 0.15
    train: str | None = None
    seed: int = 0
    stratify: bool | None = None  # default: on for classification
    group: str | None = None  # keep every row of a group in one split

    @model_validator(mode="after")
    def _check(self) -> SplitSpec:
        files = [isinstance(v, str) for v in (self.train, self.valid, self.test) if v is not None]
        if any(files) and not (self.train is not None and all(files)):
            raise ValueError(
                "explicit split files need data.split.train and data.split.valid as file paths "
                "(test optional); fractions cannot be mixed with files"
            )
        if self.train is None:
            for key in ("valid", "test"):
                value = getattr(self, key)
                if value is not None and not 0.0 <= float(value) < 1.0:
                    raise ValueError(f"data.split.{key} must be a fraction in [0, 1), got {value}")
            total = float(self.valid) + float(self.test or 0.0)
            if total >= 1.0:
                raise ValueError(f"valid + test fractions must leave rows to train on; got {total}")
        return self


class TokenizerSpec(_Strict):
    kind: Literal["char", "bpe"] = "char"
    vocab_size: int = Field(default=4096, ge=16, le=1_000_000)


class DataSpec(_Strict):
    source: str
    target: str | None = None
    features: list[str] | None = None
    types: dict[str, ColumnType] = Field(default_factory=dict)
    split: SplitSpec = Field(default_factory=SplitSpec)
    impute: Literal["median", "mean"] = "median"  # numbers; categories use the most frequent
    scale: Literal["standard", "minmax", "none"] = "standard"
    categorical: Literal["onehot", "embedding"] = "onehot"
    target_transform: Literal["none", "log"] = "none"
    transforms: dict[str, Literal["log", "log1p"]] = Field(default_factory=dict)  # number columns
    # language modeling
    text_column: str | None = None
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    valid_by: Literal["document", "tail"] = "tail"


class ModelSpec(_Strict):
    arch: str = "mlp"
    # linear / mlp
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    activation: str = "relu"
    output_activation: Literal["auto", "none", "sigmoid"] = "auto"
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = False
    init: Literal["default", "gaussian", "uniform", "xavier", "kaiming"] = "default"
    embedding_dim: int | None = None  # per category column when data.categorical = embedding
    # gpt
    n_layer: int = Field(default=4, ge=1)
    n_head: int = Field(default=4, ge=1)
    n_embd: int = Field(default=128, ge=1)
    block_size: int = Field(default=64, ge=1)
    bias: bool = True
    tie_weights: bool = True

    @field_validator("arch")
    @classmethod
    def _arch(cls, v: str) -> str:
        return _choice(v, ARCHS)

    @field_validator("activation")
    @classmethod
    def _activation(cls, v: str) -> str:
        return _choice(v, ACTIVATIONS)

    @field_validator("hidden")
    @classmethod
    def _hidden(cls, v: list[int]) -> list[int]:
        if any(h < 1 for h in v):
            raise ValueError(f"hidden sizes must be positive integers, got {v}")
        return v


class OptimizerSpec(_Strict):
    name: str = "adam"
    lr: float = Field(default=1e-3, gt=0.0)
    weight_decay: float = Field(default=0.0, ge=0.0)
    momentum: float = Field(default=0.0, ge=0.0)
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _choice(v, OPTIMIZERS)


class ScheduleSpec(_Strict):
    name: str = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    min_lr: float = Field(default=0.0, ge=0.0)
    step_size: int = Field(default=1000, ge=1)  # steps between decays for "step"
    gamma: float = Field(default=0.5, gt=0.0)  # "step" decay factor
    factor: float = Field(default=0.5, gt=0.0, lt=1.0)  # "plateau" decay factor
    patience: int = Field(default=10, ge=0)  # "plateau": evaluations without improvement

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return _choice(v, SCHEDULES)


class EarlyStoppingSpec(_Strict):
    monitor: str = "valid_loss"
    patience: int = Field(default=20, ge=0)
    min_delta: float = Field(default=0.0, ge=0.0)
    mode: Literal["auto", "min", "max"] = "auto"


class TrainSpec(_Strict):
    epochs: int | None = Field(default=None, ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    batch_size: int | Literal["full"] = 32
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    loss: str | None = None  # default by task
    class_weights: Literal["balanced"] | list[float] | dict[str, float] | None = None
    early_stopping: EarlyStoppingSpec | None = None
    grad_clip: float | None = Field(default=None, gt=0.0)
    grad_accum: int = Field(default=1, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    compile: bool = False
    seed: int = 0
    eval_every: int | None = Field(default=None, ge=1)  # steps; epochs mode evaluates each epoch
    checkpoint_every: int | None = Field(default=None, ge=1)  # epochs, or steps with max_steps
    checkpoint_seconds: float = Field(default=60.0, gt=0.0)  # and at least this often
    log_every: int = Field(default=1, ge=1)  # epochs between plain log lines
    threads: int | None = Field(default=None, ge=1)
    eval_batches: int | None = Field(default=50, ge=1)  # language models: valid batches per eval

    @property
    def batch_size_int(self) -> int:
        if not isinstance(self.batch_size, int):
            raise RecipeError(
                "train.batch_size 'full' is for tables; language models need a "
                "number of windows per batch, for example 12"
            )
        return self.batch_size

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 1:
            raise ValueError(f"batch_size must be a positive integer or 'full', got {v}")
        return v

    @field_validator("loss")
    @classmethod
    def _loss(cls, v: str | None) -> str | None:
        return None if v is None else _choice(v, LOSSES)

    @model_validator(mode="after")
    def _length(self) -> TrainSpec:
        if self.epochs is not None and self.max_steps is not None:
            raise ValueError("set train.epochs or train.max_steps, not both")
        return self


class EvaluateSpec(_Strict):
    metrics: list[str] = Field(default_factory=list)
    gate: dict[str, str] = Field(default_factory=dict)
    plots: bool = True
    samples: int = Field(default=3, ge=0)  # language models: samples written into the card


class Recipe(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    task: Task
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    evaluate: EvaluateSpec = Field(default_factory=EvaluateSpec)
    # where relative paths resolve; not part of the YAML
    base_dir: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _task_rules(self) -> Recipe:
        lm = self.task == "language-modeling"
        if lm and self.model.arch != "gpt":
            raise ValueError(f"task language-modeling needs model.arch gpt, got {self.model.arch}")
        if not lm and self.model.arch == "gpt":
            raise ValueError(f"model.arch gpt is for task language-modeling, not {self.task}")
        if not lm and not self.data.target:
            raise ValueError(f"data.target is required for task {self.task}")
        if lm and self.model.n_embd % self.model.n_head:
            raise ValueError(
                f"model.n_embd ({self.model.n_embd}) must be divisible by model.n_head "
                f"({self.model.n_head})"
            )
        return self

    def path(self, relative: str) -> Path:
        """Resolve a recipe path against the folder of the recipe file."""
        p = Path(relative).expanduser()
        return p if p.is_absolute() else (self.base_dir / p)


# ----------------------------------------------------------------------------- defaults per task

_TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "regression": {
        "train": {"epochs": 100, "loss": "mse"},
        "evaluate": {"metrics": ["rmse", "mae", "r2", "mape"]},
    },
    "classification": {
        "train": {"epochs": 100},  # loss: bce for two classes, else cross_entropy
        "evaluate": {"metrics": ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]},
    },
    "language-modeling": {
        "data": {"split": {"valid": 0.1, "test": None}},
        "model": {"arch": "gpt"},
        "train": {
            "max_steps": 2000,
            "batch_size": 12,
            "loss": "cross_entropy",
            "optimizer": {"name": "adamw", "lr": 1e-3, "weight_decay": 0.1, "betas": [0.9, 0.99]},
            "schedule": {"name": "cosine", "warmup_steps": 100, "min_lr": 1e-4},
            "grad_clip": 1.0,
            "eval_every": 250,
            "checkpoint_every": 250,
        },
        "evaluate": {"metrics": ["loss", "perplexity"]},
    },
}


def _merge_defaults(raw: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    out = dict(raw)
    for key, value in defaults.items():
        if key not in out:
            out[key] = copy.deepcopy(value)
        elif isinstance(value, dict) and isinstance(out[key], dict):
            out[key] = _merge_defaults(out[key], value)
    return out


def _resolve_defaults(raw: dict[str, Any]) -> dict[str, Any]:
    task = raw.get("task")
    if not isinstance(task, str) or task not in _TASK_DEFAULTS:
        return raw
    out = _merge_defaults(raw, _TASK_DEFAULTS[task])
    train = out.get("train")
    # epochs and max_steps are alternatives: a user who sets one does not get the other's default
    if isinstance(train, dict) and isinstance(raw.get("train"), dict):
        given = raw["train"]
        if "max_steps" in given and "epochs" not in given:
            train.pop("epochs", None)
        if "epochs" in given and "max_steps" not in given:
            train.pop("max_steps", None)
    return out


# ----------------------------------------------------------------------------- errors


def _choice(value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(
            f"'{value}' is not one of: {', '.join(choices)}{did_you_mean(value, choices)}"
        )
    return value


def _model_at(loc: tuple[Any, ...]) -> type[BaseModel] | None:
    """The pydantic model class found at a location in the recipe, to list its valid keys."""
    model: type[BaseModel] = Recipe
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        nxt = next(
            (c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None
        )
        if nxt is None:
            return None
        model = nxt
    return model


def _lookup(raw: Any, loc: tuple[Any, ...]) -> Any:
    for part in loc:
        if (isinstance(raw, dict) and part in raw) or (
            isinstance(raw, list) and isinstance(part, int) and part < len(raw)
        ):
            raw = raw[part]
        else:
            return None
    return raw


def _format_errors(exc: ValidationError, raw: dict[str, Any], source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # drop union branch tags like 'int' / "literal['full']" that pydantic puts in the path
        loc = tuple(
            p for p in loc if not (isinstance(p, str) and ("[" in p or p in {"int", "str"}))
        )
        path = ".".join(str(p) for p in loc) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            parent = _model_at(loc[:-1])
            valid = sorted(parent.model_fields) if parent is not None else []
            valid = [v for v in valid if v != "base_dir"]
            hint = did_you_mean(str(loc[-1]), valid)
            lines.append(
                f"unknown key '{loc[-1]}' at {path}{hint} valid keys here: {', '.join(valid)}"
            )
        elif kind == "missing":
            lines.append(f"missing required key {path}")
        else:
            value = _lookup(raw, loc)
            msg = str(err["msg"]).removeprefix("Value error, ")
            if kind == "literal_error" and value is not None:
                allowed = re.findall(r"'([^']+)'", str(err.get("ctx", {}).get("expected", "")))
                msg += did_you_mean(str(value), allowed)
            shown = f" (got {value!r})" if value is not None and not isinstance(value, dict) else ""
            lines.append(f"{path}: {msg}{shown}")
    unique = list(dict.fromkeys(lines))
    return f"invalid recipe {source}:\n  - " + "\n  - ".join(unique)


# ----------------------------------------------------------------------------- loading


class _Loader(yaml.SafeLoader):
    """Safe YAML that reads ``1e-4`` as a float, as YAML 1.2 does (YAML 1.1 reads a string)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*(?:\.\d*)?|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # a SafeLoader subclass: no arbitrary objects


def apply_overrides(raw: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Apply ``a.b=c`` overrides; values are parsed as YAML (``lr=0.1`` is a float)."""
    out = copy.deepcopy(raw)
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not re.fullmatch(r"[A-Za-z0-9_.\-]+", key.strip()):
            raise RecipeError(
                f"bad override '{item}': expected KEY=VALUE with a dotted key, "
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
            node[parts[-1]] = _load_yaml(value) if value.strip() else None
        except yaml.YAMLError:
            node[parts[-1]] = value
    return out


def parse_recipe(
    raw: dict[str, Any] | Recipe,
    overrides: list[str] | None = None,
    base_dir: Path | str = ".",
    source: str = "(recipe)",
) -> Recipe:
    """Validate a recipe given as a dict (already loaded YAML) with optional overrides."""
    if isinstance(raw, Recipe):
        raw = raw.model_dump(mode="json")
    if not isinstance(raw, dict):
        raise RecipeError(
            f"recipe {source} must be a mapping of keys (name, task, data, model, train, "
            f"evaluate), got {type(raw).__name__}"
        )
    raw = apply_overrides(raw, overrides)
    resolved = _resolve_defaults(raw)
    try:
        recipe = Recipe.model_validate(resolved)
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
        raw = _load_yaml(p.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise RecipeError(f"recipe {p} is not valid YAML: {exc}") from None
    if raw is None:
        raise RecipeError(f"recipe {p} is empty; start one with `tensorsmith init DATAFILE`")
    return parse_recipe(raw, overrides, base_dir=p.parent, source=str(p))


def recipe_to_yaml(recipe: Recipe) -> str:
    """The fully resolved recipe as YAML (what ``validate`` prints and the artifact stores)."""
    data = recipe.model_dump(mode="json", exclude={"base_dir"})
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=None, width=100)
