"""The Technique protocol and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from torch import nn

from autocompress.errors import NotYetAvailableError
from autocompress.registry import Registry
from autocompress.validation import parse

if TYPE_CHECKING:
    from autocompress.context import CompressionContext


class Technique(ABC):
    """One compression transform. ``Params`` names everything it needs; ``apply`` edits in place."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    planned: ClassVar[str | None] = None  # set on reserved names: what will arrive, and where

    @classmethod
    def parse_params(cls, params: dict[str, Any], field: str) -> BaseModel:
        return parse(cls.Params, params, field)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        """A short summary for tables: the params that differ from the defaults."""
        defaults = cls.Params().model_dump(mode="json")
        changed = ", ".join(f"{k}={v}" for k, v in params.items() if defaults.get(k) != v)
        return f"{cls.name}({changed})"

    @abstractmethod
    def apply(self, model: nn.Module, params: BaseModel, ctx: "CompressionContext") -> nn.Module:
        """Compress ``model`` (in place where possible) and return it."""


TECHNIQUES: Registry[type[Technique]] = Registry("technique", "autocompress.techniques")


def register_technique(cls: type[Technique]) -> type[Technique]:
    return TECHNIQUES.register(cls)


def require_technique(name: str, field: str) -> type[Technique]:
    """The technique registered as ``name``; a clear error if unknown or not yet available."""
    technique = TECHNIQUES.get(name, field=field)
    if technique.planned:
        raise NotYetAvailableError(f"{field}: technique {name!r} ({technique.planned}) is not yet available; "
                                   f"available: {', '.join(n for n in TECHNIQUES if not TECHNIQUES[n].planned)}")
    return technique
