"""AWQ (Lin et al., 2024): scale salient input channels up before rounding, searched per layer.

Weight ``W`` and input ``x`` give the same output as ``(W diag(s)) (x / s)``; the ``1/s`` folds into
the operation that produces ``x`` (an RMSNorm for q/k/v and gate/up, ``up`` for ``down``, ``v`` for
``o``), so the stored weight is ``Q(W diag(s))`` and the effective one ``Q(W diag(s)) diag(1/s)``.
``s = mean|x|^alpha``, with ``alpha`` on a grid in [0, 1] chosen to minimise the layer-output error of
all linears that read the same input (they share the folded scale). The error is measured through
the input Hessian (``tr(dW H dW^T)``), which equals the mean squared output error on the calibration
tokens, so no activations need to be kept.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from autocompress.inputs import InputStats
from autocompress.techniques.quantize.grid import QuantFormat, Quantized, output_error, rtn_grid


def awq_scales(absmean: torch.Tensor, alpha: float) -> torch.Tensor:
    """Per-input-channel scales ``mean|x|^alpha``, normalised to a geometric mean of about 1."""
    s = absmean.to(torch.float32).clamp(min=1e-5).pow(alpha)
    return s / (s.max() * s.min()).sqrt()


def scaled_quant(weight: torch.Tensor, fmt: QuantFormat, s: torch.Tensor) -> Quantized:
    """The effective weight after scaling by ``s``, quantizing, and folding ``1/s`` back."""
    stored = rtn_grid(weight.to(torch.float32) * s, fmt)
    grid = stored.grid and replace(stored.grid, input_scale=s.to(torch.float32).contiguous())
    return Quantized(stored.weight / s, grid)


@torch.no_grad()
def awq(
    weights: list[torch.Tensor], formats: list[QuantFormat], stats: InputStats, grid: int = 20
) -> tuple[list[Quantized], float]:
    """Quantize the linears that read one input with a shared AWQ scale; returns the effective
    weights with their grids and the chosen ``alpha`` (0 = plain round-to-nearest)."""
    best: tuple[float, float, list[Quantized]] | None = None
    for alpha in torch.linspace(0, 1, grid + 1).tolist():
        s = awq_scales(stats.absmean, alpha)
        approx = [scaled_quant(w, f, s) for w, f in zip(weights, formats)]
        err = sum(output_error(w, a.weight, stats.hessian).item() for w, a in zip(weights, approx))
        if best is None or err < best[0]:
            best = (err, alpha, approx)
    _, alpha, approx = best
    return [Quantized(a.weight.to(w.dtype), a.grid) for w, a in zip(weights, approx)], alpha
