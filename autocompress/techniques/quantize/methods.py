"""Weight quantization methods, chosen by name from :data:`WEIGHT_METHODS`.

A method quantizes the linears of one *input group* (linears that read the same tensor: q/k/v,
gate/up, o, down) that were assigned to it, so a method that shares something across the group
(AWQ's folded scale) sees all of them; the others treat members one by one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar

import torch

from autocompress.inputs import InputStats
from autocompress.models.adapter import LinearSite
from autocompress.registry import Registry
from autocompress.techniques.quantize.awq import awq
from autocompress.techniques.quantize.gptq import gptq
from autocompress.techniques.quantize.grid import QuantFormat, Quantized, rtn_grid


@dataclass(frozen=True)
class Member:
    """One linear of an input group and the format it is assigned."""

    site: LinearSite
    fmt: QuantFormat


class WeightMethod(ABC):
    name: ClassVar[str]
    needs_stats: ClassVar[bool] = True  # reads the calibration input statistics
    joint: ClassVar[bool] = False  # a member's result depends on the other members' formats
    version: ClassVar[str] = "1"  # bump when the algorithm's output changes (invalidates caches)

    @abstractmethod
    def quantize(self, members: list[Member], stats: InputStats | None, foldable: bool) -> list[Quantized]:
        """Effective (quantize-dequantized) weights of ``members`` with their grids, in order. ``foldable`` says
        whether a per-input-channel scale of this group can be folded into the op before it."""


def split_rows(joint: Quantized, sizes: list[int]) -> list[Quantized]:
    """Undo a row-wise concatenation of weights quantized as one matrix (rows are independent)."""
    weights = joint.weight.split(sizes)
    if joint.grid is None:
        return [Quantized(w, None) for w in weights]
    pieces = zip(joint.grid.scale.split(sizes), joint.grid.zero.split(sizes))
    return [
        Quantized(w, replace(joint.grid, scale=s.contiguous(), zero=z.contiguous()))
        for w, (s, z) in zip(weights, pieces)
    ]


WEIGHT_METHODS: Registry[type[WeightMethod]] = Registry("quantization method")


@WEIGHT_METHODS.decorator()
class RTN(WeightMethod):
    """Round to nearest on the group grid; needs no calibration data."""

    name = "rtn"
    needs_stats = False

    def quantize(self, members, stats, foldable):
        return [rtn_grid(m.site.module.weight, m.fmt) for m in members]


@WEIGHT_METHODS.decorator()
class GPTQ(WeightMethod):
    """Hessian-compensated rounding, column by column (``gptq.py``)."""

    name = "gptq"

    def quantize(self, members, stats, foldable):
        # Rows are independent given H: linears sharing an input and a format run as one matrix.
        out: dict[int, Quantized] = {}
        for fmt in dict.fromkeys(m.fmt for m in members):
            index = [i for i, m in enumerate(members) if m.fmt == fmt]
            weights = [members[i].site.module.weight for i in index]
            joint = gptq(torch.cat(weights), stats.hessian, fmt)
            out.update(zip(index, split_rows(joint, [w.shape[0] for w in weights])))
        return [out[i] for i in range(len(members))]


@WEIGHT_METHODS.decorator()
class AWQ(WeightMethod):
    """Activation-aware channel scaling searched per input group (``awq.py``); where the scale
    cannot be folded (``o`` under grouped-query attention) it is plain round to nearest."""

    name = "awq"
    joint = True

    def quantize(self, members, stats, foldable):
        if not foldable:
            return [rtn_grid(m.site.module.weight, m.fmt) for m in members]
        quantized, _ = awq([m.site.module.weight for m in members], [m.fmt for m in members], stats)
        return quantized
