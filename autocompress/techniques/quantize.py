"""Weight quantization (simulated: weights are quantized then dequantized in place).

Each decoder linear gets a method (``rtn``, ``gptq``, ``awq``; see ``techniques/quant/``) and a
format (bits, group size, symmetric) from the step's defaults and its overrides. Results are cached
per module on disk (``quant/weight_cache.py``). The storage format each weight would have on the device is
recorded with :func:`set_weight_format`, so hardware models see bits and group sizes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Iterable, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from autocompress.inputs import InputStats, LayerInputs, input_stats
from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.hardware.profile import ModelProfile
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format, set_weight_grid
from autocompress.techniques.base import Technique, register_technique
from autocompress.techniques.quant.activations import add_activation_quant, rescaled, smooth
from autocompress.techniques.quant.weight_cache import WeightCache
from autocompress.techniques.quant.grid import QuantFormat, Quantized, check_format, rtn_grid
from autocompress.techniques.quant.kv import set_kv_bits
from autocompress.techniques.quant.methods import WEIGHT_METHODS, Member
from autocompress.techniques.quant.rotation import rotate
from autocompress.techniques.quant.latency import LatencyBudget, decode_costs, profile_decode_costs
from autocompress.techniques.quant.sensitivity import (PROXIES, allocate_bits, bits_budget, cached_sensitivity,
                                                       layer_sensitivity)
from autocompress.techniques.selection import ModuleSelector

Bits = Literal[2, 3, 4, 8, 16]
GGUF_BLOCK = 32  # llama.cpp's Q8_0 / Q4_0 / Q4_1 blocks


def _known_method(value: str | None) -> str | None:
    return value if value is None else WEIGHT_METHODS.known(value, "method")


def _known_proxy(value: str) -> str:
    return PROXIES.known(value)


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
    allocation: Literal["uniform", "sensitivity"] = Field(
        "uniform", description="sensitivity: per-layer bits from bit_choices ranked by sensitivity_proxy, mean avg_bits")
    sensitivity_proxy: str = Field("gptq", description="what ranks layers for allocation: sensitivity: gptq (each "
                                                       "layer's own output error) or fisher (the predicted loss rise)")
    avg_bits: float | None = Field(None, description="with allocation: sensitivity, the parameter-weighted "
                                                    "mean bits (default: bits); ignored otherwise")
    bit_choices: list[Bits] = Field(default_factory=lambda: [2, 3, 4, 8], min_length=2)
    latency_budget: LatencyBudget | None = Field(
        None, description="with allocation: sensitivity, keep the predicted decode step on a target within "
                          "this; avg_bits then applies only if given")
    act_bits: Literal[8, 16] = Field(16, description="8: per-token dynamic fake quantization of linear inputs")
    smoothquant_alpha: float | None = Field(None, ge=0, le=1,
                                            description="SmoothQuant migration strength (needs act_bits 8)")
    kv_bits: Literal[4, 8, 16] = Field(16, description="KV cache bits, simulated inside attention")
    rotate: Literal["none", "hadamard"] = Field("none", description="hadamard: rotate the residual stream first "
                                                "(float-equivalent; unties the LM head)")
    sequential: bool = Field(False, description="quantize block after block on the inputs the already-quantized "
                                                "blocks give (the GPTQ/AWQ reference order); cached per identical prefix")
    grid: Literal["default", "gguf"] = Field("default", description="gguf: llama.cpp's Q8_0/Q4_0/Q4_1 block grids "
                                             "(group_size 32, bits 4 or 8), so a GGUF export is lossless")

    _method = field_validator("method")(_known_method)

    _proxy = field_validator("sensitivity_proxy")(_known_proxy)

    @model_validator(mode="after")
    def _budget(self) -> "QuantizeParams":
        lo, hi = min(self.bit_choices), max(self.bit_choices)
        if self.latency_budget is not None and self.allocation != "sensitivity":
            raise ValueError("latency_budget: allocating bits under a latency budget needs allocation: sensitivity")
        bits_bound = self.latency_budget is None or self.avg_bits is not None
        if self.allocation == "sensitivity" and bits_bound and not lo <= self.budget_bits <= hi:
            raise ValueError(f"avg_bits: {self.budget_bits:g} cannot be met with bit_choices "
                             f"{self.bit_choices}; allowed: {lo} to {hi}")
        if self.smoothquant_alpha is not None and self.act_bits == 16:
            raise ValueError("smoothquant_alpha: smoothing only helps quantized activations; set act_bits: 8")
        if self.grid == "gguf":
            self._check_gguf()
        return self

    def _check_gguf(self) -> None:
        """Every weight this step quantizes must have a GGUF block type: groups of 32, 4 or 8 bits,
        and 8 bits only symmetric (Q8_0)."""
        choices = self.bit_choices if self.allocation == "sensitivity" else [self.bits]
        layers = [("bits", b, self.group_size, self.symmetric) for b in choices]
        layers += [(f"overrides[{i}]", o.bits or self.bits, self.group_size if o.group_size is None else o.group_size,
                    self.symmetric if o.symmetric is None else o.symmetric) for i, o in enumerate(self.overrides)]
        for where, bits, group, symmetric in layers:
            if bits == 16:
                continue
            if group != GGUF_BLOCK:
                raise ValueError(f"group_size: grid gguf needs group_size {GGUF_BLOCK} ({where} has {group})")
            if bits not in (4, 8) or (bits == 8 and not symmetric):
                raise ValueError(f"bits: grid gguf stores 4-bit (Q4_0, Q4_1) or symmetric 8-bit (Q8_0) weights; "
                                 f"{where} asks for {bits}-bit {'symmetric' if symmetric else 'asymmetric'}")

    @property
    def budget_bits(self) -> float:
        return self.bits if self.avg_bits is None else self.avg_bits


def plan(adapter: ModelAdapter, params: QuantizeParams,
         bits: dict[str, int] | None = None) -> dict[str, tuple[str, QuantFormat]]:
    """Method and format of every decoder linear: the step's (with per-layer ``bits`` from an
    allocation, if given), then each matching override in order."""
    return assign([(s, s.module.in_features) for s in adapter.linear_sites()], adapter.num_layers, params, bits)


def assign(sites: Iterable[tuple[Any, int]], num_layers: int, params: QuantizeParams,
           bits: dict[str, int] | None = None) -> dict[str, tuple[str, QuantFormat]]:
    """:func:`plan` over ``(site, input width)`` pairs; a site is anything with ``name``, ``role`` and
    ``layer`` (a module's :class:`LinearSite` or a profile's linear)."""
    out = {}
    for site, in_features in sites:
        layer_bits = bits[site.name] if bits else params.bits
        method, fmt = params.method, QuantFormat(layer_bits, params.group_size, params.symmetric, params.grid)
        for o in params.overrides:
            if o.selects(site, num_layers):
                method = o.method or method
                fmt = QuantFormat(o.bits or fmt.bits, fmt.group_size if o.group_size is None else o.group_size,
                                  fmt.symmetric if o.symmetric is None else o.symmetric, params.grid)
        check_format(fmt, site.name, in_features)
        out[site.name] = (method, fmt)
    return out


def foldable(adapter: ModelAdapter, group: str, grid: str = "default") -> bool:
    """Whether a per-input-channel scale of this input group folds into the op that feeds it:
    the RMSNorm (q/k/v, gate/up), ``up`` (down), or ``v`` (o, only without grouped-query heads).
    On the GGUF grid only the norms take it: ``up`` and ``v`` are quantized themselves, and dividing
    their rows by a scale would move them off the grid their codes were chosen on."""
    if grid == "gguf":
        return group in ("attn.in", "mlp.in")
    no_gqa = adapter.num_heads == adapter.num_kv_heads
    return group in ("attn.in", "mlp.in", "mlp.down") or (group == "attn.o" and no_gqa)


@dataclass
class _GroupJob:
    """The members of one input group that one method quantizes, with their cache keys and hits."""

    method: str
    members: list[Member]
    fold: bool
    keys: list[str]
    results: list[Quantized | None]

    @property
    def needs_stats(self) -> bool:
        return None in self.results and WEIGHT_METHODS[self.method].needs_stats


def _group_jobs(adapter: ModelAdapter, assignment: dict[str, tuple[str, QuantFormat]], cache: WeightCache,
                tag: str, layer: int | None = None, stats_tag: str | None = None) -> list[_GroupJob]:
    """One job per (input group, method) of every block, or of block ``layer`` only. Methods that read
    calibration statistics key their results by ``stats_tag`` (default ``tag``)."""
    jobs = []
    for group, sites in adapter.input_groups():
        if layer is not None and sites[0].layer != layer:
            continue
        for name in dict.fromkeys(assignment[s.name][0] for s in sites):
            method = WEIGHT_METHODS[name]
            members = [Member(s, assignment[s.name][1]) for s in sites if assignment[s.name][0] == name]
            fold = foldable(adapter, group, members[0].fmt.grid)
            siblings = ",".join(m.fmt.label() for m in members) if method.joint else ""
            where = stats_tag if stats_tag is not None and method.needs_stats else tag
            keys = [cache.key(m.site.name, name, method.version, m.fmt.label(), siblings, str(fold), where)
                    for m in members]
            jobs.append(_GroupJob(name, members, fold, keys, [cache.get(k) for k in keys]))
    return jobs


@torch.no_grad()
def _run_jobs(jobs: list[_GroupJob], stats: dict[str, InputStats], cache: WeightCache,
              prescale: dict[str, torch.Tensor]) -> None:
    """Quantize what the cache did not hold, then write every member's weight, grid and format."""
    for job in jobs:
        results = job.results
        if None in results:
            first = job.members[0].site.name
            group_stats = stats.get(first)
            if group_stats is not None and first in prescale:
                group_stats = rescaled(group_stats, prescale[first])
            results = WEIGHT_METHODS[job.method]().quantize(job.members, group_stats, job.fold)
            for key, result in zip(job.keys, results):
                cache.put(key, result)
        for member, result in zip(job.members, results):
            member.site.module.weight.copy_(result.weight)
            set_weight_grid(member.site.module, result.grid)
            set_weight_format(member.site.module, WeightFormat(member.fmt.bits, member.fmt.group_size,
                                                               member.fmt.symmetric))


