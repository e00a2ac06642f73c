"""Weight quantization (simulated: weights are quantized then dequantized in place).

Each decoder linear gets a method (``rtn``, ``gptq``, ``awq``; see ``techniques/quant/``) and a
format (bits, group size, symmetric) from the step's defaults and its overrides. Results are cached
per module on disk (``quant/cache.py``). The storage format each weight would have on the device is
recorded with :func:`set_weight_format`, so hardware models see bits and group sizes.
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from autocompress.calibration import input_stats
from autocompress.context import CompressionContext
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format
from autocompress.techniques.base import Technique, register_technique
from autocompress.techniques.quant.cache import WeightCache
from autocompress.techniques.quant.grid import QuantFormat, check_format, rtn
from autocompress.techniques.quant.methods import WEIGHT_METHODS, Member
from autocompress.techniques.selection import ModuleSelector

Bits = Literal[2, 3, 4, 8, 16]


def _known_method(value: str | None) -> str | None:
    if value is not None and value not in WEIGHT_METHODS:
        raise ValueError(f"unknown method {value!r}; allowed: {', '.join(WEIGHT_METHODS)}")
    return value


class QuantOverride(ModuleSelector):
    """Different quantization for the selected modules; unset fields inherit the step's."""

    method: str | None = None
    bits: Bits | None = None
    group_size: int | None = Field(None, ge=0)
    symmetric: bool | None = None

    _method = field_validator("method")(_known_method)


class QuantizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "rtn"
    bits: Bits = 4
    group_size: int = Field(128, ge=0, description="0 = per output channel")
    symmetric: bool = True
    embeddings: bool = Field(False, description="also quantize the input embedding and LM head (tied or not), "
                                                "by round to nearest")
    overrides: list[QuantOverride] = Field(default_factory=list)

    _method = field_validator("method")(_known_method)


def plan(adapter: ModelAdapter, params: QuantizeParams) -> dict[str, tuple[str, QuantFormat]]:
    """Method and format of every decoder linear: the step's, then each matching override in order."""
    out = {}
    for site in adapter.linear_sites():
        method, fmt = params.method, QuantFormat(params.bits, params.group_size, params.symmetric)
        for o in params.overrides:
            if o.selects(site, adapter.num_layers):
                method = o.method or method
                fmt = QuantFormat(o.bits or fmt.bits, fmt.group_size if o.group_size is None else o.group_size,
                                  fmt.symmetric if o.symmetric is None else o.symmetric)
        check_format(fmt, site.name, site.module.in_features)
        out[site.name] = (method, fmt)
    return out


def foldable(adapter: ModelAdapter, group: str) -> bool:
    """Whether a per-input-channel scale of this input group folds into the op that feeds it:
    the RMSNorm (q/k/v, gate/up), ``up`` (down), or ``v`` (o, only without grouped-query heads)."""
    return group in ("attn.in", "mlp.in", "mlp.down") or (group == "attn.o" and adapter.num_heads == adapter.num_kv_heads)


def quantize_linears(model: nn.Module, assignment: dict[str, tuple[str, QuantFormat]],
                     ctx: CompressionContext, cache: WeightCache | None = None) -> WeightCache:
    """Quantize every decoder linear as assigned, reading and filling the per-module cache."""
    adapter = ModelAdapter(model)
    cache = cache or WeightCache.for_context(ctx)
    jobs: list[tuple[str, list[Member], bool, list[str], list[torch.Tensor | None]]] = []
    for group, sites in adapter.input_groups():
        for name in dict.fromkeys(assignment[s.name][0] for s in sites):
            method = WEIGHT_METHODS[name]
            members = [Member(s, assignment[s.name][1]) for s in sites if assignment[s.name][0] == name]
            fold = foldable(adapter, group)
            siblings = ",".join(m.fmt.label() for m in members) if method.joint else ""
            keys = [cache.key(m.site.name, name, method.version, m.fmt.label(), siblings, str(fold)) for m in members]
            jobs.append((name, members, fold, keys, [cache.get(k) for k in keys]))
    # Statistics of the model as it enters this step, taken before any weight here changes.
    missing = any(None in hit and WEIGHT_METHODS[name].needs_stats for name, _, _, _, hit in jobs)
    stats = input_stats(model, ctx) if missing else {}
    with torch.no_grad():
        for name, members, fold, keys, hit in jobs:
            if None in hit:
                hit = WEIGHT_METHODS[name]().quantize(members, stats.get(members[0].site.name), fold)
                for key, weight in zip(keys, hit):
                    cache.put(key, weight)
            for member, weight in zip(members, hit):
                member.site.module.weight.copy_(weight)
                set_weight_format(member.site.module, WeightFormat(member.fmt.bits, member.fmt.group_size,
                                                                   member.fmt.symmetric))
    return cache


@register_technique
class Quantize(Technique):
    name = "quantize"
    Params = QuantizeParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = QuantizeParams.model_validate(params)
        text = f"{p.method} w{p.bits}g{p.group_size}" + ("" if p.symmetric else " asym") + (" +emb" if p.embeddings else "")
        return text + "".join(f" {o.label()}:{o.method or ''}w{o.bits or p.bits}" for o in p.overrides)

    def apply(self, model: nn.Module, params: QuantizeParams, ctx: CompressionContext) -> nn.Module:
        adapter = ModelAdapter(model)
        quantize_linears(model, plan(adapter, params), ctx)
        if params.embeddings:
            _quantize_embeddings(adapter, QuantFormat(params.bits, params.group_size, params.symmetric))
        return model


@torch.no_grad()
def _quantize_embeddings(adapter: ModelAdapter, fmt: QuantFormat) -> None:
    """Round the input embedding and LM head; a tied head shares the tensor: quantized once, both recorded."""
    tensors = {id(m.weight): m for m in (adapter.input_embedding, adapter.lm_head)}
    for module in tensors.values():
        check_format(fmt, "the embedding", module.weight.shape[1])
        module.weight.copy_(rtn(module.weight, fmt))
    for module in (adapter.input_embedding, adapter.lm_head):
        set_weight_format(module, WeightFormat(fmt.bits, fmt.group_size, fmt.symmetric))
