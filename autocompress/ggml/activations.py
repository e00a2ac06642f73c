"""What llama.cpp's CPU backend does to the activation operand of a matrix product, in torch.

Before ``W @ x`` with a quantized ``W``, ggml converts each row of ``x`` (one token's inputs) to the
weight's ``vec_dot`` type (see types.py) and multiplies in that form. ``emulate`` returns the values
that operand holds, float32, same shape as ``x``:

- Q8_0 / Q8_1: blocks of 32, ``d = amax / 127`` stored as fp16, ``q = round(x * id)``; value
  ``q * fp16(d)``. How ``id`` and the rounding are computed depends on the host's SIMD code
  (``VARIANTS``): ggml-quants.c's reference uses ``id = 1/d`` and ``roundf`` (ties away from zero);
  x86 AVX/AVX2/AVX512 (ggml-cpu/arch/x86/quants.c) uses ``id = 127/amax`` and ties to even; ARM NEON
  uses ``id = 1/d`` and ties to even. Q8_1 also stores ``s = fp16(d * sum(q))`` with the float32
  ``d``; Q4_1/Q5_1 dot products use it for the offset term, which values alone emulate to ~2^-11.
- Q8_K: blocks of 256, float32 ``d = 1 / (-127 / max)`` where ``max`` is the signed value of largest
  magnitude, ``q = min(127, round_half_even(x * -127 / max))``; value ``d * q`` (every host: reference).
- F16: fp16 rounding (nearest even). F32: unchanged.
"""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass

import torch

from autocompress.errors import ConfigError

from .types import GGMLType, ggml_type, vec_dot_type


@dataclass(frozen=True)
class Q8Rule:
    """How one implementation of ggml's 8-bit activation quantizer scales and rounds."""

    inverse: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (amax, d) -> id
    round: Callable[[torch.Tensor], torch.Tensor]


def _round_half_away(v: torch.Tensor) -> torch.Tensor:
    """C's ``roundf``: ties away from zero, exactly (no ``floor(x + 0.5)`` double rounding)."""
    whole = torch.trunc(v)
    return whole + torch.sign(v) * ((v - whole).abs() >= 0.5)


def _divide(numerator: float, t: torch.Tensor) -> torch.Tensor:
    """``numerator / t`` correctly rounded, 0 where ``t == 0`` (torch's ``scalar / tensor`` multiplies
    by a rounded reciprocal: two roundings, not C's one)."""
    safe = torch.where(t != 0, t, 1.0)
    return torch.where(t != 0, torch.full_like(t, numerator).div(safe), 0.0)


def _one_over_d(amax: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return _divide(1.0, d)


def _127_over_amax(amax: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return _divide(127.0, amax)


VARIANTS: dict[str, Q8Rule] = {
    "ref": Q8Rule(_one_over_d, _round_half_away),
    "x86": Q8Rule(_127_over_amax, torch.round),
    "arm": Q8Rule(_one_over_d, torch.round),
}
_HOST = {"x86_64": "x86", "amd64": "x86", "i686": "x86", "i386": "x86", "aarch64": "arm", "arm64": "arm"}


def host_variant() -> str:
    """The variant of this machine's llama.cpp CPU build (by architecture; ``ref`` when unknown)."""
    return _HOST.get(platform.machine().lower(), "ref")


def _blocks(x: torch.Tensor, size: int, name: str) -> torch.Tensor:
    if x.shape[-1] % size:
        raise ConfigError("activations", f"last dimension {x.shape[-1]} is not a multiple of {name}'s block of {size}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // size, size)


def _q8_0(x: torch.Tensor, rule: Q8Rule) -> torch.Tensor:
    xb = _blocks(x, 32, "Q8_0")
    amax = xb.abs().amax(dim=-1, keepdim=True)
    d = amax.div(torch.full_like(amax, 127.0))
    q = rule.round(xb * rule.inverse(amax, d)) + 0.0  # + 0.0: an int8 has no -0
    return (q * d.half().float()).reshape(x.shape)


def _q8_k(x: torch.Tensor, rule: Q8Rule) -> torch.Tensor:
    xb = _blocks(x, 256, "Q8_K")
    at = xb.abs().argmax(dim=-1, keepdim=True)  # first index of the largest magnitude, as ggml's scan
    signed_max = xb.gather(-1, at)
    iscale = _divide(-127.0, signed_max)
    q = torch.round(iscale * xb).clamp(max=127) + 0.0  # ggml's nearest_int: ties to even
    return (_divide(1.0, iscale) * q).reshape(x.shape)


_EMULATORS: dict[str, Callable[[torch.Tensor, Q8Rule], torch.Tensor]] = {
    "Q8_0": _q8_0,
    "Q8_1": _q8_0,  # the same values; see the module docstring for its sums
    "Q8_K": _q8_k,
    "F16": lambda x, rule: x.half().float(),
    "F32": lambda x, rule: x,
}


def emulate(x: torch.Tensor, type: str | GGMLType, variant: str | None = None) -> torch.Tensor:
    """``x [..., cols]`` as llama.cpp holds it after converting to activation type ``type``, float32."""
    spec = ggml_type(type, "activation type", weights_only=False)
    if spec.name not in _EMULATORS:
        raise ConfigError("activation type", f"{spec.name} is no activation type; allowed: {', '.join(_EMULATORS)}")
    variant = variant or host_variant()
    if variant not in VARIANTS:
        raise ConfigError("variant", f"unknown {variant!r}; allowed: {', '.join(VARIANTS)}")
    return _EMULATORS[spec.name](torch.as_tensor(x).to(torch.float32), VARIANTS[variant])


def for_weight(x: torch.Tensor, weight_type: str | GGMLType, variant: str | None = None) -> torch.Tensor:
    """The activation operand of a product with a ``weight_type`` weight (its ``vec_dot`` type)."""
    return emulate(x, vec_dot_type(weight_type), variant)
