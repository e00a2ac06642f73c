"""Depth pruning: drop the decoder blocks that change the hidden state least (ShortGPT).

Block influence BI_i = 1 - mean over tokens of cos(h_i, h_{i+1}), measured on calibration text
(Men et al., 2024, "ShortGPT"). The ``drop_layers`` blocks with the lowest BI are removed.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.hardware.profile import ModelProfile
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique


@torch.no_grad()
def block_influence(model: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    """Per-block influence ``[num_layers]``: 1 - cos(block input, block output), token mean."""
    layers = ModelAdapter(model).layers
    totals = torch.zeros(len(layers), dtype=torch.float64)

    def hook(index: int):
        def record(module: nn.Module, args: tuple, kwargs: dict, output) -> None:
            h_in = args[0] if args else kwargs["hidden_states"]
            h_out = output[0] if isinstance(output, tuple) else output
            totals[index] += (1 - F.cosine_similarity(h_in, h_out, dim=-1)).sum().double()

        return record

    handles = [layer.register_forward_hook(hook(i), with_kwargs=True) for i, layer in enumerate(layers)]
    try:
        tokens = 0
        for ids in batches:
            model(input_ids=ids)
            tokens += ids.numel()
    finally:
        for handle in handles:
            handle.remove()
    return (totals / tokens).float()


class PruneDepthParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    drop_layers: int = Field(0, ge=0, description="number of decoder blocks to remove")
    importance: str = Field("block_influence", pattern="^block_influence$")


@register_technique
class PruneDepth(Technique[PruneDepthParams]):
    name = "prune_depth"
    Params = PruneDepthParams

    @classmethod
    def describe(cls, params: dict) -> str:
        return f"drop {params.get('drop_layers', 0)} layers"

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        return RuntimeSupport(gets=[f"{cls.name}: smaller tensors / fewer blocks, expressed as GGUF hyperparameters"])

    def apply(self, model: nn.Module, params: PruneDepthParams, ctx: CompressionContext) -> nn.Module:
        adapter = ModelAdapter(model)
        check_drop(params.drop_layers, adapter.num_layers)
        if params.drop_layers == 0:
            return model
        adapter.keep_layers(kept_blocks(model, params, ctx))
        return model

    def predict_profile(
        self, profile: ModelProfile, params: PruneDepthParams, ctx: CompressionContext
    ) -> ModelProfile | None:
        """As :func:`predict_depth`; on the base model (the first step) the kept blocks are known exactly
        (block influence is measured once, on the base model), so the profile also says which blocks remain."""
        predicted = predict_depth(profile, params)
        if predicted is None or params.drop_layers == 0 or ctx.lineage:
            return predicted
        kept = kept_blocks(ctx.base_model, params, ctx)
        return replace(predicted, layer_origin=tuple(profile.origin(i) for i in kept))


def kept_blocks(model: nn.Module, params: PruneDepthParams, ctx: CompressionContext) -> list[int]:
    """The blocks that stay: all but the ``drop_layers`` of lowest influence on the model entering the step."""
    influence = ctx.memo("block_influence", lambda: block_influence(model, ctx.batches(ctx.calibration)))
    drop = set(torch.argsort(influence, stable=True)[: params.drop_layers].tolist())
    return [i for i in range(len(influence)) if i not in drop]


def check_drop(drop_layers: int, num_layers: int) -> None:
    if drop_layers >= num_layers:
        raise ConfigError("prune_depth.drop_layers", f"{drop_layers} must be less than the model's {num_layers} layers")


def _block_signature(profile: ModelProfile, layer: int) -> list[tuple]:
    """A block's linears as a cost model sees them: shapes, formats, 2:4 pattern. (The count of zeros a
    weight happens to hold differs from block to block; only sparse-unstructured kernels read it, and
    predictions are not used for targets that have them: see ``pipeline.predict_recipe_cost``.)"""
    return sorted(
        (lin.role, lin.in_features, lin.out_features, lin.bits, lin.group_size, lin.sparse_2_4)
        for lin in profile.block_linears
        if lin.layer == layer
    )


def predict_depth(profile: ModelProfile, params: PruneDepthParams) -> ModelProfile | None:
    """Which blocks go is measured on text, but when every block looks the same to a cost model it does not
    matter: the first ``num_layers - drop_layers`` stand for the kept ones. Otherwise None."""
    check_drop(params.drop_layers, profile.num_layers)
    if params.drop_layers == 0:
        return profile
    first = _block_signature(profile, 0)
    if any(_block_signature(profile, i) != first for i in range(1, profile.num_layers)):
        return None
    kept = profile.num_layers - params.drop_layers  # kept blocks are renumbered 0..kept-1, names included
    linears = tuple(lin for lin in profile.linears if lin.layer is None or lin.layer < kept)
    return replace(profile, num_layers=kept, linears=linears)
