"""The ``quantize`` technique: weight quantization, simulated (weights are quantized then dequantized in place).

Each decoder linear gets a method (``rtn``, ``gptq``, ``awq``; ``methods.py``) and a format (bits, group
size, symmetric) from the step's defaults and its overrides (``params.py``, ``linears.py``). Results are
cached per module on disk (``weight_cache.py``). The storage format each weight would have on the device is
recorded with :func:`set_weight_format`, so hardware models see bits and group sizes.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from torch import nn

from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.hardware.profile import LinearProfile, ModelProfile
from autocompress.inputs import input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique
from autocompress.techniques.quantize.activations import add_activation_quant, smooth
from autocompress.techniques.quantize.grid import QuantFormat, check_format
from autocompress.techniques.quantize.kv import set_kv_bits
from autocompress.techniques.quantize.latency import decode_costs, profile_decode_costs
from autocompress.techniques.quantize.linears import assign, plan, quantize_embeddings, quantize_linears
from autocompress.techniques.quantize.params import QuantizeParams
from autocompress.techniques.quantize.rotation import rotate
from autocompress.techniques.quantize.sensitivity import (
    allocate_bits,
    bits_budget,
    cached_sensitivity,
    layer_sensitivity,
)


@register_technique
class Quantize(Technique[QuantizeParams]):
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

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        gets = [f"weights stored as GGUF block types ({params.get('bits', 4)}-bit requested)"]
        lacks = []
        if params.get("act_bits", 16) < 16:
            lacks.append(
                "act_bits 8 is simulated per token; llama.cpp quantizes activations to 8 bits per "
                "block of 32 inside its Q4_0/Q8_0 dot products, not per token"
            )
        if params.get("kv_bits", 16) < 16:
            lacks.append(
                f"kv_bits {params['kv_bits']}: the file does not carry it; llama.cpp's cache type "
                "(type_k/type_v q8_0 or q4_0) is a run-time option, not applied by `deploy measure`"
            )
        if params.get("rotate", "none") != "none":
            gets.append("hadamard rotation (folded into the weights)")
        return RuntimeSupport(gets, lacks)

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
            quantize_embeddings(adapter, QuantFormat(params.bits, params.group_size, params.symmetric, params.grid))
        return model

    @staticmethod
    def allocation(model: nn.Module, params: QuantizeParams, ctx: CompressionContext) -> dict[str, int] | None:
        """Per-layer bits for ``allocation: sensitivity``; None means the step's ``bits`` everywhere."""
        if params.allocation == "uniform":
            return None
        errors = layer_sensitivity(
            model, ctx, params.bit_choices, params.group_size, params.symmetric, params.sensitivity_proxy
        )
        budgets = []
        if params.latency_budget is not None:
            budgets.append(
                decode_costs(model, params.latency_budget, params.bit_choices, params.group_size, params.symmetric)
            )
        if params.latency_budget is None or params.avg_bits is not None:
            sizes = {s.name: s.module.weight.numel() for s in ModelAdapter(model).linear_sites()}
            budgets.append(bits_budget(sizes, params.bit_choices, params.budget_bits))
        return allocate_bits(errors, params.bit_choices, budgets)

    def predict_profile(
        self, profile: ModelProfile, params: QuantizeParams, ctx: CompressionContext
    ) -> ModelProfile | None:
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
        linears = tuple(
            _formatted(lin, assignment[lin.name][1]) if lin.layer is not None else lin for lin in profile.linears
        )
        profile = replace(profile, linears=linears, kv_bits=params.kv_bits if params.kv_bits < 16 else profile.kv_bits)
        if params.embeddings:
            fmt = QuantFormat(params.bits, params.group_size, params.symmetric, params.grid)
            check_format(fmt, "the embedding", profile.hidden_size)
            profile = replace(
                profile,
                embedding_bits=fmt.bits,
                embedding_group_size=fmt.group_size,
                embedding_symmetric=fmt.symmetric,
                linears=tuple(_formatted(lin, fmt) if lin.role == "lm_head" else lin for lin in profile.linears),
            )
        return profile

    @staticmethod
    def predicted_allocation(
        profile: ModelProfile, params: QuantizeParams, ctx: CompressionContext
    ) -> dict[str, int] | None:
        """:meth:`allocation` from a profile, when the error table of the model entering the step is cached."""
        lineage = ctx.lineage
        ctx.lineage = rotation_lineage(params, lineage)  # where apply reads the table
        try:
            errors = cached_sensitivity(
                ctx, params.bit_choices, params.group_size, params.symmetric, params.sensitivity_proxy
            )
        finally:
            ctx.lineage = lineage
        if errors is None:
            return None
        budgets = []
        if params.latency_budget is not None:
            costs = profile_decode_costs(
                profile, params.latency_budget, params.bit_choices, params.group_size, params.symmetric
            )
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


def _formatted(lin: LinearProfile, fmt: QuantFormat) -> LinearProfile:
    return replace(lin, bits=fmt.bits, group_size=fmt.group_size, symmetric=fmt.symmetric)
