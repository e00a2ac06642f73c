"""What each linear's bit width costs in predicted decode latency on a target.

The roofline's decode time is a sum over ops, and a linear's op depends only on its own format, so
the latency of a bit allocation is separable: ``L(bits) = L(all at the fewest bits) + sum of each
linear's extra time at its bits``. These per-linear costs let the sensitivity allocation spend a
latency budget the same way it spends an average-bits budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from autocompress.errors import ConfigError
from autocompress.hardware import HARDWARE_MODELS, HardwareTarget, ModelProfile, Workload, load_target, profile_model


class LatencyBudget(BaseModel):
    """Allocate bits so that the predicted decode step on ``target`` stays within ``decode_ms_per_token``."""

    model_config = ConfigDict(extra="forbid")

    target: str = Field(description="a hardware target name from hardware_models/ (or a YAML path)")
    decode_ms_per_token: float = Field(gt=0)


def decode_costs(
    model: nn.Module, budget: LatencyBudget, bit_choices: Sequence[int], group_size: int, symmetric: bool = True
) -> tuple[dict[str, list[float]], float]:
    """Per-linear extra decode milliseconds at each of ``bit_choices`` (0 at the fewest bits), and the
    milliseconds left for those extras once every linear sits at the fewest bits."""
    return _decode_costs(profile_model(model), _target(budget), budget, bit_choices, group_size, symmetric)


def profile_decode_costs(
    profile: ModelProfile, budget: LatencyBudget, bit_choices: Sequence[int], group_size: int, symmetric: bool = True
) -> tuple[dict[str, list[float]], float] | None:
    """:func:`decode_costs` from a predicted profile; None on a target with sparse-unstructured kernels,
    which read the measured zeros a predicted profile does not know."""
    target = _target(budget)
    if target.has("sparse_unstructured"):
        return None
    return _decode_costs(profile, target, budget, bit_choices, group_size, symmetric)


def _target(budget: LatencyBudget) -> HardwareTarget:
    return load_target(budget.target, "quantize.latency_budget.target")


def _decode_costs(
    profile: ModelProfile,
    target: HardwareTarget,
    budget: LatencyBudget,
    bit_choices: Sequence[int],
    group_size: int,
    symmetric: bool,
) -> tuple[dict[str, list[float]], float]:
    hardware = HARDWARE_MODELS.get("roofline", "hardware_model")(target)
    workload = Workload()
    group = group_size or None
    fewest = min(bit_choices)
    names = {lin.name for lin in profile.block_linears}

    def decode_ms(bits_of: dict[str, int]) -> float:
        linears = tuple(
            replace(lin, bits=bits_of[lin.name], group_size=group, symmetric=symmetric) if lin.name in bits_of else lin
            for lin in profile.linears
        )
        return hardware.predict(replace(profile, linears=linears), workload)["decode_ms_per_token"]

    floor = {name: fewest for name in names}
    base = decode_ms(floor)
    if base > budget.decode_ms_per_token:
        raise ConfigError(
            "quantize.latency_budget.decode_ms_per_token",
            f"{budget.decode_ms_per_token:g} ms cannot be met on {target.name}: every linear at "
            f"{fewest} bits already takes {base:.3g} ms",
        )
    costs = {name: [decode_ms(floor | {name: b}) - base for b in bit_choices] for name in sorted(names)}
    return costs, budget.decode_ms_per_token - base
