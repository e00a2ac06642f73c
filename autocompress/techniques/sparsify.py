"""Unstructured sparsity: zero the least important weights of each decoder linear."""

from __future__ import annotations

from typing import Callable

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from autocompress.context import CompressionContext
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import Technique, register_technique
from autocompress.techniques.selection import ModuleSelector


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-th smallest (1-based) of a flat tensor, by bracketing it with quantiles of a sample.

    Two comparisons over the whole tensor plus a selection among the few values inside the
    bracket: several times faster than ``torch.kthvalue`` on the full tensor.
    """
    n = values.numel()
    if n > 1 << 16:
        sample = values[torch.randint(n, (1 << 14,), generator=torch.Generator().manual_seed(0))]
        q = k / n
        lo, hi = torch.quantile(sample, torch.tensor([max(q - 0.02, 0.0), min(q + 0.02, 1.0)]))
        below = int((values < lo).sum())
        inside = values[(values >= lo) & (values <= hi)]
        if below < k <= below + inside.numel():
            return torch.kthvalue(inside, k - below).values
    return torch.kthvalue(values, k).values


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes exactly ``round(sparsity * numel)`` weights of smallest magnitude."""
    n_zero = round(sparsity * weight.numel())
    magnitude = weight.abs().flatten()
    if n_zero == 0:
        return torch.ones_like(weight, dtype=torch.bool)
    threshold = kth_smallest(magnitude, n_zero)
    mask = magnitude > threshold
    # Ties at the threshold (common in dequantized checkpoints): zero the first ones by index.
    surplus = int((~mask).sum()) - n_zero
    if surplus > 0:
        ties = (magnitude == threshold).nonzero().flatten()
        mask[ties[-surplus:]] = True
    return mask.view_as(weight)


SPARSITY_METHODS: dict[str, Callable[[torch.Tensor, float], torch.Tensor]] = {"magnitude": magnitude_mask}
PLANNED_METHODS = ("wanda", "sparsegpt")


class SparsityOverride(ModuleSelector):
    sparsity: float = Field(ge=0.0, le=0.9)


class SparsifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "magnitude"
    sparsity: float = Field(0.5, ge=0.0, le=0.9, description="fraction of zeros in each linear")
    overrides: list[SparsityOverride] = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if value in PLANNED_METHODS:
            raise ValueError(f"method {value!r} is not yet available; available: {', '.join(SPARSITY_METHODS)}")
        if value not in SPARSITY_METHODS:
            raise ValueError(f"unknown method {value!r}; allowed: {', '.join(SPARSITY_METHODS)}")
        return value


@register_technique
class Sparsify(Technique):
    name = "sparsify"
    Params = SparsifyParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = SparsifyParams.model_validate(params)
        return f"{p.method} {p.sparsity:.0%}" + "".join(f" {o.label()}:{o.sparsity:.0%}" for o in p.overrides)

    def apply(self, model: nn.Module, params: SparsifyParams, ctx: CompressionContext) -> nn.Module:
        make_mask = SPARSITY_METHODS[params.method]
        adapter = ModelAdapter(model)
        with torch.no_grad():
            for site in adapter.linear_sites():
                sparsity = params.sparsity
                for override in params.overrides:
                    if override.selects(site, adapter.num_layers):
                        sparsity = override.sparsity
                if sparsity > 0:
                    site.module.weight.mul_(make_mask(site.module.weight, sparsity))
        return model
