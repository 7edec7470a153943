"""Reading a stored version's files, with one message per damaged file (folder and name).

A version holds JSON, YAML, safetensors and ``tokenizer.json`` only; nothing here executes
code or unpickles anything.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from tensorsmith.errors import StoreError

__all__ = ["FORMAT", "damaged", "read_json_file", "read_yaml_file"]

FORMAT = "tensorsmith/1"  # config.json "format": what a version folder holds and how to read it


def damaged(path: Path, why: str) -> StoreError:
    """The one error for a damaged file of a stored version."""
    return StoreError(
        f"model version {path.parent} is damaged: {path.name} {why}; train the model again, "
        "or restore the version folder from a backup"
    )


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise damaged(path, "is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise damaged(path, f"cannot be read ({exc})") from None


def read_json_file(path: Path) -> Any:
    try:
        return json.loads(_text(path))
    except json.JSONDecodeError as exc:
        raise damaged(path, f"is not valid JSON ({exc.msg} at line {exc.lineno})") from None


def read_yaml_file(path: Path) -> Any:
    try:
        return yaml.safe_load(_text(path))
    except yaml.YAMLError as exc:
        raise damaged(path, f"is not valid YAML ({str(exc).splitlines()[0]})") from None
