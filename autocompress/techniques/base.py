"""The Technique protocol and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel
from torch import nn

from autocompress.registry import Registry
from autocompress.validation import parse

if TYPE_CHECKING:
    from autocompress.context import CompressionContext


class Technique(ABC):
    """One compression transform. ``Params`` names everything it needs; ``apply`` edits in place."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]

    @classmethod
    def parse_params(cls, params: dict[str, Any], field: str) -> BaseModel:
        return parse(cls.Params, params, field)

    @abstractmethod
    def apply(self, model: nn.Module, params: BaseModel, ctx: "CompressionContext") -> nn.Module:
        """Compress ``model`` (in place where possible) and return it."""


TECHNIQUES: Registry[type[Technique]] = Registry("technique", "autocompress.techniques")


def register_technique(cls: type[Technique]) -> type[Technique]:
    return TECHNIQUES.register(cls)
