"""The quantize step's parameters: defaults, per-group overrides and the checks between them."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autocompress.techniques.quantize.latency import LatencyBudget
from autocompress.techniques.quantize.methods import WEIGHT_METHODS
from autocompress.techniques.quantize.sensitivity import PROXIES
from autocompress.techniques.selection import ModuleSelector

Bits = Literal[2, 3, 4, 8, 16]
GGUF_BLOCK = 32  # llama.cpp's Q8_0 / Q4_0 / Q4_1 blocks


def _known_method(value: str | None) -> str | None:
    return value if value is None else WEIGHT_METHODS.known(value, "method")


def _known_proxy(value: str) -> str:
    return PROXIES.known(value)


class QuantOverride(ModuleSelector):
    """Different quantization for the selected modules; unset fields inherit the step's."""

    method: str | None = None
    bits: Bits | None = None
    group_size: int | None = Field(None, ge=0)
    symmetric: bool | None = None

    _method = field_validator("method")(_known_method)


class QuantizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    method: str = "rtn"
    bits: Bits = 4
    group_size: int = Field(128, ge=0, description="0 = per output channel")
    symmetric: bool = True
    embeddings: bool = Field(
        False, description="also quantize the input embedding and LM head (tied or not), by round to nearest"
    )
    overrides: list[QuantOverride] = Field(default_factory=list)
    allocation: Literal["uniform", "sensitivity"] = Field(
        "uniform", description="sensitivity: per-layer bits from bit_choices ranked by sensitivity_proxy, mean avg_bits"
    )
    sensitivity_proxy: str = Field(
        "gptq",
        description="what ranks layers for allocation: sensitivity: gptq (each "
        "layer's own output error) or fisher (the predicted loss rise)",
    )
    avg_bits: float | None = Field(
        None,
        description="with allocation: sensitivity, the parameter-weighted mean bits (default: bits); ignored otherwise",
    )
    bit_choices: list[Bits] = Field(default_factory=lambda: [2, 3, 4, 8], min_length=2)
    latency_budget: LatencyBudget | None = Field(
        None,
        description="with allocation: sensitivity, keep the predicted decode step on a target within "
        "this; avg_bits then applies only if given",
    )
    act_bits: Literal[8, 16] = Field(16, description="8: per-token dynamic fake quantization of linear inputs")
    smoothquant_alpha: float | None = Field(
        None, ge=0, le=1, description="SmoothQuant migration strength (needs act_bits 8)"
    )
    kv_bits: Literal[4, 8, 16] = Field(16, description="KV cache bits, simulated inside attention")
    rotate: Literal["none", "hadamard"] = Field(
        "none", description="hadamard: rotate the residual stream first (float-equivalent; unties the LM head)"
    )
    sequential: bool = Field(
        False,
        description="quantize block after block on the inputs the already-quantized "
        "blocks give (the GPTQ/AWQ reference order); cached per identical prefix",
    )
    grid: Literal["default", "gguf"] = Field(
        "default",
        description="gguf: llama.cpp's Q8_0/Q4_0/Q4_1 block grids "
        "(group_size 32, bits 4 or 8), so a GGUF export is lossless",
    )

    _method = field_validator("method")(_known_method)

    _proxy = field_validator("sensitivity_proxy")(_known_proxy)

    @model_validator(mode="after")
    def _budget(self) -> QuantizeParams:
        lo, hi = min(self.bit_choices), max(self.bit_choices)
        if self.latency_budget is not None and self.allocation != "sensitivity":
            raise ValueError("latency_budget: allocating bits under a latency budget needs allocation: sensitivity")
        bits_bound = self.latency_budget is None or self.avg_bits is not None
        if self.allocation == "sensitivity" and bits_bound and not lo <= self.budget_bits <= hi:
            raise ValueError(
                f"avg_bits: {self.budget_bits:g} cannot be met with bit_choices "
                f"{self.bit_choices}; allowed: {lo} to {hi}"
            )
        if self.smoothquant_alpha is not None and self.act_bits == 16:
            raise ValueError("smoothquant_alpha: smoothing only helps quantized activations; set act_bits: 8")
        if self.grid == "gguf":
            self._check_gguf()
        return self

    def _check_gguf(self) -> None:
        """Every weight this step quantizes must have a GGUF block type: groups of 32, 4 or 8 bits,
        and 8 bits only symmetric (Q8_0)."""
        choices = self.bit_choices if self.allocation == "sensitivity" else [self.bits]
        layers = [("bits", b, self.group_size, self.symmetric) for b in choices]
        layers += [
            (
                f"overrides[{i}]",
                o.bits or self.bits,
                self.group_size if o.group_size is None else o.group_size,
                self.symmetric if o.symmetric is None else o.symmetric,
            )
            for i, o in enumerate(self.overrides)
        ]
        for where, bits, group, symmetric in layers:
            if bits == 16:
                continue
            if group != GGUF_BLOCK:
                raise ValueError(f"group_size: grid gguf needs group_size {GGUF_BLOCK} ({where} has {group})")
            if bits not in (4, 8) or (bits == 8 and not symmetric):
                raise ValueError(
                    f"bits: grid gguf stores 4-bit (Q4_0, Q4_1) or symmetric 8-bit (Q8_0) weights; "
                    f"{where} asks for {bits}-bit {'symmetric' if symmetric else 'asymmetric'}"
                )

    @property
    def budget_bits(self) -> float:
        return self.bits if self.avg_bits is None else self.avg_bits
