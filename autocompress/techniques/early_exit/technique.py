"""The ``early_exit`` technique: exits after chosen blocks, with the exit depth measured on held-out text
(the mechanism is ``policy.py``)."""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import nn

from autocompress.context import CompressionContext
from autocompress.hardware.profile import ModelProfile
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique
from autocompress.techniques.early_exit.policy import attach_early_exit, check_exit_layers, measure_exit_depth


class EarlyExitParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threshold: float = Field(0.9, gt=0.0, le=1.0, description="exit when the top-token probability exceeds this")
    exit_layers: list[int] = Field(
        default_factory=list,
        description="blocks after which a token may exit; empty: from first_exit on, every exit_every blocks",
    )
    first_exit: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="fraction of the depth after which the first exit sits "
        "(searchable stand-in for exit_layers; default 0.5)",
    )
    exit_every: int | None = Field(None, ge=1, description="blocks between exits after the first (default 4)")

    @model_validator(mode="after")
    def _one_placement(self) -> EarlyExitParams:
        if self.exit_layers and (self.first_exit is not None or self.exit_every is not None):
            raise ValueError("exit_layers: give either exit_layers or first_exit/exit_every, not both")
        return self

    def layers(self, depth: int) -> list[int]:
        """The blocks after which a token may exit, for a decoder of ``depth`` blocks."""
        if self.exit_layers:
            return self.exit_layers
        first = max(round((self.first_exit or 0.5) * depth), 1)
        return list(range(first, depth, self.exit_every or 4))


@register_technique
class EarlyExit(Technique[EarlyExitParams]):
    name = "early_exit"
    Params = EarlyExitParams

    @classmethod
    def describe(cls, params: dict) -> str:
        p = EarlyExitParams.model_validate(params)
        if p.exit_layers:
            return f"exit>{p.threshold:g}@{','.join(map(str, p.exit_layers))}"
        return f"exit>{p.threshold:g}@{p.first_exit or 0.5:g}/{p.exit_every or 4}"

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        return RuntimeSupport(
            lacks=[
                "early exit: llama.cpp always runs every block; the GGUF computes the model "
                "without exits (measured KL compares it with the torch model without exits)"
            ]
        )

    def apply(self, model: nn.Module, params: EarlyExitParams, ctx: CompressionContext) -> nn.Module:
        if params.threshold >= 1.0:  # no probability exceeds 1: nothing would exit, and nothing is checked
            return model
        policy = attach_early_exit(model, params.layers(ModelAdapter(model).num_layers), params.threshold)
        # The expected depth the hardware model charges: measured on the held-out text.
        policy.expected_depth, policy.expected_head_reads = measure_exit_depth(model, ctx.batches(ctx.evaluation))
        return model

    def predict_profile(
        self, profile: ModelProfile, params: EarlyExitParams, ctx: CompressionContext
    ) -> ModelProfile | None:
        """Unchanged when nothing can exit. Otherwise the exit depth is measured on text: it is NaN here,
        so the metrics that depend on it (decode latency, energy) come out unknown; memory and prefill do not."""
        if params.threshold >= 1.0:
            return profile
        check_exit_layers(params.layers(profile.num_layers), profile.num_layers)
        return replace(profile, avg_exit_layer=math.nan, exit_head_reads=math.nan)
