"""Per-layer sensitivity to quantization, and bit allocation under average-bits and latency budgets.

A proxy (:data:`PROXIES`) scores every decoder linear at each candidate bit width by what
round-to-nearest at that width would cost:

- ``gptq``: the layer's own output error on the calibration inputs, ``tokens * tr(dW H dW^T)``
  (GPTQ's layer objective, summed over tokens so that layers are comparable);
- ``fisher``: the predicted rise of the model's loss, ``1/2 * sum(F * dW^2)`` with ``F`` the diagonal
  empirical Fisher of the next-token loss on the calibration text (the Gauss-Newton approximation of
  the loss Hessian's diagonal, as in HAWQ/SqueezeLLM) — loss-aware, so a layer counts by how much its
  errors move the next-token distribution rather than by the magnitude of its inputs.

A table is computed once per (model, calibration data, proxy, choices) and stored as safetensors.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from autocompress.cache import mark_used
from autocompress.context import CompressionContext
from autocompress.inputs import input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.registry import Registry
from autocompress.techniques.quantize.grid import QuantFormat, output_error, rtn

# proxy name -> (model, ctx, formats) -> {linear name: [score at each format]}
Proxy = Callable[[nn.Module, CompressionContext, list[QuantFormat]], dict[str, list[float]]]
PROXIES: Registry[Proxy] = Registry("sensitivity proxy")


def _gptq_proxy(model: nn.Module, ctx: CompressionContext, formats: list[QuantFormat]) -> dict[str, list[float]]:
    stats = input_stats(model, ctx)
    table = {}
    for site in ModelAdapter(model).linear_sites():
        s, w = stats[site.name], site.module.weight.detach()
        table[site.name] = [s.tokens * output_error(w, rtn(w, f), s.hessian).item() for f in formats]
    return table


def fisher_diagonal(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Diagonal empirical Fisher ``sum over sequences of (d loss / d W)^2`` of every decoder linear's
    weight, the loss being the mean next-token cross-entropy of one calibration sequence."""
    sites = ModelAdapter(model).linear_sites()
    flags = {p: p.requires_grad for p in model.parameters()}
    fisher = {site.name: torch.zeros_like(site.module.weight, dtype=torch.float32) for site in sites}
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for site in sites:
            site.module.weight.requires_grad_(True)
        with torch.enable_grad():
            for ids in torch.cat(batches):
                logits = model(input_ids=ids[None], use_cache=False).logits[0, :-1].float()
                loss = F.cross_entropy(logits, ids[1:])
                grads = torch.autograd.grad(loss, [site.module.weight for site in sites])
                for site, grad in zip(sites, grads):
                    fisher[site.name] += grad.float().pow(2)
    finally:
        for p, flag in flags.items():
            p.requires_grad_(flag)
    return fisher


def _fisher_proxy(model: nn.Module, ctx: CompressionContext, formats: list[QuantFormat]) -> dict[str, list[float]]:
    fisher = fisher_diagonal(model, ctx.batches(ctx.calibration))
    table = {}
    for site in ModelAdapter(model).linear_sites():
        w = site.module.weight.detach().float()
        table[site.name] = [0.5 * (fisher[site.name] * (rtn(w, f) - w).pow(2)).sum().item() for f in formats]
    return table


PROXIES.register(_gptq_proxy, "gptq")
PROXIES.register(_fisher_proxy, "fisher")


def _table_key(
    ctx: CompressionContext, bit_choices: Sequence[int], group_size: int, symmetric: bool, proxy: str
) -> str:
    return ctx.cache_key("sensitivity", proxy, ",".join(map(str, bit_choices)), str(group_size), str(symmetric))


def _table_path(ctx: CompressionContext, key: str) -> Path:
    return ctx.cache_dir / "calibration" / f"sensitivity-{key}.safetensors"


def cached_sensitivity(
    ctx: CompressionContext, bit_choices: Sequence[int], group_size: int, symmetric: bool, proxy: str = "gptq"
) -> dict[str, list[float]] | None:
    """:func:`layer_sensitivity` of the model at ``ctx.lineage`` if it is memoised or on disk, else None."""
    key = _table_key(ctx, bit_choices, group_size, symmetric, proxy)
    path = _table_path(ctx, key)
    if ctx.memoised(f"sensitivity/{key}") is None and not (ctx.model_digest and path.is_file()):
        return None

    def load() -> dict[str, list[float]]:
        mark_used(path)
        return {name: t.tolist() for name, t in load_file(str(path)).items()}

    return ctx.memo(f"sensitivity/{key}", load)


def layer_sensitivity(
    model: nn.Module,
    ctx: CompressionContext,
    bit_choices: Sequence[int],
    group_size: int,
    symmetric: bool,
    proxy: str = "gptq",
) -> dict[str, list[float]]:
    """``{linear name: [score at each of bit_choices]}`` by ``proxy``, memoised and cached on disk."""
    key = _table_key(ctx, bit_choices, group_size, symmetric, proxy)
    path = _table_path(ctx, key)

    def compute() -> dict[str, list[float]]:
        if ctx.model_digest and path.is_file():
            return {name: t.tolist() for name, t in load_file(str(path)).items()}
        formats = [QuantFormat(b, group_size, symmetric) for b in bit_choices]
        table = PROXIES.get(proxy, "sensitivity")(model, ctx, formats)
        if ctx.model_digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({n: torch.tensor(v, dtype=torch.float64) for n, v in table.items()}, str(path))
        return table

    return ctx.memo(f"sensitivity/{key}", compute)


def allocate_bits(
    errors: dict[str, list[float]], bit_choices: Sequence[int], budgets: list[tuple[dict[str, list[float]], float]]
) -> dict[str, int]:
    """Greedy allocation: start every layer at the fewest bits, then repeatedly take the upgrade
    (one step up in ``bit_choices``) that removes the most error per unit of cost, while every
    budget holds. A budget is ``(cost of each layer at each of bit_choices, total allowed)``; the
    first one prices the upgrades."""
    order = sorted(range(len(bit_choices)), key=lambda i: bit_choices[i])  # indices, fewest bits first
    level = {name: 0 for name in errors}
    left = [total - sum(cost[n][order[0]] for n in errors) for cost, total in budgets]

    def step_costs(name: str) -> list[float]:
        now, nxt = order[level[name]], order[level[name] + 1]
        return [cost[name][nxt] - cost[name][now] for cost, _ in budgets]

    def gain(name: str) -> tuple[float, str]:
        now, nxt = order[level[name]], order[level[name] + 1]
        saved = errors[name][now] - errors[name][nxt]
        return -saved / max(step_costs(name)[0], 1e-12), name

    heap = [gain(n) for n in sorted(errors)]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        extra = step_costs(name)
        if any(c > room + 1e-12 for c, room in zip(extra, left)):
            continue  # too large for what is left; smaller upgrades may still fit
        left = [room - c for c, room in zip(extra, left)]
        level[name] += 1
        if level[name] + 1 < len(order):
            heapq.heappush(heap, gain(name))
    return {name: bit_choices[order[i]] for name, i in level.items()}


def bits_budget(
    sizes: dict[str, int], bit_choices: Sequence[int], avg_bits: float
) -> tuple[dict[str, list[float]], float]:
    """The average-bits budget as costs: stored bits of each layer at each choice, and the total allowed."""
    return {n: [b * size for b in bit_choices] for n, size in sizes.items()}, avg_bits * sum(sizes.values())
