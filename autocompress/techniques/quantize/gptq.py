"""GPTQ (Frantar et al., 2023): quantize columns one at a time and push each column's rounding
error onto the columns not yet quantized, weighted by the inverse input Hessian."""

from __future__ import annotations

import torch

from autocompress.techniques.quantize.grid import QuantFormat, Quantized, fake_quant, format_grid, make_grid
from autocompress.threads import one_thread


def inverse_hessian_factor(hessian: torch.Tensor, damp: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Upper Cholesky factor of ``(H + damp * mean(diag H) * I)^-1`` and the mask of dead inputs.

    An input channel that is always zero has no curvature; it gets a unit diagonal (its weights
    are irrelevant to the output and are zeroed by the caller)."""
    h = hessian.to(torch.float64).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    h += damp * torch.diag(h).mean() * torch.eye(h.shape[0], dtype=h.dtype)
    inverse = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inverse, upper=True).to(torch.float32), dead


@torch.no_grad()
@one_thread()
def gptq(
    weight: torch.Tensor, hessian: torch.Tensor, fmt: QuantFormat, damp: float = 0.01, block: int = 128
) -> Quantized:
    """GPTQ quantize-dequantize of a ``[out, in]`` weight given ``H = E[x x^T]`` of its input.

    Algorithm 1 of the paper with lazy batch updates: within a block of ``block`` columns the error
    of column ``i`` updates the block's later columns at once; the block's accumulated error updates
    the remaining columns with one matrix product. Group scales are found when a group's first
    column is reached, from the weights as already updated (the paper's grouping)."""
    if fmt.bits == 16:
        return Quantized(weight.to(torch.float16).to(weight.dtype), None)
    w = weight.to(torch.float32).clone()
    rows, cols = w.shape
    group = fmt.group_for(cols)
    block = group * max(1, block // group) if group < cols else block  # groups never straddle blocks
    u, dead = inverse_hessian_factor(hessian, damp)
    w[:, dead] = 0
    out = torch.zeros_like(w)
    scale = zero = None
    scales, zeros = [], []  # one [rows, 1] pair per group, in column order
    if group == cols:
        scale, zero = format_grid(w, fmt)
        scales, zeros = [scale], [zero]
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        wb, errors, ub = w[:, b0:b1].clone(), torch.zeros(rows, b1 - b0), u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            if group < cols and (b0 + i) % group == 0:
                scale, zero = format_grid(wb[:, i : i + group], fmt)
                scales.append(scale)
                zeros.append(zero)
            q = fake_quant(wb[:, i : i + 1], scale, zero, fmt.bits, fmt.symmetric)
            out[:, b0 + i] = q[:, 0]
            err = (wb[:, i] - q[:, 0]) / ub[i, i]
            wb[:, i:] -= err[:, None] * ub[i, i:][None, :]  # compensate within the block
            errors[:, i] = err
        w[:, b1:] -= errors @ u[b0:b1, b1:]  # lazy batch update of the remaining columns
    grid = make_grid(torch.cat(scales, dim=1), torch.cat(zeros, dim=1), fmt, group)
    return Quantized(out.to(weight.dtype), grid)
