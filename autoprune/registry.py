"""One registry pattern for every pluggable kind: agents, backends, importance criteria, tasks.

A plugin registers under the string name that YAML and the CLI use; looking up an unknown
name raises a ConfigError listing the valid names. Built-in plugins live in modules that are
imported on the first lookup, so heavy dependencies stay out of ``autoprune --help``.
"""
from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from typing import Generic, TypeVar

from autoprune.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A name -> object table for one kind of plugin (e.g. ``AGENTS``)."""

    def __init__(self, kind: str, builtin_modules: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._pending = list(builtin_modules)

    def _load_builtins(self) -> None:
        while self._pending:
            importlib.import_module(self._pending.pop(0))

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: ``@AGENTS.register("tpe")`` over a class or factory."""

        def add(obj: T) -> T:
            if name in self._items and self._items[name] is not obj:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def get(self, name: str, *, where: str = "") -> T:
        """The object registered as ``name``; ConfigError naming the valid names otherwise."""
        self._load_builtins()
        try:
            return self._items[name]
        except KeyError:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}unknown {self.kind} {name!r}; valid: {', '.join(sorted(self._items))}"
            ) from None

    def names(self) -> list[str]:
        self._load_builtins()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