def quantize_linears(model: nn.Module, assignment: dict[str, tuple[str, QuantFormat]],
                     ctx: CompressionContext, cache: WeightCache | None = None,
                     prescale: dict[str, torch.Tensor] | None = None, tag: str = "",
                     sequential: bool = False) -> WeightCache:
    """Quantize every decoder linear as assigned, reading and filling the per-module cache.

    ``prescale`` holds the per-input-channel scales already folded into some linears (SmoothQuant):
    their statistics are those of ``x / s``. ``tag`` names that transform in the cache keys.
    ``sequential`` quantizes block after block, each on the inputs the already-quantized blocks give
    (:class:`LayerInputs`); a block's cache keys then include the assignment of every block before it."""
    prescale = prescale or {}
    adapter = ModelAdapter(model)
    cache = cache or WeightCache.for_context(ctx)
    if not sequential:
        jobs = _group_jobs(adapter, assignment, cache, tag)
        # Statistics of the model as it enters this step, taken before any weight here changes.
        stats = input_stats(model, ctx) if any(job.needs_stats for job in jobs) else {}
        _run_jobs(jobs, stats, cache, prescale)
        return cache
    inputs = LayerInputs(model, ctx.batches(ctx.calibration))
    sites = adapter.linear_sites()
    for layer in range(adapter.num_layers):
        before = [f"{s.name}={assignment[s.name][0]}:{assignment[s.name][1].label()}" for s in sites if s.layer < layer]
        jobs = _group_jobs(adapter, assignment, cache, tag, layer, stats_tag=text_digest(tag, "sequential", *before))
        # Live statistics already see any smoothing folded into the model: no rescaling.
        _run_jobs(jobs, inputs.stats(layer) if any(job.needs_stats for job in jobs) else {}, cache, {})
    return cache


