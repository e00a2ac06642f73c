"""Name -> class registries, so dispatch never needs an if-chain over strings."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Iterator
from importlib.metadata import entry_points
from typing import Generic, TypeVar

from autocompress.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """A mapping from names to registered classes, with optional entry-point plugins."""

    def __init__(self, kind: str, entry_point_group: str | None = None):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._entry_point_group = entry_point_group
        self._plugins_loaded = entry_point_group is None

    def register(self, obj: T, name: str | None = None) -> T:
        key = name or getattr(obj, "name")  # noqa: B009 - T declares no attribute; registered classes have one
        if key in self._entries:
            raise ValueError(f"{self.kind} {key!r} is registered twice")
        self._entries[key] = obj
        return obj

    def decorator(self) -> Callable[[T], T]:
        return lambda obj: self.register(obj)

    def _load_plugins(self) -> None:
        """Entry points of installed packages, then modules named in ``$AUTOCOMPRESS_PLUGINS``."""
        group = self._entry_point_group
        if self._plugins_loaded or group is None:  # None: a registry without plugins (loaded from the start)
            return
        self._plugins_loaded = True
        for module in filter(None, os.environ.get("AUTOCOMPRESS_PLUGINS", "").split(",")):
            importlib.import_module(module.strip())  # registers itself on import
        for ep in entry_points(group=group):
            if ep.name not in self._entries:
                self.register(ep.load(), ep.name)

    def get(self, name: str, field: str | None = None) -> T:
        self._load_plugins()
        try:
            return self._entries[name]
        except KeyError:
            allowed = ", ".join(sorted(self._entries))
            raise ConfigError(field or self.kind, f"unknown {self.kind} {name!r}; allowed: {allowed}") from None

    def known(self, name: str, what: str | None = None) -> str:
        """``name`` if it is registered, else a ValueError naming the allowed ones (for pydantic validators);
        ``what`` names the thing in the message (default: the registry's kind)."""
        if name not in self:
            raise ValueError(f"unknown {what or self.kind} {name!r}; allowed: {', '.join(self)}")
        return name

    def __getitem__(self, name: str) -> T:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        self._load_plugins()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        self._load_plugins()
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        return list(self)
