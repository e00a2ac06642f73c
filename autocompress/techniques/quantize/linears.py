"""Which method and format each linear gets, and quantizing them: per input group, cached per module."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.inputs import InputStats, LayerInputs, input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format, set_weight_grid
from autocompress.techniques.quantize.activations import rescaled
from autocompress.techniques.quantize.grid import QuantFormat, Quantized, check_format, rtn_grid
from autocompress.techniques.quantize.methods import WEIGHT_METHODS, Member
from autocompress.techniques.quantize.params import QuantizeParams
from autocompress.techniques.quantize.weight_cache import WeightCache


def plan(
    adapter: ModelAdapter, params: QuantizeParams, bits: dict[str, int] | None = None
) -> dict[str, tuple[str, QuantFormat]]:
    """Method and format of every decoder linear: the step's (with per-layer ``bits`` from an
    allocation, if given), then each matching override in order."""
    return assign([(s, s.module.in_features) for s in adapter.linear_sites()], adapter.num_layers, params, bits)


def assign(
    sites: Iterable[tuple[Any, int]], num_layers: int, params: QuantizeParams, bits: dict[str, int] | None = None
) -> dict[str, tuple[str, QuantFormat]]:
    """:func:`plan` over ``(site, input width)`` pairs; a site is anything with ``name``, ``role`` and
    ``layer`` (a module's :class:`LinearSite` or a profile's linear)."""
    out = {}
    for site, in_features in sites:
        layer_bits = bits[site.name] if bits else params.bits
        method, fmt = params.method, QuantFormat(layer_bits, params.group_size, params.symmetric, params.grid)
        for o in params.overrides:
            if o.selects(site, num_layers):
                method = o.method or method
                fmt = QuantFormat(
                    o.bits or fmt.bits,
                    fmt.group_size if o.group_size is None else o.group_size,
                    fmt.symmetric if o.symmetric is None else o.symmetric,
                    params.grid,
                )
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


def _group_jobs(
    adapter: ModelAdapter,
    assignment: dict[str, tuple[str, QuantFormat]],
    cache: WeightCache,
    tag: str,
    layer: int | None = None,
    stats_tag: str | None = None,
) -> list[_GroupJob]:
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
            keys = [
                cache.key(m.site.name, name, method.version, m.fmt.label(), siblings, str(fold), where) for m in members
            ]
            jobs.append(_GroupJob(name, members, fold, keys, [cache.get(k) for k in keys]))
    return jobs


@torch.no_grad()
def _run_jobs(
    jobs: list[_GroupJob], stats: dict[str, InputStats], cache: WeightCache, prescale: dict[str, torch.Tensor]
) -> None:
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
            set_weight_format(
                member.site.module, WeightFormat(member.fmt.bits, member.fmt.group_size, member.fmt.symmetric)
            )


def quantize_linears(
    model: nn.Module,
    assignment: dict[str, tuple[str, QuantFormat]],
    ctx: CompressionContext,
    cache: WeightCache | None = None,
    prescale: dict[str, torch.Tensor] | None = None,
    tag: str = "",
    sequential: bool = False,
) -> WeightCache:
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


@torch.no_grad()
def quantize_embeddings(adapter: ModelAdapter, fmt: QuantFormat) -> None:
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