@register_technique
class Quantize(Technique):
    name = "quantize"
    Params = QuantizeParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = QuantizeParams.model_validate(params)
        bits = f"~{p.budget_bits:g}" if p.allocation == "sensitivity" else str(p.bits)
        bits += "/fisher" if p.allocation == "sensitivity" and p.sensitivity_proxy == "fisher" else ""
        if p.latency_budget is not None:
            bits = f"@{p.latency_budget.decode_ms_per_token:g}ms/{p.latency_budget.target}"
            bits += f"~{p.avg_bits:g}" if p.avg_bits is not None else ""
        text = f"{p.method} w{bits}g{p.group_size}" + ("" if p.symmetric else " asym")
        text += " +emb" if p.embeddings else ""
        text += f" a{p.act_bits}" if p.act_bits < 16 else ""
        text += f" sq{p.smoothquant_alpha:g}" if p.smoothquant_alpha is not None else ""
        text += " gguf" if p.grid == "gguf" else ""
        text += " seq" if p.sequential else ""
        text += (f" kv{p.kv_bits}" if p.kv_bits < 16 else "") + (" rot" if p.rotate != "none" else "")
        return text + "".join(f" {o.label()}:{o.method or ''}w{o.bits or p.bits}" for o in p.overrides)

    def apply(self, model: nn.Module, params: QuantizeParams, ctx: CompressionContext) -> nn.Module:
        lineage = ctx.lineage
        try:
            if params.rotate == "hadamard":
                rotate(model, ctx.seed)
                # Statistics and cached weights from here on are those of the rotated model.
                ctx.lineage = rotation_lineage(params, lineage)
            adapter = ModelAdapter(model)
            assignment = plan(adapter, params, self.allocation(model, params, ctx))
            scales, tag = {}, ""
            if params.smoothquant_alpha is not None:
                scales = smooth(model, input_stats(model, ctx), params.smoothquant_alpha)
                tag = f"sq{params.smoothquant_alpha}"
            quantize_linears(model, assignment, ctx, prescale=scales, tag=tag, sequential=params.sequential)
        finally:
            ctx.lineage = lineage
        if params.act_bits < 16:
            add_activation_quant(model, params.act_bits)
        set_kv_bits(model, params.kv_bits)
        if params.embeddings:
            _quantize_embeddings(adapter, QuantFormat(params.bits, params.group_size, params.symmetric, params.grid))
        return model

    @staticmethod
    def allocation(model: nn.Module, params: QuantizeParams, ctx: CompressionContext) -> dict[str, int] | None:
        """Per-layer bits for ``allocation: sensitivity``; None means the step's ``bits`` everywhere."""
        if params.allocation == "uniform":
            return None
        errors = layer_sensitivity(model, ctx, params.bit_choices, params.group_size, params.symmetric,
                                   params.sensitivity_proxy)
        budgets = []
        if params.latency_budget is not None:
            budgets.append(decode_costs(model, params.latency_budget, params.bit_choices, params.group_size,
                                        params.symmetric))
        if params.latency_budget is None or params.avg_bits is not None:
            sizes = {s.name: s.module.weight.numel() for s in ModelAdapter(model).linear_sites()}
            budgets.append(bits_budget(sizes, params.bit_choices, params.budget_bits))
        return allocate_bits(errors, params.bit_choices, budgets)

    def predict_profile(self, profile: ModelProfile, params: QuantizeParams,
                        ctx: CompressionContext) -> ModelProfile | None:
        """Formats from the plan (overrides, embeddings, KV bits, an untied head when rotating); a
        sensitivity allocation only when its error table is already cached (else None)."""
        if params.rotate == "hadamard":
            profile = replace(profile, tied_embeddings=False)
        sites = [(lin, lin.in_features) for lin in profile.block_linears]
        bits = None
        if params.allocation == "sensitivity":
            bits = self.predicted_allocation(profile, params, ctx)
            if bits is None:
                return None
        assignment = assign(sites, profile.num_layers, params, bits)
        linears = tuple(_formatted(lin, assignment[lin.name][1]) if lin.layer is not None else lin
                        for lin in profile.linears)
        profile = replace(profile, linears=linears, kv_bits=params.kv_bits if params.kv_bits < 16 else profile.kv_bits)
        if params.embeddings:
            fmt = QuantFormat(params.bits, params.group_size, params.symmetric, params.grid)
            check_format(fmt, "the embedding", profile.hidden_size)
            profile = replace(profile, embedding_bits=fmt.bits, embedding_group_size=fmt.group_size,
                              embedding_symmetric=fmt.symmetric,
                              linears=tuple(_formatted(lin, fmt) if lin.role == "lm_head" else lin
                                            for lin in profile.linears))
        return profile

    @staticmethod
    def predicted_allocation(profile: ModelProfile, params: QuantizeParams,
                             ctx: CompressionContext) -> dict[str, int] | None:
        """:meth:`allocation` from a profile, when the error table of the model entering the step is cached."""
        lineage = ctx.lineage
        ctx.lineage = rotation_lineage(params, lineage)  # where apply reads the table
        try:
            errors = cached_sensitivity(ctx, params.bit_choices, params.group_size, params.symmetric,
                                        params.sensitivity_proxy)
        finally:
            ctx.lineage = lineage
        if errors is None:
            return None
        budgets = []
        if params.latency_budget is not None:
            costs = profile_decode_costs(profile, params.latency_budget, params.bit_choices, params.group_size,
                                         params.symmetric)
            if costs is None:
                return None
            budgets.append(costs)
        if params.latency_budget is None or params.avg_bits is not None:
            sizes = {lin.name: lin.params for lin in profile.block_linears}
            budgets.append(bits_budget(sizes, params.bit_choices, params.budget_bits))
        return allocate_bits(errors, params.bit_choices, budgets)


def rotation_lineage(params: QuantizeParams, lineage: str) -> str:
    """The lineage under which statistics are taken once the step's rotation (if any) is done."""
    return text_digest(lineage, "rotate", params.rotate) if params.rotate == "hadamard" else lineage


def _formatted(lin, fmt: QuantFormat):
    return replace(lin, bits=fmt.bits, group_size=fmt.group_size, symmetric=fmt.symmetric)


@torch.no_grad()
def _quantize_embeddings(adapter: ModelAdapter, fmt: QuantFormat) -> None:
    """Round the input embedding and LM head; a tied head shares the tensor: quantized once, both recorded."""
    grids = {}
    for module in {id(m.weight): m for m in (adapter.input_embedding, adapter.lm_head)}.values():
        check_format(fmt, "the embedding", module.weight.shape[1])
        result = rtn_grid(module.weight, fmt)
        module.weight.copy_(result.weight)
        grids[id(module.weight)] = result.grid
    for module in (adapter.input_embedding, adapter.lm_head):
        set_weight_format(module, WeightFormat(fmt.bits, fmt.group_size, fmt.symmetric))
        set_weight_grid(module, grids[id(module.weight)])
