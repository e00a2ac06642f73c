"""Technique names reserved for later issues: using one is a clear 'not yet available' error."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from torch import nn

from autocompress.errors import NotYetAvailableError
from autocompress.techniques.base import Technique, register_technique

PLANNED: dict[str, str] = {}  # name -> what will arrive (none at present)


def _reserved(technique: str, what: str) -> type[Technique]:
    class Reserved(Technique):
        name = technique
        Params = BaseModel
        planned = what

        def apply(self, model: nn.Module, params: BaseModel, ctx: Any) -> nn.Module:
            raise NotYetAvailableError(f"technique {technique!r} is not yet available")

    Reserved.__name__ = f"Reserved_{technique}"
    return Reserved


for _name, _what in PLANNED.items():
    register_technique(_reserved(_name, _what))
