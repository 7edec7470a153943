"""Registries are plain maps with helpful misses (see STYLE.md).

``MODELS``, ``OPTIMIZERS``, ``LOSSES``, ``METRICS`` … are :class:`Registry` instances filled by
plain statements in their own package. Looking up an unknown name raises an error that names the
recipe path, suggests the nearest name and lists the choices.
"""

from __future__ import annotations

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

    def register(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items))
            raise RecipeError(
                f"unknown {self.kind} '{name}' at {self.path}{did_you_mean(name, self._items)} "
                f"choices: {choices}"
            ) from None

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        return sorted(self._items)
