"""Where each weight's code and each block's scales sit in the bytes of a ggml block.

A ``Layout`` describes one type declaratively: the bit fields that hold a weight's code (element ->
byte, bit shift, width), the code -> level map (consecutive integers, or IQ4_NL's codebook), and a
parser that reads every group's scale and offset from the block bytes. The value of a weight is
``level[code] * scale (+ offset)`` in float32, the very operations (and order) of ggml's
``dequantize_row_*``: the products are exact (fp16 scale x small integer), so the only rounding is
the final addition, which a fused multiply-add would round the same way.

The formats follow ggml-common.h's ``block_*`` structs and ggml-quants.c's dequantizers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
from gguf.quants import IQ4_NL as _GGUF_IQ4_NL

from autocompress.errors import ConfigError

from .types import GGMLType, ggml_type

Params = Callable[[np.ndarray], "tuple[np.ndarray, np.ndarray | None]"]  # blocks -> scale, offset


@dataclass(frozen=True, eq=False)
class Field:
    """Bits ``[code_shift, code_shift + width)`` of weight ``e``'s code are stored, xor ``flip``,
    at bits ``[shift[e], shift[e] + width)`` of byte ``byte[e]`` of its block."""

    byte: np.ndarray
    shift: np.ndarray
    width: int
    code_shift: int = 0
    flip: int = 0

    @property
    def mask(self) -> int:
        return (1 << self.width) - 1

    @cached_property
    def ranks(self) -> list[np.ndarray]:
        """The elements split into sets whose bytes are distinct (for gather/scatter without clashes)."""
        seen: dict[int, int] = {}
        rank = np.empty(len(self.byte), dtype=np.int64)
        for e, b in enumerate(self.byte.tolist()):
            rank[e] = seen.get(b, 0)
            seen[b] = rank[e] + 1
        return [np.flatnonzero(rank == r) for r in range(int(rank.max()) + 1)]


@dataclass(frozen=True, eq=False)
class Layout:
    """One type's packing: code fields, code -> level map, weights per scale, scale parser."""

    type: GGMLType
    fields: tuple[Field, ...]
    levels: np.ndarray  # float32 [n_codes]: the integer level (or codebook entry) of each code
    group: int  # weights sharing one scale/offset
    params: Params  # blocks uint8 [n, block_bytes] -> (scale, offset|None) float32 [n, block // group]
    uniform: bool = True  # levels are consecutive integers (else a codebook)
    code_mask: np.ndarray = field(init=False, repr=False)  # uint8 [block_bytes]: bits that hold codes

    def __post_init__(self) -> None:
        mask = np.zeros(self.type.block_bytes, dtype=np.uint8)
        for f in self.fields:
            np.bitwise_or.at(mask, f.byte, (f.mask << f.shift).astype(np.uint8))
        object.__setattr__(self, "code_mask", mask)

    @property
    def n_codes(self) -> int:
        return len(self.levels)

    @property
    def zero(self) -> int:
        """The code of level 0 for uniform layouts (levels are ``code - zero``)."""
        return int(-self.levels[0])


# ---- helpers over the bytes of many blocks (numpy, [n_blocks, block_bytes] uint8) ----------------


def _f16(blocks: np.ndarray, at: int) -> np.ndarray:
    """The fp16 at byte ``at`` of each block, as float32 [n, 1]."""
    return np.ascontiguousarray(blocks[:, at : at + 2]).view(np.float16).astype(np.float32)


def _int_levels(lo: int, hi: int) -> np.ndarray:
    return np.arange(lo, hi + 1, dtype=np.float32)


def _scale_only(d_at: int) -> Params:
    return lambda blocks: (_f16(blocks, d_at), None)


def _scale_min(d_at: int, m_at: int) -> Params:
    return lambda blocks: (_f16(blocks, d_at), _f16(blocks, m_at))


