"""The ``sparsify`` technique: zero the least important weights of each decoder linear, unstructured or N:M.

Methods (``method``, ``methods.SPARSITY_METHODS``): ``magnitude`` (|W|), ``wanda`` (|W| * ||X||) and
``sparsegpt`` (OBS with weight updates); the last two read the shared calibration statistics
(:func:`input_stats`).
"""

from __future__ import annotations

import re
from dataclasses import replace
from typing import Annotated, Any

import torch
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.hardware.profile import ModelProfile
from autocompress.inputs import input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique
from autocompress.techniques.selection import ModuleSelector
from autocompress.techniques.sparsify.masks import SparsityTarget, mark_sparse
from autocompress.techniques.sparsify.methods import SPARSITY_METHODS

_PATTERN = re.compile(r"^(\d+):(\d+)$")


def parse_pattern(value: str | None) -> str | None:
    """Check an ``"N:M"`` pattern: keep N of every M consecutive weights, 0 < N < M."""
    if value is None:
        return None
    match = _PATTERN.match(value)
    if not match:
        raise ValueError(f"{value!r} must look like 'N:M', e.g. '2:4' or '4:8'")
    n, m = map(int, match.groups())
    if not 0 < n < m:
        raise ValueError(f"{value!r} needs 0 < N < M (N weights kept of every M)")
    return value


Pattern = Annotated[str | None, AfterValidator(parse_pattern)]


class SparsityOverride(ModuleSelector):
    """Different sparsity for the selected modules; unset fields inherit the step's."""

    sparsity: float | None = Field(None, ge=0.0, le=0.9)
    pattern: Pattern = None


class SparsifyParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "magnitude"
    sparsity: float = Field(0.5, ge=0.0, le=0.9, description="fraction of zeros in each linear (unstructured)")
    pattern: Pattern = Field(None, description="'N:M': keep N of every M inputs; replaces sparsity")
    overrides: list[SparsityOverride] = Field(default_factory=list)

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        return SPARSITY_METHODS.known(value, "method")


def _target(sparsity: float, pattern: str | None) -> SparsityTarget:
    if pattern is None:
        return SparsityTarget(sparsity)
    n, m = map(int, pattern.split(":"))
    return SparsityTarget(1 - n / m, n, m)


def site_target(site, num_layers: int, in_features: int, params: SparsifyParams) -> SparsityTarget:
    """The step's target for one linear (``site``: anything with ``name``, ``role``, ``layer``), after
    its overrides; an error if an N:M group does not tile the linear's input width."""
    sparsity, pattern = params.sparsity, params.pattern
    for override in params.overrides:
        if override.selects(site, num_layers):
            if override.pattern is not None or override.sparsity is not None:
                pattern = override.pattern
                sparsity = sparsity if override.sparsity is None else override.sparsity
    target = _target(sparsity, pattern)
    if target.structured and in_features % target.m:
        raise ConfigError(
            "sparsify.pattern", f"M={target.m} does not divide the input width {in_features} of {site.name}"
        )
    return target


def always_2_4(target: SparsityTarget, in_features: int) -> bool:
    """Whether every aligned group of 4 inputs holds at least 2 zeros whatever the weights (the
    profile's 2:4 test): N:M with M dividing 4 or M a multiple of 4, and enough zeros per group."""
    if not target.structured or in_features % 4:
        return False
    if 4 % target.m == 0:
        return (4 // target.m) * (target.m - target.n) >= 2
    return target.m % 4 == 0 and target.n <= 2


@register_technique
class Sparsify(Technique[SparsifyParams]):
    name = "sparsify"
    Params = SparsifyParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = SparsifyParams.model_validate(params)
        amount = lambda s, pat: pat or f"{s:.0%}"  # noqa: E731
        return f"{p.method} {amount(p.sparsity, p.pattern)}" + "".join(
            f" {o.label()}:{amount(o.sparsity if o.sparsity is not None else p.sparsity, o.pattern)}"
            for o in p.overrides
        )

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        pattern = params.get("pattern")
        what = f"{pattern} sparsity" if pattern else f"{params.get('sparsity', 0.5):.0%} unstructured sparsity"
        return RuntimeSupport(
            lacks=[
                f"{what}: zeros are stored and multiplied densely; llama.cpp has no sparse "
                "kernels, so neither file size nor speed improves (the packed format stores "
                "the masks)"
            ]
        )

    def apply(self, model: nn.Module, params: SparsifyParams, ctx: CompressionContext) -> nn.Module:
        method = SPARSITY_METHODS[params.method]()
        adapter = ModelAdapter(model)
        stats = input_stats(model, ctx) if method.needs_stats else {}
        with torch.no_grad():
            for site in adapter.linear_sites():
                target = site_target(site, adapter.num_layers, site.module.in_features, params)
                if target.fraction > 0:
                    weight = site.module.weight
                    weight.copy_(method.prune(weight, stats.get(site.name), target))
                    mark_sparse(site.module)
        return model

    def predict_profile(
        self, profile: ModelProfile, params: SparsifyParams, ctx: CompressionContext
    ) -> ModelProfile | None:
        """The zeros each method sets, counted from the shapes (at least the zeros already there)."""
        count = SPARSITY_METHODS[params.method]().zeros

        def sparsified(lin):
            target = site_target(lin, profile.num_layers, lin.in_features, params)
            if target.fraction == 0:
                return lin
            rows, cols = lin.out_features, lin.in_features
            zeros = (
                rows * cols // target.m * (target.m - target.n)
                if target.structured
                else count(rows, cols, target.sparsity)
            )
            sparsity = max(lin.sparsity, zeros / lin.params)
            two_four = lin.sparse_2_4 or always_2_4(target, cols)
            return replace(lin, sparsity=sparsity, sparse_2_4=two_four and sparsity >= 0.5)

        return replace(
            profile, linears=tuple(sparsified(lin) if lin.layer is not None else lin for lin in profile.linears)
        )
