"""Registries are plain maps with helpful misses (see STYLE.md).

``MODELS``, ``OPTIMIZERS``, ``LOSSES``, ``METRICS`` … are :class:`Registry` instances filled by
plain statements in their own package. Looking up an unknown name raises an error that names the
recipe path, suggests the nearest name and lists the choices.

An entry may be registered as ``"package.module:attribute"`` (``register_lazy``): its module is
imported on the first ``get``. Names, ``in`` and :meth:`Registry.check` never import it, so
``tensorsmith validate`` checks every name without importing torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Generic, TypeVar

from tensorsmith.errors import RecipeError, did_you_mean

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """A name → object map whose misses say what was meant."""

    def __init__(self, kind: str, path: str) -> None:
        self.kind = kind  # "optimizer"
        self.path = path  # "train.optimizer.name": where the name comes from in a recipe
        self._items: dict[str, T] = {}
        self._lazy: dict[str, str] = {}  # name → "module:attribute", imported on first get

    def register(self, name: str, item: T) -> T:
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def register_lazy(self, name: str, target: str) -> None:
        """Register ``module:attribute``, imported when the name is first looked up."""
        if name in self:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._lazy[name] = target

    def check(self, name: str) -> str:
        """``name`` if it is registered (nothing is imported), else the helpful RecipeError."""
        if name not in self:
            choices = ", ".join(self.names())
            raise RecipeError(
                f"unknown {self.kind} '{name}' at {self.path}{did_you_mean(name, self.names())} "
                f"choices: {choices}"
            )
        return name

    def get(self, name: str) -> T:
        if name in self._lazy:
            module, _, attribute = self._lazy.pop(name).partition(":")
            self._items[name] = getattr(importlib.import_module(module), attribute)
        return self._items[self.check(name)]

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter([*self._items, *self._lazy])

    def __len__(self) -> int:
        return len(self._items) + len(self._lazy)

    def names(self) -> list[str]:
        return sorted(self)
