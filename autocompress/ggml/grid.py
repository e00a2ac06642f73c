"""A weight's fixed grid, read back from its llama.cpp-packed bytes, for rounding with scales held fixed.

``Grid(packed, type, cols)`` keeps the packed tensor's scales (and offsets) and lets a GPTQ-style
quantizer re-choose every code: ``nearest(values, column)`` rounds one column (or the whole tensor)
to the representable values of each row, ``encode(codes)`` writes the codes back into the bytes with
the scales untouched. Invariants (tests/test_ggml_grid.py): ``encode(grid.codes) == packed`` byte for
byte, and llama.cpp's ``dequantize(encode(codes)) == grid.values(codes)`` bit for bit.

Uniform types (Q8_0, Q5_0, Q5_1, Q4_0, Q4_1 and the K-quants) represent ``level * scale + offset``
for integer levels in a range; IQ4_NL represents its 16-value codebook times the block scale.
"""

from __future__ import annotations

import numpy as np
import torch

from autocompress.errors import ConfigError

from . import native
from .layouts import Layout, layout, pack_codes, unpack_codes
from .types import GGMLType, ggml_type

_CHUNK = 1 << 20  # candidate values per step of a codebook search


class Grid:
    """The representable values of every weight of one packed ``[rows, cols]`` tensor."""

    def __init__(self, packed: torch.Tensor, type: str | GGMLType, cols: int):
        self.layout: Layout = layout(type)
        spec = self.layout.type
        row_bytes = spec.row_bytes(cols)
        if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
            raise ConfigError("packed", "must be a 2-D uint8 torch tensor [rows, row_bytes]")
        if packed.shape[1] != row_bytes:
            raise ConfigError(
                "packed", f"rows of {packed.shape[1]} bytes; {cols} columns of {spec.name} take {row_bytes}"
            )
        self.rows, self.cols = packed.shape[0], cols
        self._blocks = packed.detach().cpu().numpy().reshape(-1, spec.block_bytes).copy()
        scale, offset = self.layout.params(self._blocks)
        self.scale = torch.from_numpy(np.ascontiguousarray(scale).reshape(self.rows, -1))
        self.offset = None if offset is None else torch.from_numpy(np.ascontiguousarray(offset).reshape(self.rows, -1))
        self.levels = torch.from_numpy(self.layout.levels)  # code -> level, float32

    @classmethod
    def quantize(cls, weight: torch.Tensor, type: str | GGMLType, importance: torch.Tensor | None = None) -> Grid:
        """The grid llama.cpp's quantizer picks for ``weight`` (its scales; its codes in ``.codes``)."""
        return cls(native.quantize(weight, type, importance), type, weight.shape[1])

    @property
    def type(self) -> GGMLType:
        return self.layout.type

    @property
    def group(self) -> int:
        """Columns sharing one scale (and offset) within a row."""
        return self.layout.group

    @property
    def n_codes(self) -> int:
        return self.layout.n_codes

    @property
    def codes(self) -> torch.Tensor:
        """The codes stored in the packed bytes, uint8 ``[rows, cols]``."""
        return torch.from_numpy(unpack_codes(self.layout, self._blocks).reshape(self.rows, self.cols))

    @property
    def packed(self) -> torch.Tensor:
        return torch.from_numpy(self._blocks.reshape(self.rows, -1).copy())

    def column(self, j: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale and offset (None: no offset) of every row at column ``j``, float32 ``[rows]``."""
        if not 0 <= j < self.cols:
            raise ConfigError("column", f"{j} is outside 0..{self.cols - 1}")
        g = j // self.group
        return self.scale[:, g], None if self.offset is None else self.offset[:, g]

    def representable(self, j: int) -> torch.Tensor:
        """Every value row ``r`` can take at column ``j``: float32 ``[rows, n_codes]``, by code."""
        scale, offset = self.column(j)
        return self._value(self.levels[None, :], scale[:, None], None if offset is None else offset[:, None])

    def values(self, codes: torch.Tensor | None = None) -> torch.Tensor:
        """float32 ``[rows, cols]`` of ``codes`` (default: the stored ones), exactly as llama.cpp dequantizes."""
        codes = self.codes if codes is None else self._check_codes(codes)
        scale, offset = self._grouped()
        return self._value(self._levels_of(self._by_group(codes)), scale, offset).reshape(self.rows, self.cols)

    def nearest(self, values: torch.Tensor, column: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Codes (uint8) and quantized values (float32) nearest to ``values`` on this grid.

        ``column=j``: ``values`` is that column, ``[rows]``; ``column=None``: the whole ``[rows, cols]``.
        Cheap per column (GPTQ's inner loop); run such loops under ``autocompress.threads.one_thread``.
        """
        shape = (self.rows,) if column is not None else (self.rows, self.cols)
        values = torch.as_tensor(values)
        if tuple(values.shape) != shape:
            raise ConfigError("values", f"must have shape {list(shape)}, got {list(values.shape)}")
        values = values.detach().to(torch.float32)
        if not torch.isfinite(values).all():
            raise ConfigError("values", "has NaN or infinite values")
        if column is None:
            scale, offset = self._grouped()
            values = self._by_group(values)
        else:
            scale, offset = self.column(column)
        search = self._nearest_uniform if self.layout.uniform else self._nearest_codebook
        codes, quantized = search(values, scale, offset)
        return codes.to(torch.uint8).reshape(shape), quantized.reshape(shape)

    def encode(self, codes: torch.Tensor) -> torch.Tensor:
        """The packed bytes, uint8 ``[rows, row_bytes]``, holding ``codes`` with this grid's scales."""
        flat = self._check_codes(codes).to(torch.uint8).numpy().reshape(-1, self.type.block)
        return torch.from_numpy(pack_codes(self.layout, self._blocks, flat).reshape(self.rows, -1))

    # ---- internals ------------------------------------------------------------------------------

    @staticmethod
    def _value(level: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """``level * scale (+ offset)`` in float32: ggml's own operations, in its order."""
        product = level * scale
        return product if offset is None else product + offset

    def _by_group(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.rows, -1, self.group)

    def _grouped(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Scale and offset shaped ``[rows, groups, 1]``, to broadcast over ``_by_group`` tensors."""
        return self.scale[..., None], None if self.offset is None else self.offset[..., None]

    def _levels_of(self, codes: torch.Tensor) -> torch.Tensor:
        if self.layout.uniform:
            return codes.to(torch.float32) - self.layout.zero
        return self.levels[codes.long()]

    def _check_codes(self, codes: torch.Tensor) -> torch.Tensor:
        codes = torch.as_tensor(codes)
        if tuple(codes.shape) != (self.rows, self.cols) or codes.is_floating_point() or codes.is_complex():
            raise ConfigError("codes", f"must be an integer tensor of shape [{self.rows}, {self.cols}]")
        if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= self.n_codes):
            raise ConfigError("codes", f"must lie in 0..{self.n_codes - 1} for {self.type.name}")
        return codes

    def _nearest_uniform(self, values, scale, offset) -> tuple[torch.Tensor, torch.Tensor]:
        """Rounding by formula, then the neighbouring levels compared on their exact values."""
        low, high = float(self.layout.levels[0]), float(self.layout.levels[-1])
        shifted = values if offset is None else values - offset
        level = torch.nan_to_num(shifted / scale).round_().clamp_(low, high).add_(0.0)  # no -0; scale 0: any level
        best = self._value(level, scale, offset)
        err = (best - values).abs_()
        for step in (-1.0, 1.0):
            cand_level = (level + step).clamp_(low, high)
            cand = self._value(cand_level, scale, offset)
            cand_err = (cand - values).abs_()
            better = cand_err < err
            level = torch.where(better, cand_level, level)
            best = torch.where(better, cand, best)
            err = torch.where(better, cand_err, err)
        return level + self.layout.zero, best

    def _nearest_codebook(self, values, scale, offset) -> tuple[torch.Tensor, torch.Tensor]:
        """Exhaustive search over the codebook, in chunks that bound the candidate matrix."""
        scale, values = torch.broadcast_tensors(scale, values)
        flat_v, flat_s = values.reshape(-1), scale.reshape(-1)
        flat_o = None if offset is None else torch.broadcast_tensors(offset, values)[0].reshape(-1)
        codes = torch.empty(flat_v.shape, dtype=torch.long)
        step = max(1, _CHUNK // self.n_codes)
        for start in range(0, flat_v.numel(), step):
            sl = slice(start, start + step)
            cand = self._value(self.levels[None, :], flat_s[sl, None], None if flat_o is None else flat_o[sl, None])
            codes[sl] = (cand - flat_v[sl, None]).abs_().argmin(dim=1)
        codes = codes.reshape(scale.shape)
        return codes, self._value(self.levels[codes], scale, None if flat_o is None else flat_o.reshape(scale.shape))


def fixed_grid(weight: torch.Tensor, type: str | GGMLType, importance: torch.Tensor | None = None) -> Grid:
    """Shorthand for ``Grid.quantize``: llama.cpp's scales for ``weight``, ready for GPTQ-style rounding."""
    ggml_type(type)
    return Grid.quantize(weight, type, importance)
