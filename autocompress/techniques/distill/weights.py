"""Trainable weights that keep the constraints of the earlier steps.

A trained decoder linear gets a parametrization ``weight = keep * grid(latent + lora)``:

* ``keep``: the sparsity mask (a module marked sparse: its nonzero weights). Pruned weights read
  as exact zeros in every forward, so they get no gradient and stay zero.
* ``grid``: the quantization grid recorded by ``quantize`` (fixed scale/zero). The forward rounds
  onto it and the backward passes the gradient straight through (STE, Bengio et al., 2013), i.e.
  quantization-aware training of a float *latent* weight (LSQ/QAT without learned scales).
* ``lora``: an optional low-rank update ``B @ A`` (Hu et al., 2021) on a frozen latent.

:func:`finalize` writes ``keep * grid(latent + lora)`` back as a plain weight: masks exact, values on
the grid, LoRA merged. Shapes never change (width-pruned linears stay narrow).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn
from torch.nn.utils import parametrize

from autocompress.models.annotations import weight_grid
from autocompress.techniques.quantize.grid import straight_through

Rounder = Callable[[torch.Tensor], torch.Tensor]


def grid_rounder(module: nn.Module) -> Rounder | None:
    """Round a weight onto the module's recorded quantization grid (exact), or None if it has none."""
    grid = weight_grid(module)
    if grid is None:
        return None
    device = module.weight.device
    moved = {
        "scale": grid.scale.to(device),
        "zero": grid.zero.to(device),
        "input_scale": None if grid.input_scale is None else grid.input_scale.to(device),
    }
    local = dataclasses.replace(grid, **moved)  # the grid's tensors where the weight is (a GPU, say)
    return lambda w: local.dequantize(local.codes(w)).to(w.dtype)


class LoRA(nn.Module):
    """``B @ A`` with ``A`` random (seeded) and ``B`` zero, so training starts at the given weight."""

    def __init__(self, out_features: int, in_features: int, rank: int, generator: torch.Generator):
        super().__init__()
        self.a = nn.Parameter(torch.randn(rank, in_features, generator=generator) / in_features**0.5)
        self.b = nn.Parameter(torch.zeros(out_features, rank))

    def to_device_of(self, weight: torch.Tensor) -> LoRA:
        return self.to(device=weight.device, dtype=weight.dtype)

    def delta(self) -> torch.Tensor:
        return self.b @ self.a


class ConstrainedWeight(nn.Module):
    """The parametrization ``latent -> keep * grid(latent + lora)``."""

    def __init__(self, keep: torch.Tensor | None, rounder: Rounder | None, lora: LoRA | None):
        super().__init__()
        self.register_buffer("keep", keep, persistent=False)
        self.rounder, self.lora = rounder, lora

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        w = latent if self.lora is None else latent + self.lora.delta().to(latent.dtype)
        if self.rounder is not None:
            w = straight_through(w, self.rounder(w.detach()))
        if self.keep is not None:
            w = torch.where(self.keep, w, w.new_zeros(()))
        return w


def constrain(linear: nn.Linear, keep: torch.Tensor | None, lora: LoRA | None) -> ConstrainedWeight:
    """Parametrize ``linear.weight``; the latent is ``linear.parametrizations.weight.original``."""
    rounder = grid_rounder(linear)
    parametrization = ConstrainedWeight(keep, rounder, lora)
    parametrize.register_parametrization(linear, "weight", parametrization)
    return parametrization


@torch.no_grad()
def finalize(linear: nn.Linear) -> None:
    """Replace the parametrization by its current value as a plain weight (exact on mask and grid)."""
    latent = linear.parametrizations.weight.original
    w = linear.parametrizations.weight[0](latent)  # without gradients the straight-through value is the rounded one
    requires_grad = latent.requires_grad
    parametrize.remove_parametrizations(linear, "weight", leave_parametrized=False)
    linear.weight = nn.Parameter(w.detach().clone(), requires_grad=requires_grad)
