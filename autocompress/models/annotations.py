"""What a technique did to a model's storage format, recorded on the model itself.

Fake-quantized weights are still float tensors; the hardware model needs to know the
format they would be stored in on the device: each weight's format and grid (on its module) and
the KV cache's bits (on the model). Techniques record them here; profiles read them here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

DEFAULT_BITS = 16  # what an uncompressed weight costs on an edge runtime (fp16)
_ATTR = "_autocompress_weight_format"


@dataclass(frozen=True)
class WeightFormat:
    bits: int = DEFAULT_BITS
    group_size: int | None = None  # None = per output channel (or not quantized)
    symmetric: bool = True


def set_weight_format(module: nn.Module, fmt: WeightFormat) -> None:
    setattr(module, _ATTR, fmt)


def weight_format(module: nn.Module) -> WeightFormat:
    return getattr(module, _ATTR, WeightFormat())


_GRID_ATTR = "_autocompress_weight_grid"
_KV_ATTR = "_autocompress_kv_bits"


def set_kv_bits(model: nn.Module, bits: int) -> None:
    """Record that the model's attention sees its K/V cache at ``bits``."""
    setattr(model, _KV_ATTR, bits)


def kv_bits(model: nn.Module) -> int:
    """The KV-cache bits recorded on a model (16 when not quantized)."""
    return getattr(model, _KV_ATTR, DEFAULT_BITS)


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """The integers a ``bits``-wide code takes: signed when symmetric, else unsigned."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


@dataclass(frozen=True, eq=False)
class WeightGrid:
    """The integer grid a quantized weight lies on, so exports and QAT can recover its codes exactly.

    Columns are split into groups of ``group``; group ``g`` of row ``r`` stores integers ``q`` with
    ``weight = (q - zero[r, g]) * scale[r, g] / input_scale`` (``input_scale``: AWQ's per-input-channel
    scale, whose inverse a runtime folds into the op before; ``None`` when there is none).
    ``dequantize(codes(w))`` reproduces ``w`` bit for bit: it repeats the quantizer's float operations.
    """

    scale: torch.Tensor  # [out, in // group], float32
    zero: torch.Tensor  # [out, in // group], float32 holding integers (all 0 when symmetric)
    bits: int
    group: int
    symmetric: bool
    input_scale: torch.Tensor | None = None  # [in], float32

    @property
    def int_range(self) -> tuple[int, int]:
        return int_range(self.bits, self.symmetric)

    def _grouped(self, t: torch.Tensor) -> torch.Tensor:
        rows, cols = t.shape
        return t.reshape(rows, cols // self.group, self.group)

    def codes(self, weight: torch.Tensor) -> torch.Tensor:
        """The integers (int32, shape of ``weight``) that ``weight`` stores on this grid."""
        w = weight.to(torch.float32)
        if self.input_scale is not None:
            w = w * self.input_scale
        q = torch.round(self._grouped(w) / self.scale[..., None]) + self.zero[..., None]
        return q.clamp(*self.int_range).reshape(weight.shape).to(torch.int32)

    def dequantize(self, codes: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Float weights from ``codes``, by the quantizer's own operations (exact)."""
        w = (self._grouped(codes.to(torch.float32)) - self.zero[..., None]) * self.scale[..., None]
        w = w.reshape(codes.shape)
        if self.input_scale is not None:
            w = w / self.input_scale
        return w.to(dtype)


def set_weight_grid(module: nn.Module, grid: WeightGrid | None) -> None:
    setattr(module, _GRID_ATTR, grid)


def weight_grid(module: nn.Module) -> WeightGrid | None:
    return getattr(module, _GRID_ATTR, None)


_PACKED_ATTR = "_autocompress_ggml_packed"


@dataclass(frozen=True, eq=False)
class PackedWeight:
    """A weight stored in a llama.cpp type: its packed bytes are what a GGUF file holds, and the module's
    float weight is exactly their dequantization (``autocompress.ggml.native.dequantize``)."""

    type: str  # ggml type name, e.g. "Q4_K"
    packed: torch.Tensor  # uint8 [rows, row_bytes]


def set_packed_weight(module: nn.Module, packed: PackedWeight | None) -> None:
    setattr(module, _PACKED_ATTR, packed)


def packed_weight(module: nn.Module) -> PackedWeight | None:
    return getattr(module, _PACKED_ATTR, None)


_KV_TYPE_ATTR = "_autocompress_kv_type"


def set_kv_type(model: nn.Module, kv_type: str | None) -> None:
    """Record the llama.cpp KV-cache type (f16, q8_0, q4_0) the model is meant to run with."""
    setattr(model, _KV_TYPE_ATTR, kv_type)


def kv_type(model: nn.Module) -> str | None:
    return getattr(model, _KV_TYPE_ATTR, None)
