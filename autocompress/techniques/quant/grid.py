"""The integer grid shared by every weight method: per-group scale/zero, quantize-dequantize.

A group is a run of ``group_size`` consecutive input columns of one output row (``group_size`` 0 =
the whole row). Symmetric: ``scale = max|w| / (2^(b-1) - 1)``, integers in ``[-2^(b-1), 2^(b-1) - 1]``,
zero 0. Asymmetric: ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)``, integers in
``[0, 2^b - 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from autocompress.errors import ConfigError
from autocompress.models.annotations import WeightGrid

SUPPORTED_BITS = (2, 3, 4, 8, 16)


@dataclass(frozen=True)
class QuantFormat:
    """How one weight is stored: bits, group size (0 = per output channel), symmetric or not."""

    bits: int
    group_size: int
    symmetric: bool = True

    def group_for(self, cols: int) -> int:
        """The effective group width for a weight with ``cols`` input columns."""
        return cols if self.group_size == 0 or self.group_size >= cols else self.group_size

    def label(self) -> str:
        return f"w{self.bits}g{self.group_size}{'' if self.symmetric else 'a'}"


def check_format(fmt: QuantFormat, name: str, cols: int, field: str = "quantize.group_size") -> None:
    """A clear error for a bit width we have no grid for or a group that does not tile the width."""
    if fmt.bits not in SUPPORTED_BITS:
        allowed = ", ".join(map(str, SUPPORTED_BITS))
        raise ConfigError("quantize.bits", f"{fmt.bits} is not supported; allowed: {allowed}")
    if 0 < fmt.group_size < cols and cols % fmt.group_size:
        raise ConfigError(field, f"{fmt.group_size} does not divide the input width {cols} of {name}")


def int_range(bits: int, symmetric: bool) -> tuple[int, int]:
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if symmetric else (0, 2**bits - 1)


def find_grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point over the last dimension of ``w`` (one pair per leading index)."""
    if symmetric:
        scale = (w.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)).clamp(min=1e-12)
        return scale, torch.zeros_like(scale)
    lo = w.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-12)
    return scale, torch.round(-lo / scale)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round onto the integer grid and map back to floats."""
    qmin, qmax = int_range(bits, symmetric)
    return (torch.clamp(torch.round(w / scale) + zero, qmin, qmax) - zero) * scale


def grouped(weight: torch.Tensor, group: int) -> torch.Tensor:
    """``[rows, cols]`` -> ``[rows, cols // group, group]`` (float32)."""
    rows, cols = weight.shape
    return weight.reshape(rows, cols // group, group).to(torch.float32)


class Quantized(NamedTuple):
    """A method's result for one weight: the effective float values and the grid they lie on
    (``None`` at 16 bits, which is plain fp16 rounding)."""

    weight: torch.Tensor
    grid: WeightGrid | None


def make_grid(scale: torch.Tensor, zero: torch.Tensor, fmt: QuantFormat, group: int,
              input_scale: torch.Tensor | None = None) -> WeightGrid:
    """Record ``[out, groups(, 1)]`` scales and zero points as a :class:`WeightGrid`."""
    rows = scale.shape[0]
    return WeightGrid(scale.reshape(rows, -1).to(torch.float32).contiguous(),
                      zero.reshape(rows, -1).to(torch.float32).contiguous(), fmt.bits, group, fmt.symmetric,
                      None if input_scale is None else input_scale.to(torch.float32).contiguous())


def rtn_grid(weight: torch.Tensor, fmt: QuantFormat) -> Quantized:
    """Round-to-nearest quantize-dequantize of a ``[out, in]`` weight, with its grid."""
    if fmt.bits == 16:
        return Quantized(weight.to(torch.float16).to(weight.dtype), None)
    group = fmt.group_for(weight.shape[1])
    w = grouped(weight, group)
    scale, zero = find_grid(w, fmt.bits, fmt.symmetric)
    out = fake_quant(w, scale, zero, fmt.bits, fmt.symmetric).reshape(weight.shape).to(weight.dtype)
    return Quantized(out, make_grid(scale, zero, fmt, group))


def rtn(weight: torch.Tensor, fmt: QuantFormat) -> torch.Tensor:
    """Round-to-nearest quantize-dequantize of a ``[out, in]`` weight; 16 bits = fp16 rounding."""
    return rtn_grid(weight, fmt).weight


def output_error(weight: torch.Tensor, approx: torch.Tensor, hessian: torch.Tensor) -> torch.Tensor:
    """Mean squared layer-output error per token: ``tr(dW H dW^T)`` with ``H = E[x x^T]``
    (GPTQ's objective, exact for the calibration inputs that ``H`` summarises)."""
    delta = (approx - weight).to(torch.float32)
    return ((delta @ hessian) * delta).sum()
