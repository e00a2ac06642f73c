"""W8A8-style activation fake quantization and SmoothQuant (Xiao et al., 2023).

``act_bits``: every decoder linear's input is rounded per token (symmetric, one scale per token,
computed at run time: dynamic quantization) by a forward pre-hook.

SmoothQuant moves quantization difficulty from activations to weights: for the linears behind an
RMSNorm (q/k/v, gate/up), ``s_j = max|x_j|^alpha / max|W_:,j|^(1 - alpha)``; the norm's weight is
divided by ``s`` and the linears' columns multiplied by it, so the float model is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from autocompress.inputs import InputStats
from autocompress.models.adapter import LinearSite, ModelAdapter
from autocompress.techniques.quantize.grid import QuantFormat, rtn, straight_through


def quantize_per_token(x: torch.Tensor, bits: int) -> torch.Tensor:
    flat = x.detach().reshape(-1, x.shape[-1])
    return straight_through(x, rtn(flat.float(), QuantFormat(bits, 0, symmetric=True)).reshape(x.shape).to(x.dtype))


def add_activation_quant(model: nn.Module, bits: int) -> None:
    """Round the input of every decoder linear to ``bits`` per token."""
    for site in ModelAdapter(model).linear_sites():
        site.module.register_forward_pre_hook(lambda m, args: (quantize_per_token(args[0], bits), *args[1:]))


def smoothing_scales(stats: InputStats, sites: list[LinearSite], alpha: float) -> torch.Tensor:
    w_max = torch.stack([s.module.weight.detach().abs().amax(0) for s in sites]).amax(0).float()
    s = stats.absmax.float().clamp(min=1e-5).pow(alpha) / w_max.clamp(min=1e-5).pow(1 - alpha)
    return s.clamp(min=1e-5)


@torch.no_grad()
def smooth(model: nn.Module, stats: dict[str, InputStats], alpha: float) -> dict[str, torch.Tensor]:
    """Fold SmoothQuant scales into the norms and the linears after them; returns ``{linear: s}``."""
    adapter = ModelAdapter(model)
    scales = {}
    for group, sites in adapter.input_groups():
        if group not in ("attn.in", "mlp.in"):
            continue
        s = smoothing_scales(stats[sites[0].name], sites, alpha)
        norm = adapter.input_norm(sites[0].layer, group)
        norm.weight.div_(s.to(norm.weight.dtype))
        for site in sites:
            site.module.weight.mul_(s.to(site.module.weight.dtype))
            scales[site.name] = s
    return scales


def rescaled(stats: InputStats, s: torch.Tensor) -> InputStats:
    """Statistics of ``x / s`` from those of ``x``."""
    return InputStats(
        stats.hessian / torch.outer(s, s), stats.sq_norm / s.pow(2), stats.absmax / s, stats.absmean / s, stats.tokens
    )
