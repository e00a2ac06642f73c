"""What a technique did to a module's storage format, recorded on the module itself.

Fake-quantized weights are still float tensors; the hardware model needs to know the
format they would be stored in on the device. Techniques record it here.
"""

from __future__ import annotations

from dataclasses import dataclass

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