def _q2_k_params(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sc = blocks[:, 0:16]
    d, dmin = _f16(blocks, 80), _f16(blocks, 82)
    return d * (sc & 0xF).astype(np.float32), -(dmin * (sc >> 4).astype(np.float32))


def _q3_k_params(blocks: np.ndarray) -> tuple[np.ndarray, None]:
    raw = blocks[:, 96:108]
    s = np.arange(16)
    low = np.where(s < 8, raw[:, s % 8] & 0xF, raw[:, s % 8] >> 4)  # bytes 0..7: low nibble, then high
    high = (raw[:, 8 + s % 4] >> (2 * (s // 4))) & 3  # bytes 8..11: 2 bits per scale
    scales = (low | (high << 4)).astype(np.float32) - 32
    return _f16(blocks, 108) * scales, None


def _k4_scale_min(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ggml's ``get_scale_min_k4`` for all 8 sub-blocks: 6-bit scales and mins in 12 bytes."""
    j = np.arange(4)
    sc = np.concatenate([raw[:, j] & 63, (raw[:, j + 8] & 0xF) | ((raw[:, j] >> 6) << 4)], axis=1)
    mn = np.concatenate([raw[:, j + 4] & 63, (raw[:, j + 8] >> 4) | ((raw[:, j + 4] >> 6) << 4)], axis=1)
    return sc.astype(np.float32), mn.astype(np.float32)


def _q45_k_params(blocks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sc, mn = _k4_scale_min(blocks[:, 4:16])
    return _f16(blocks, 0) * sc, -(_f16(blocks, 2) * mn)


def _q6_k_params(blocks: np.ndarray) -> tuple[np.ndarray, None]:
    sc = np.ascontiguousarray(blocks[:, 192:208]).view(np.int8).astype(np.float32)
    return _f16(blocks, 208) * sc, None


# ---- code fields ------------------------------------------------------------------------------

_E32, _E256 = np.arange(32), np.arange(256)


def _nibbles32(at: int) -> Field:
    """Legacy 32-blocks: weight j in the low nibble of byte j, weight j+16 in the high nibble."""
    return Field(at + _E32 % 16, 4 * (_E32 // 16), 4)


def _high_bits32(at: int) -> Field:
    """Q5_0/Q5_1: the fifth bit of weight j is bit j of a little-endian uint32."""
    return Field(at + _E32 // 8, _E32 % 8, 1, code_shift=4)


def _k_pairs(at: int) -> Field:
    """Q2_K/Q3_K low bits: per 128 weights, 32 bytes; weight 32j+l in bits 2j of byte l."""
    n, j, lane = _E256 // 128, (_E256 % 128) // 32, _E256 % 32
    return Field(at + 32 * n + lane, 2 * j, 2)


def _k_nibbles(at: int) -> Field:
    """Q4_K/Q5_K low bits: per 64 weights, 32 bytes; low nibbles first, then high nibbles."""
    jj, half, lane = _E256 // 64, (_E256 % 64) // 32, _E256 % 32
    return Field(at + 32 * jj + lane, 4 * half, 4)


def _q6_k_fields() -> tuple[Field, Field]:
    n, k, lane = _E256 // 128, (_E256 % 128) // 32, _E256 % 32
    low = Field(64 * n + lane + 32 * (k % 2), 4 * (k // 2), 4)
    high = Field(128 + 32 * n + lane, 2 * k, 2, code_shift=4)
    return low, high


def _layouts() -> dict[str, Layout]:
    t = ggml_type
    iq4nl = np.asarray(_GGUF_IQ4_NL.kvalues, dtype=np.float32)
    layouts = [
        Layout(
            t("Q8_0"), (Field(2 + _E32, np.zeros(32, int), 8, flip=0x80),), _int_levels(-128, 127), 32, _scale_only(0)
        ),
        Layout(t("Q5_0"), (_nibbles32(6), _high_bits32(2)), _int_levels(-16, 15), 32, _scale_only(0)),
        Layout(t("Q5_1"), (_nibbles32(8), _high_bits32(4)), _int_levels(0, 31), 32, _scale_min(0, 2)),
        Layout(t("Q4_0"), (_nibbles32(2),), _int_levels(-8, 7), 32, _scale_only(0)),
        Layout(t("Q4_1"), (_nibbles32(4),), _int_levels(0, 15), 32, _scale_min(0, 2)),
        Layout(t("IQ4_NL"), (_nibbles32(2),), iq4nl, 32, _scale_only(0), uniform=False),
        Layout(t("Q2_K"), (_k_pairs(16),), _int_levels(0, 3), 16, _q2_k_params),
        Layout(
            t("Q3_K"),
            (_k_pairs(32), Field(_E256 % 32, 4 * (_E256 // 128) + (_E256 % 128) // 32, 1, 2)),
            _int_levels(-4, 3),
            16,
            _q3_k_params,
        ),
        Layout(t("Q4_K"), (_k_nibbles(16),), _int_levels(0, 15), 32, _q45_k_params),
        Layout(
            t("Q5_K"),
            (_k_nibbles(48), Field(16 + _E256 % 32, _E256 // 32, 1, code_shift=4)),
            _int_levels(0, 31),
            32,
            _q45_k_params,
        ),
        Layout(t("Q6_K"), _q6_k_fields(), _int_levels(-32, 31), 16, _q6_k_params),
    ]
    return {layout.type.name: layout for layout in layouts}


LAYOUTS: dict[str, Layout] = _layouts()


def layout(type: str | GGMLType) -> Layout:
    """The packing of a quantized type; a ConfigError for types without a grid (F16, F32)."""
    spec = ggml_type(type)
    if spec.name not in LAYOUTS:
        raise ConfigError("type", f"{spec.name} has no fixed grid; grids exist for {', '.join(LAYOUTS)}")
    return LAYOUTS[spec.name]


def unpack_codes(lay: Layout, blocks: np.ndarray) -> np.ndarray:
    """Codes ``uint8 [n, block]`` stored in ``blocks`` (uint8 ``[n, block_bytes]``)."""
    codes = np.zeros((blocks.shape[0], lay.type.block), dtype=np.uint8)
    for f in lay.fields:
        bits = ((blocks[:, f.byte] >> f.shift.astype(np.uint8)) & f.mask) ^ f.flip
        codes |= (bits << f.code_shift).astype(np.uint8)
    return codes


def pack_codes(lay: Layout, blocks: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """A copy of ``blocks`` whose code bits hold ``codes`` (uint8 ``[n, block]``); scales untouched."""
    out = blocks & ~lay.code_mask
    for f in lay.fields:
        bits = (((codes >> f.code_shift) & f.mask) ^ f.flip).astype(np.uint8)
        for elems in f.ranks:
            out[:, f.byte[elems]] |= bits[:, elems] << f.shift[elems].astype(np.uint8)
    return out
