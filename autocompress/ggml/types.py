"""llama.cpp's weight types as the product uses them: sizes from gguf, the activation type of each.

Ids, weights per block and bytes per block come from ``gguf.GGMLQuantizationType`` and
``gguf.GGML_QUANT_SIZES`` (never restated here). ``vec_dot`` is the type llama.cpp's CPU backend
converts the *activation* operand to before a matrix product with a weight of this type: it is
``type_traits_cpu[type].vec_dot_type`` in ggml/src/ggml-cpu/ggml-cpu.c (llama.cpp master):
Q4_0, Q5_0, Q8_0, IQ4_NL -> Q8_0; Q4_1, Q5_1 -> Q8_1; Q2_K..Q6_K -> Q8_K; F16 -> F16; F32 -> F32.
"""

from __future__ import annotations

from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from autocompress.errors import ConfigError

# gguf-py 0.19 lists Q8_1 as 40 bytes (float d, s); ggml-common.h's block_q8_1 holds ggml_half d, s
# and 32 int8: 36 bytes, which libggml's ggml_type_size reports too (checked in tests/test_ggml.py).
_BLOCK_BYTES_FIXES = {"Q8_1": 36}


@dataclass(frozen=True)
class GGMLType:
    """One ggml tensor type: its id, block geometry and the activation type of its dot product."""

    name: str
    vec_dot: str  # name of the activation type (see module docstring)
    weight: bool = True  # offered as a weight type (False: activation-only, Q8_1 and Q8_K)

    @property
    def gguf(self) -> GGMLQuantizationType:
        return GGMLQuantizationType[self.name]

    @property
    def id(self) -> int:
        """``enum ggml_type`` value, as in ggml.h and GGUF files."""
        return int(self.gguf)

    @property
    def block(self) -> int:
        """Weights per block."""
        return GGML_QUANT_SIZES[self.gguf][0]

    @property
    def block_bytes(self) -> int:
        return _BLOCK_BYTES_FIXES.get(self.name, GGML_QUANT_SIZES[self.gguf][1])

    @property
    def bits_per_weight(self) -> float:
        """Storage bits per weight, scales included."""
        return 8.0 * self.block_bytes / self.block

    @property
    def quantized(self) -> bool:
        return self.block > 1

    def fits(self, cols: int) -> bool:
        """Whether a row of ``cols`` weights is a whole number of blocks (llama.cpp requires it)."""
        return cols > 0 and cols % self.block == 0

    def row_bytes(self, cols: int) -> int:
        self.check_fits(cols)
        return cols // self.block * self.block_bytes

    def tensor_bytes(self, rows: int, cols: int) -> int:
        """Bytes of a ``[rows, cols]`` tensor (``cols`` along the row, as ggml's ne[0])."""
        return rows * self.row_bytes(cols)

    def check_fits(self, cols: int, field: str = "cols") -> None:
        if not self.fits(cols):
            raise ConfigError(field, f"{cols} columns are not a multiple of {self.name}'s block of {self.block}")


def _table(*types: GGMLType) -> dict[str, GGMLType]:
    return {t.name: t for t in types}


# Every type this package knows: the weight types the product offers, and the two
# activation-only types llama.cpp quantizes activations to (Q8_1, Q8_K).
TYPES: dict[str, GGMLType] = _table(
    GGMLType("F32", vec_dot="F32"),
    GGMLType("F16", vec_dot="F16"),
    GGMLType("Q8_0", vec_dot="Q8_0"),
    GGMLType("Q5_0", vec_dot="Q8_0"),
    GGMLType("Q5_1", vec_dot="Q8_1"),
    GGMLType("Q4_0", vec_dot="Q8_0"),
    GGMLType("Q4_1", vec_dot="Q8_1"),
    GGMLType("IQ4_NL", vec_dot="Q8_0"),
    GGMLType("Q2_K", vec_dot="Q8_K"),
    GGMLType("Q3_K", vec_dot="Q8_K"),
    GGMLType("Q4_K", vec_dot="Q8_K"),
    GGMLType("Q5_K", vec_dot="Q8_K"),
    GGMLType("Q6_K", vec_dot="Q8_K"),
    GGMLType("Q8_1", vec_dot="Q8_1", weight=False),
    GGMLType("Q8_K", vec_dot="Q8_K", weight=False),
)
WEIGHT_TYPES: dict[str, GGMLType] = {n: t for n, t in TYPES.items() if t.weight}


def ggml_type(name: str | GGMLType, field: str = "type", *, weights_only: bool = True) -> GGMLType:
    """The spec of a type named like ``"q4_0"`` or ``"Q4_0"``; a ConfigError lists the allowed names."""
    if isinstance(name, GGMLType):
        return name
    table = WEIGHT_TYPES if weights_only else TYPES
    spec = table.get(str(name).upper())
    if spec is None:
        raise ConfigError(field, f"unknown ggml type {name!r}; allowed: {', '.join(table)}")
    return spec


def vec_dot_type(weight: str | GGMLType) -> GGMLType:
    """The activation type llama.cpp's CPU matrix product uses with a weight of this type."""
    return TYPES[ggml_type(weight).vec_dot]


# llama.cpp's KV-cache types (``--cache-type-k/-v``) and the ggml type each stores K and V rows in.
KV_CACHE_TYPES = {"f16": "F16", "q8_0": "Q8_0", "q4_0": "Q4_0"}
