"""The integer grid shared by every weight method: per-group scale/zero, quantize-dequantize.

A group is a run of ``group_size`` consecutive input columns of one output row (``group_size`` 0 =
the whole row). Symmetric: ``scale = max|w| / (2^(b-1) - 1)``, integers in ``[-2^(b-1), 2^(b-1) - 1]``,
zero 0. Asymmetric: ``scale = (max - min) / (2^b - 1)``, ``zero = round(-min / scale)``, integers in
``[0, 2^b - 1]``.

``grid="gguf"`` puts the same integers on llama.cpp's block grids instead (:func:`gguf_grid`), so a GGUF
export stores a method's codes and scales verbatim.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from autocompress.errors import ConfigError
from autocompress.models.annotations import WeightGrid, int_range

SUPPORTED_BITS = (2, 3, 4, 8, 16)


@dataclass(frozen=True)
class QuantFormat:
    """How one weight is stored: bits, group size (0 = per output channel), symmetric or not."""

    bits: int
    group_size: int
    symmetric: bool = True
    grid: str = "default"  # "gguf": llama.cpp's Q8_0 / Q4_0 / Q4_1 block grids (see gguf_grid)

    def group_for(self, cols: int) -> int:
        """The effective group width for a weight with ``cols`` input columns."""
        return cols if self.group_size == 0 or self.group_size >= cols else self.group_size

    def label(self) -> str:
        grid = "" if self.grid == "default" else "-" + self.grid
        return f"w{self.bits}g{self.group_size}{'' if self.symmetric else 'a'}{grid}"


def check_format(fmt: QuantFormat, name: str, cols: int, field: str = "quantize.group_size") -> None:
    """A clear error for a bit width we have no grid for or a group that does not tile the width."""
    if fmt.bits not in SUPPORTED_BITS:
        allowed = ", ".join(map(str, SUPPORTED_BITS))
        raise ConfigError("quantize.bits", f"{fmt.bits} is not supported; allowed: {allowed}")
    if fmt.bits < 16 and 0 < fmt.group_size < cols and cols % fmt.group_size:  # 16 bits: fp16, no groups
        raise ConfigError(field, f"{fmt.group_size} does not divide the input width {cols} of {name}")


def find_grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point over the last dimension of ``w`` (one pair per leading index)."""
    if symmetric:
        scale = (w.abs().amax(dim=-1, keepdim=True) / (2 ** (bits - 1) - 1)).clamp(min=1e-12)
        return scale, torch.zeros_like(scale)
    lo = w.amin(dim=-1, keepdim=True).clamp(max=0)
    hi = w.amax(dim=-1, keepdim=True).clamp(min=0)
    scale = ((hi - lo) / (2**bits - 1)).clamp(min=1e-12)
    return scale, torch.round(-lo / scale)


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _significant_bits(x: torch.Tensor, bits: torch.Tensor) -> torch.Tensor:
    """``x`` rounded to ``bits`` significant binary digits (elementwise)."""
    mantissa, exponent = torch.frexp(x)
    return torch.ldexp(torch.round(torch.ldexp(mantissa, bits)), exponent - bits)


def gguf_grid(w: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """llama.cpp's block grids over the last dimension of ``w`` (a block of 32 in practice); scales are
    fp16 numbers and codes are rounded against them, so what llama.cpp dequantizes is what we computed.

    - 8 bits (Q8_0): ``scale = amax / 127``.
    - 4 bits symmetric (Q4_0): ``scale = v / -8`` with ``v`` the value of largest magnitude, so ``v``
      is code -8 exactly and the other side reaches 7 (16 levels, not 15).
    - 4 bits asymmetric (Q4_1, ``w = q d + m``): the default asymmetric grid with ``d`` rounded to
      ``11 - bitlength(zero)`` significant bits, so that ``m = -zero * d`` is an exact fp16 number and
      ``q d + m == (q - zero) d`` bit for bit (the costs: ``d`` up to 2^-8 coarser than needed).
    """
    if bits == 8 and symmetric:
        scale = _fp16(w.abs().amax(dim=-1, keepdim=True) / 127)
        zero = torch.zeros_like(scale)
    elif bits == 4 and symmetric:
        extreme = torch.gather(w, -1, w.abs().argmax(dim=-1, keepdim=True))
        scale = _fp16(extreme / -8)
        zero = torch.zeros_like(scale)
    elif bits == 4:
        lo = w.amin(dim=-1, keepdim=True).clamp(max=0)
        hi = w.amax(dim=-1, keepdim=True).clamp(min=0)
        d = (hi - lo) / 15
        zero = torch.round(-lo / torch.where(d == 0, 1.0, d)).clamp(0, 15)
        length = torch.where(zero > 0, torch.floor(torch.log2(zero.clamp(min=1))) + 1, 0).to(torch.int32)
        scale = _fp16(_significant_bits(d, 11 - length))
    else:
        raise ConfigError(
            "quantize.grid",
            f"gguf has no block grid for {bits}-bit "
            f"{'symmetric' if symmetric else 'asymmetric'} weights; "
            "allowed: 8-bit symmetric (Q8_0), 4-bit (Q4_0, Q4_1)",
        )
    return torch.where(scale == 0, 1.0, scale), zero  # an all-zero block: any scale gives codes 0


GRIDS = {"default": find_grid, "gguf": gguf_grid}


def format_grid(w: torch.Tensor, fmt: QuantFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point of ``fmt``'s grid over the last dimension of ``w``."""
    return GRIDS[fmt.grid](w, fmt.bits, fmt.symmetric)


def fake_quant(w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """Round onto the integer grid and map back to floats."""
    qmin, qmax = int_range(bits, symmetric)
    return (torch.clamp(torch.round(w / scale) + zero, qmin, qmax) - zero) * scale


def straight_through(x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
    """``rounded`` in the forward (exactly: ``x - x.detach()`` is 0) with the identity gradient to ``x``
    (the straight-through estimator): rounding inside a model that is being trained (QAT)."""
    return rounded if not x.requires_grad else rounded.detach() + (x - x.detach())


def grouped(weight: torch.Tensor, group: int) -> torch.Tensor:
    """``[rows, cols]`` -> ``[rows, cols // group, group]`` (float32)."""
    rows, cols = weight.shape
    return weight.reshape(rows, cols // group, group).to(torch.float32)


class Quantized(NamedTuple):
    """A method's result for one weight: the effective float values and the grid they lie on
    (``None`` at 16 bits, which is plain fp16 rounding)."""

    weight: torch.Tensor
    grid: WeightGrid | None


def make_grid(
    scale: torch.Tensor, zero: torch.Tensor, fmt: QuantFormat, group: int, input_scale: torch.Tensor | None = None
) -> WeightGrid:
    """Record ``[out, groups(, 1)]`` scales and zero points as a :class:`WeightGrid`."""
    rows = scale.shape[0]
    return WeightGrid(
        scale.reshape(rows, -1).to(torch.float32).contiguous(),
        zero.reshape(rows, -1).to(torch.float32).contiguous(),
        fmt.bits,
        group,
        fmt.symmetric,
        None if input_scale is None else input_scale.to(torch.float32).contiguous(),
    )


def rtn_grid(weight: torch.Tensor, fmt: QuantFormat) -> Quantized:
    """Round-to-nearest quantize-dequantize of a ``[out, in]`` weight, with its grid."""
    if fmt.bits == 16:
        return Quantized(weight.to(torch.float16).to(weight.dtype), None)
    group = fmt.group_for(weight.shape[1])
    w = grouped(weight, group)
    scale, zero = format_grid(w, fmt)
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
