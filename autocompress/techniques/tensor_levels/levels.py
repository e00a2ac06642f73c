"""Levels: how one tensor is compressed, written ``method/TYPE`` (e.g. ``imatrix/Q4_0``, ``gptq/IQ4_NL``).

A level's result is the tensor's packed bytes in a llama.cpp weight type (:mod:`autocompress.ggml`), so a
GGUF file stores exactly what the search evaluated. Methods, chosen by name from :data:`LEVEL_METHODS`:

- ``rtn``: llama.cpp's own quantizer without an importance matrix (what llama.cpp's presets do);
- ``imatrix``: llama.cpp's quantizer weighted by the calibration's per-column mean of x^2 (llama.cpp's
  ``--imatrix``, computed from our calibration text);
- ``gptq``: GPTQ error compensation (Frantar et al., 2023) on the fixed grid of the ``imatrix`` result: its
  scales are kept and every code is re-chosen column by column with the input Hessian.

A bare type (``Q8_0``, ``F16``) means ``rtn``; ``F16``/``F32`` take no method.
"""

from __future__ import annotations

import builtins
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch

from autocompress.errors import ConfigError
from autocompress.ggml import GGMLType, ggml_type, native
from autocompress.ggml.grid import Grid
from autocompress.registry import Registry
from autocompress.techniques.tensor_levels.gptq_grid import gptq_on_grid

_LEVEL = re.compile(r"^(?:([a-z][a-z0-9_]*)/)?([A-Za-z0-9_]+)$")


@dataclass(frozen=True)
class TensorInputs:
    """What a level method may read about one tensor's input on the calibration text."""

    hessian: torch.Tensor  # [cols, cols], mean of x x^T
    importance: torch.Tensor  # [cols], mean of x^2 (llama.cpp's imatrix)


class LevelMethod(ABC):
    """One way of compressing a tensor to a packed ggml type."""

    name: ClassVar[str]
    needs_inputs: ClassVar[bool] = True
    version: ClassVar[str] = "1"  # bump when the result changes (invalidates stored entries)

    @abstractmethod
    def compress(self, weight: torch.Tensor, type: GGMLType, inputs: TensorInputs | None) -> torch.Tensor:
        """The packed bytes ``uint8 [rows, row_bytes]`` of ``weight`` in ``type``."""


LEVEL_METHODS: Registry[type[LevelMethod]] = Registry("level method")


@LEVEL_METHODS.decorator()
class RoundToNearest(LevelMethod):
    """llama.cpp's quantizer without importance: the presets' choice."""

    name = "rtn"
    needs_inputs = False

    def compress(self, weight, type, inputs):
        return native.quantize(weight, type)


@LEVEL_METHODS.decorator()
class Imatrix(LevelMethod):
    """llama.cpp's quantizer with the calibration's importance (mean x^2 per input column)."""

    name = "imatrix"

    def compress(self, weight, type, inputs):
        return native.quantize(weight, type, inputs.importance if type.quantized else None)


@LEVEL_METHODS.decorator()
class GPTQ(LevelMethod):
    """GPTQ on the fixed grid of the ``imatrix`` result (scales kept, codes re-chosen)."""

    name = "gptq"

    def compress(self, weight, type, inputs):
        if not type.quantized:
            return native.quantize(weight, type)
        grid = Grid.quantize(weight, type, inputs.importance)
        return grid.encode(gptq_on_grid(weight, inputs.hessian, grid))


@dataclass(frozen=True)
class Level:
    """A parsed level: method and ggml type."""

    method: str
    type: GGMLType

    @property
    def name(self) -> str:
        return self.type.name if not self.type.quantized else f"{self.method}/{self.type.name}"

    @property
    def method_class(self) -> builtins.type[LevelMethod]:
        return LEVEL_METHODS[self.method]

    def compress(self, weight: torch.Tensor, inputs: TensorInputs | None) -> torch.Tensor:
        return self.method_class().compress(weight, self.type, inputs)

    def __str__(self) -> str:
        return self.name


def parse_level(text: str, field: str = "level") -> Level:
    """``method/TYPE`` or a bare type (rtn); a one-line error naming ``field`` otherwise."""
    match = _LEVEL.match(str(text).strip())
    if not match:
        raise ConfigError(field, f"{text!r} is not a level; write method/TYPE, e.g. imatrix/Q4_0 or gptq/Q5_0")
    method, type_name = match.groups()
    spec = ggml_type(type_name.upper(), field)
    if not spec.quantized:
        if method not in (None, "rtn"):
            raise ConfigError(field, f"{spec.name} is not quantized; write it without a method")
        return Level("rtn", spec)
    method = method or "rtn"
    if method not in LEVEL_METHODS:
        raise ConfigError(field, f"unknown level method {method!r}; allowed: {', '.join(LEVEL_METHODS)}")
    return Level(method, spec)


def level_name(text: str, field: str = "level") -> str:
    """The canonical spelling of a level (for pydantic validators and dictionary keys)."""
    return parse_level(text, field).name
