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


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes exactly ``round(sparsity * numel)`` weights of smallest magnitude."""
    n_zero = round(sparsity * weight.numel())
    mask = torch.ones(weight.numel(), dtype=torch.bool)
    if n_zero:
        order = torch.argsort(weight.abs().flatten(), stable=True)
        mask[order[:n_zero]] = False
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
