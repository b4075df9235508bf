"""One registry per family of methods (models, datasets, criteria, ...), one error message."""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table whose lookup error lists what exists."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        if name in self._items:
            raise ValueError(f"{self.kind} {name!r} is registered twice")
        self._items[name] = item
        return item

    def register(self, name: str):
        """Decorator form of ``add``."""
        return lambda item: self.add(name, item)

    def get(self, name: str) -> T:
        if not isinstance(name, str) or name not in self._items:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {self.names()}")
        return self._items[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
