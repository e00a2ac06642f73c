"""Per-layer sensitivity (the GPTQ proxy) and bit allocation under an average-bits budget.

The sensitivity of a linear at ``b`` bits is the output error that round-to-nearest at ``b`` bits
causes on the calibration inputs, ``tokens * tr(dW H dW^T)`` (GPTQ's layer objective, summed over
tokens so that layers are comparable). It is computed once per (model, calibration data, choices)
and stored as safetensors next to the calibration statistics.
"""

from __future__ import annotations

import heapq

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from autocompress.calibration import input_stats
from autocompress.context import CompressionContext
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.quant.grid import QuantFormat, output_error, rtn


def layer_sensitivity(model: nn.Module, ctx: CompressionContext, bit_choices: list[int], group_size: int,
                      symmetric: bool) -> dict[str, list[float]]:
    """``{linear name: [error at each of bit_choices]}``, memoised and cached on disk."""
    key = ctx.cache_key("sensitivity", ",".join(map(str, bit_choices)), str(group_size), str(symmetric))
    path = ctx.cache_dir / "calibration" / f"sensitivity-{key}.safetensors"

    def compute() -> dict[str, list[float]]:
        if ctx.model_digest and path.is_file():
            return {name: t.tolist() for name, t in load_file(str(path)).items()}
        stats = input_stats(model, ctx)
        table = {}
        for site in ModelAdapter(model).linear_sites():
            s = stats[site.name]
            w = site.module.weight.detach()
            formats = [QuantFormat(b, group_size, symmetric) for b in bit_choices]
            table[site.name] = [s.tokens * output_error(w, rtn(w, f), s.hessian).item() for f in formats]
        if ctx.model_digest:
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({n: torch.tensor(v, dtype=torch.float64) for n, v in table.items()}, str(path))
        return table

    return ctx.memo(f"sensitivity/{key}", compute)


def allocate_bits(sizes: dict[str, int], errors: dict[str, list[float]], bit_choices: list[int],
                  avg_bits: float) -> dict[str, int]:
    """Greedy allocation: start every layer at the fewest bits, then repeatedly take the upgrade
    (one step up in ``bit_choices``) that removes the most error per extra stored bit, while the
    parameter-weighted mean stays within ``avg_bits``."""
    choices = sorted(bit_choices)
    order = {b: i for i, b in enumerate(bit_choices)}
    level = {name: 0 for name in sizes}
    budget = avg_bits * sum(sizes.values()) - choices[0] * sum(sizes.values())

    def gain(name: str) -> tuple[float, str]:
        now, nxt = choices[level[name]], choices[level[name] + 1]
        saved = errors[name][order[now]] - errors[name][order[nxt]]
        return -saved / ((nxt - now) * sizes[name]), name

    heap = [gain(n) for n in sorted(sizes)]
    heapq.heapify(heap)
    while heap:
        _, name = heapq.heappop(heap)
        cost = (choices[level[name] + 1] - choices[level[name]]) * sizes[name]
        if cost > budget:
            continue  # too large for what is left; smaller upgrades may still fit
        budget -= cost
        level[name] += 1
        if level[name] + 1 < len(choices):
            heapq.heappush(heap, gain(name))
    return {name: choices[i] for name, i in level.items()}
