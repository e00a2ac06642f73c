"""Width pruning: remove MLP channels and attention heads / KV groups, physically shrinking the linears.

Importance is measured on activations, Minitron-style (Muralidharan et al., 2024, "Compact Language
Models via Pruning and Knowledge Distillation"): an MLP channel's importance is the L2 norm of its
activation over the calibration tokens (the input of ``mlp.down``), a head's is the L2 norm of its
attention output (its ``head_dim`` slice of the input of ``attn.o``), a KV group's the sum over its
query heads. Both come from the shared calibration statistics.

Which channels and heads go is chosen per layer, how many is uniform across layers: the stock
transformers config (``intermediate_size``, ``num_attention_heads``, ``num_key_value_heads``) has
one width per model, and the saved checkpoint must load with ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.hardware.profile import ModelProfile
from autocompress.inputs import input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique


class PruneWidthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ffn_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of MLP channels removed in every layer")
    heads_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="fraction of query heads removed within every KV group")
    kv_groups_ratio: float = Field(
        0.0, ge=0.0, lt=1.0, description="fraction of KV groups removed, with their query heads"
    )


def removed(total: int, ratio: float, field: str, what: str) -> int:
    """How many of ``total`` a ratio removes; an error if that is all of them."""
    count = round(ratio * total)
    if count >= total:
        raise ConfigError(
            f"prune_width.{field}",
            f"{ratio} would remove all {total} {what}; at most {(total - 1) / total:.3f} keeps one",
        )
    return count


def new_widths(params: PruneWidthParams, ffn_width: int, group: int, kv_heads: int) -> tuple[int, int, int]:
    """(MLP channels, query heads per KV group, KV groups) that stay."""
    return (
        ffn_width - removed(ffn_width, params.ffn_ratio, "ffn_ratio", "MLP channels"),
        group - removed(group, params.heads_ratio, "heads_ratio", "query heads of a KV group"),
        kv_heads - removed(kv_heads, params.kv_groups_ratio, "kv_groups_ratio", "KV groups"),
    )


# Which dimension of each role's weight a width stands for: (role, "out"/"in") -> width name.
_RESIZED = {
    ("attn.q", "out"): "q",
    ("attn.k", "out"): "kv",
    ("attn.v", "out"): "kv",
    ("attn.o", "in"): "q",
    ("mlp.gate", "out"): "ffn",
    ("mlp.up", "out"): "ffn",
    ("mlp.down", "in"): "ffn",
}
_SEPARATE_ROLES = {role for role, _ in _RESIZED}


def predict_width(profile: ModelProfile, params: PruneWidthParams) -> ModelProfile | None:
    """The narrowed shapes (which channels and heads go does not change them); None for fused q/k/v or
    gate/up linears, which ``apply`` refuses with its own error."""
    group = profile.num_heads // profile.num_kv_heads
    ffn, new_group, new_kv = new_widths(params, profile.intermediate_size, group, profile.num_kv_heads)
    if (ffn, new_group, new_kv) == (profile.intermediate_size, group, profile.num_kv_heads):
        return profile
    if any(lin.role not in _SEPARATE_ROLES for lin in profile.block_linears):
        return None
    width = {"q": new_kv * new_group * profile.head_dim, "kv": new_kv * profile.head_dim, "ffn": ffn}

    def resized(lin):
        out, inp = width.get(_RESIZED.get((lin.role, "out"))), width.get(_RESIZED.get((lin.role, "in")))
        return replace(lin, out_features=out or lin.out_features, in_features=inp or lin.in_features)

    return replace(
        profile,
        num_heads=new_kv * new_group,
        num_kv_heads=new_kv,
        intermediate_size=ffn,
        linears=tuple(resized(lin) if lin.layer is not None else lin for lin in profile.linears),
    )


def top(importance: torch.Tensor, keep: int) -> torch.Tensor:
    """Indices of the ``keep`` most important entries along the last dim, in their original order."""
    return importance.topk(keep, dim=-1).indices.sort(dim=-1).values


@register_technique
class PruneWidth(Technique[PruneWidthParams]):
    name = "prune_width"
    Params = PruneWidthParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = PruneWidthParams.model_validate(params)
        parts = [
            f"{label} -{value:.0%}"
            for label, value in (("ffn", p.ffn_ratio), ("heads", p.heads_ratio), ("kv", p.kv_groups_ratio))
            if value
        ]
        return "width " + (" ".join(parts) or "unchanged")

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        return RuntimeSupport(gets=[f"{cls.name}: smaller tensors / fewer blocks, expressed as GGUF hyperparameters"])

    def apply(self, model: nn.Module, params: PruneWidthParams, ctx: CompressionContext) -> nn.Module:
        adapter = ModelAdapter(model)
        heads, kv_heads = adapter.num_heads, adapter.num_kv_heads
        group = heads // kv_heads
        ffn_width = adapter.config.intermediate_size
        new_ffn, new_group, new_kv = new_widths(params, ffn_width, group, kv_heads)
        if (new_ffn, new_group, new_kv) == (ffn_width, group, kv_heads):
            return model
        stats = input_stats(model, ctx)
        for i in range(adapter.num_layers):
            linears = adapter.block_linears(i)
            if new_ffn < ffn_width:
                adapter.keep_mlp_channels(i, top(stats[linears["mlp.down"].name].sq_norm, new_ffn))
            if (new_group, new_kv) != (group, kv_heads):
                # Head importance: ||attention output of the head||_2 over the calibration tokens.
                head_norm = stats[linears["attn.o"].name].sq_norm.view(kv_heads, group, -1).sum(-1).sqrt()
                kv_keep = top(head_norm.sum(-1), new_kv)  # KV groups by the sum of their heads
                within = top(head_norm[kv_keep], new_group)  # [new_kv, new_group] head index in its group
                adapter.keep_heads(i, (kv_keep[:, None] * group + within).flatten(), kv_keep)
        adapter.set_width(new_ffn, new_kv * new_group, new_kv)
        return model

    def predict_profile(
        self, profile: ModelProfile, params: PruneWidthParams, ctx: CompressionContext
    ) -> ModelProfile | None:
        return predict_width(profile, params)
