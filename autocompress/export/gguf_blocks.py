"""llama.cpp's block quantization formats, in torch: Q8_0, Q4_0 and Q4_1 over blocks of 32 inputs.

The formulas follow ggml's reference quantizers (``ggml-quants.c``), with one deliberate change:
codes are rounded against the *stored* fp16 scale, not the float32 one before it is rounded. So
``dequantize(*quantize(w))`` is exactly what llama.cpp computes from the file, bit for bit, and a
quantizer that works on this grid (``quantize`` with ``grid: gguf``) can hand its codes to the GGUF
writer without a second rounding.

- Q8_0: ``d = amax / 127`` (fp16), codes in [-127, 127], ``w = q * d``.
- Q4_0: ``d = v / -8`` where ``v`` is the block's value of largest magnitude (fp16), codes in
  [-8, 7] (llama.cpp stores ``q + 8``), ``w = q * d``; ``v`` itself maps to -8 exactly.
- Q4_1: ``m = min`` (fp16), ``d = (max - min) / 15`` (fp16), codes in [0, 15], ``w = q * d + m``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

BLOCK = 32


@dataclass(frozen=True)
class BlockQuant:
    """Codes and per-block parameters of a ``[rows, cols]`` weight (``cols`` a multiple of 32)."""

    kind: str  # "Q8_0", "Q4_0", "Q4_1"
    codes: torch.Tensor  # int8 [rows, cols]
    d: torch.Tensor  # float32 [rows, cols // 32], fp16-representable
    m: torch.Tensor | None = None  # Q4_1 only: float32 [rows, cols // 32], fp16-representable

    def dequantize(self) -> torch.Tensor:
        q = self.codes.to(torch.float32).reshape(*self.d.shape, BLOCK)
        w = q * self.d[..., None]
        if self.m is not None:
            w = w + self.m[..., None]
        return w.reshape(self.codes.shape)

    def rows(self, index: torch.Tensor) -> BlockQuant:
        """The same quantized weight with its output rows reordered (llama.cpp's Q/K permutation)."""
        return BlockQuant(self.kind, self.codes[index], self.d[index], None if self.m is None else self.m[index])


def _fp16(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float16).to(torch.float32)


def _blocks(weight: torch.Tensor) -> torch.Tensor:
    rows, cols = weight.shape
    if cols % BLOCK:
        raise ValueError(f"GGUF block formats need an input width divisible by {BLOCK}, got {cols}")
    return weight.detach().to(torch.float32).reshape(rows, cols // BLOCK, BLOCK)


def _safe(d: torch.Tensor) -> torch.Tensor:
    return torch.where(d == 0, torch.ones_like(d), d)  # an all-zero block: codes 0 under any scale


def quantize_q8_0(weight: torch.Tensor) -> BlockQuant:
    w = _blocks(weight)
    d = _fp16(w.abs().amax(-1) / 127)
    codes = torch.clamp(torch.round(w / _safe(d)[..., None]), -127, 127)
    return BlockQuant("Q8_0", codes.to(torch.int8).reshape(weight.shape), d)


def quantize_q4_0(weight: torch.Tensor) -> BlockQuant:
    w = _blocks(weight)
    index = w.abs().argmax(-1, keepdim=True)
    d = _fp16(torch.gather(w, -1, index)[..., 0] / -8)
    codes = torch.clamp(torch.round(w / _safe(d)[..., None]), -8, 7)
    return BlockQuant("Q4_0", codes.to(torch.int8).reshape(weight.shape), d)


def quantize_q4_1(weight: torch.Tensor) -> BlockQuant:
    w = _blocks(weight)
    m = _fp16(w.amin(-1))
    d = _fp16((w.amax(-1) - m) / 15)
    codes = torch.clamp(torch.round((w - m[..., None]) / _safe(d)[..., None]), 0, 15)
    return BlockQuant("Q4_1", codes.to(torch.int8).reshape(weight.shape), d, m)


QUANTIZERS = {"Q8_0": quantize_q8_0, "Q4_0": quantize_q4_0, "Q4_1": quantize_q4_1}


def block_kind(bits: int, symmetric: bool) -> str | None:
    """The GGUF block format of a (bits, symmetric) choice on a group of 32; None if there is none."""
    return {(8, True): "Q8_0", (4, True): "Q4_0", (4, False): "Q4_1"}.get((bits, symmetric))


# ---- the bytes llama.cpp reads (block_q8_0, block_q4_0, block_q4_1 in ggml-common.h) ----------------


def _half_bytes(x: torch.Tensor) -> np.ndarray:
    return x.to(torch.float16).numpy().view(np.uint8).reshape(*x.shape, 2)


def _nibbles(codes: np.ndarray) -> np.ndarray:
    """32 codes in 0..15 per block -> 16 bytes: element j in the low nibble of byte j, j + 16 in the high."""
    return (codes[..., :16] | (codes[..., 16:] << 4)).astype(np.uint8)


def pack(q: BlockQuant) -> np.ndarray:
    """The raw GGUF bytes of a block-quantized weight: ``uint8 [rows, bytes_per_row]``."""
    rows, cols = q.codes.shape
    codes = q.codes.numpy().reshape(rows, cols // BLOCK, BLOCK)
    if q.kind == "Q8_0":
        parts = [_half_bytes(q.d), codes.view(np.uint8)]
    elif q.kind == "Q4_0":
        parts = [_half_bytes(q.d), _nibbles((codes + 8).astype(np.uint8))]
    elif q.kind == "Q4_1":
        parts = [_half_bytes(q.d), _half_bytes(q.m), _nibbles(codes.astype(np.uint8))]
    else:
        raise ValueError(f"unknown block format {q.kind!r}")
    return np.concatenate(parts, axis=-1).reshape(rows, -1)
