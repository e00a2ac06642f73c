"""Weight quantization (simulated: weights are quantized then dequantized in place).

The storage format each weight would have on the device is recorded with
:func:`set_weight_format`, so hardware models see bits and group sizes.
"""

from __future__ import annotations

from typing import Callable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format
from autocompress.techniques.base import Technique, register_technique
from autocompress.techniques.selection import ModuleSelector

Bits = Literal[2, 3, 4, 8, 16]


def rtn_quantize(weight: torch.Tensor, bits: int, group_size: int, symmetric: bool) -> torch.Tensor:
    """Round-to-nearest fake quantization of a ``[out, in]`` weight, groups along ``in``.

    ``group_size`` 0 means one group per output row. 16 bits means fp16 rounding.
    Symmetric: scale = max|w| / (2^(b-1) - 1), integers in [-2^(b-1), 2^(b-1) - 1].
    Asymmetric: scale = (max - min) / (2^b - 1), zero point = round(-min / scale), integers in [0, 2^b - 1].
    """
    if bits == 16:
        return weight.to(torch.float16).to(weight.dtype)
    rows, cols = weight.shape
    group = cols if group_size == 0 or group_size >= cols else group_size
    w = weight.reshape(rows, cols // group, group).to(torch.float32)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (w.abs().amax(dim=-1, keepdim=True) / qmax).clamp(min=1e-12)
        q = torch.clamp(torch.round(w / scale), -qmax - 1, qmax)
        deq = q * scale
    else:
        qmax = 2**bits - 1
        lo, hi = w.amin(dim=-1, keepdim=True), w.amax(dim=-1, keepdim=True)
        scale = ((hi - lo) / qmax).clamp(min=1e-12)
        zero = torch.round(-lo / scale)
        q = torch.clamp(torch.round(w / scale) + zero, 0, qmax)
        deq = (q - zero) * scale
    return deq.reshape(rows, cols).to(weight.dtype)


# Methods are small functions chosen by name; gptq/awq arrive with the quantization-suite issue.
QUANT_METHODS: dict[str, Callable[[torch.Tensor, int, int, bool], torch.Tensor]] = {"rtn": rtn_quantize}
PLANNED_METHODS = ("gptq", "awq")


class QuantOverride(ModuleSelector):
    """Different quantization for the selected modules; unset fields inherit the step's."""

    bits: Bits | None = None
    group_size: int | None = Field(None, ge=0)
    symmetric: bool | None = None


class QuantizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "rtn"
    bits: Bits = 4
    group_size: int = Field(128, ge=0, description="0 = per output channel")
    symmetric: bool = True
    embeddings: bool = Field(False, description="also quantize the input embedding and LM head (tied or not)")
    overrides: list[QuantOverride] = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value in PLANNED_METHODS:
            raise ValueError(f"method {value!r} is not yet available; available: {', '.join(QUANT_METHODS)}")
        if value not in QUANT_METHODS:
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(QUANT_METHODS)}")
        return value


def _check_group(name: str, cols: int, group_size: int) -> None:
    if 0 < group_size < cols and cols % group_size:
        raise ConfigError("quantize.group_size", f"{group_size} does not divide the input width {cols} of {name}")


@register_technique
class Quantize(Technique):
    name = "quantize"
    Params = QuantizeParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = QuantizeParams.model_validate(params)
        text = f"{p.method} w{p.bits}g{p.group_size}" + ("" if p.symmetric else " asym") + (" +emb" if p.embeddings else "")
        return text + "".join(f" {o.label()}:w{o.bits or p.bits}" for o in p.overrides)

    def apply(self, model: nn.Module, params: QuantizeParams, ctx: CompressionContext) -> nn.Module:
        quantize = QUANT_METHODS[params.method]
        adapter = ModelAdapter(model)
        with torch.no_grad():
            for site in adapter.linear_sites():
                fmt = WeightFormat(params.bits, params.group_size, params.symmetric)
                for override in params.overrides:
                    if override.selects(site, adapter.num_layers):
                        fmt = WeightFormat(override.bits or fmt.bits,
                                           fmt.group_size if override.group_size is None else override.group_size,
                                           fmt.symmetric if override.symmetric is None else override.symmetric)
                _check_group(site.name, site.module.in_features, fmt.group_size)
                site.module.weight.copy_(quantize(site.module.weight, fmt.bits, fmt.group_size, fmt.symmetric))
                set_weight_format(site.module, fmt)
            if params.embeddings:
                fmt = WeightFormat(params.bits, params.group_size, params.symmetric)
                # A tied LM head shares the embedding tensor: quantize it once, record both.
                tensors = {id(m.weight): m for m in (adapter.input_embedding, adapter.lm_head)}
                for module in tensors.values():
                    _check_group("the embedding", module.weight.shape[1], fmt.group_size)
                    module.weight.copy_(quantize(module.weight, fmt.bits, fmt.group_size, fmt.symmetric))
                for module in (adapter.input_embedding, adapter.lm_head):
                    set_weight_format(module, fmt)
        return model
