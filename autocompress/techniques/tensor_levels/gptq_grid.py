"""GPTQ (Frantar et al., 2023, Algorithm 1) with the grid held fixed: llama.cpp chose the scales, GPTQ chooses
the codes. Column ``j`` of every row is rounded to the nearest value its block can represent; the rounding
error is pushed onto the columns not yet quantized through the inverse input Hessian's Cholesky factor.
"""

from __future__ import annotations

import torch

from autocompress.ggml.grid import Grid
from autocompress.techniques.quantize.gptq import inverse_hessian_factor
from autocompress.threads import one_thread


@torch.no_grad()
@one_thread()
def gptq_on_grid(
    weight: torch.Tensor, hessian: torch.Tensor, grid: Grid, damp: float = 0.01, block: int = 128
) -> torch.Tensor:
    """The codes (uint8 ``[rows, cols]``) GPTQ picks on ``grid`` for ``weight`` given ``H = E[x x^T]``."""
    w = weight.detach().to(torch.float32).clone()
    rows, cols = w.shape
    u, dead = inverse_hessian_factor(hessian, damp)
    w[:, dead] = 0
    codes = torch.empty(rows, cols, dtype=torch.uint8)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        wb, errors, ub = w[:, b0:b1].clone(), torch.zeros(rows, b1 - b0), u[b0:b1, b0:b1]
        for i in range(b1 - b0):
            code, q = grid.nearest(wb[:, i], b0 + i)
            codes[:, b0 + i] = code
            err = (wb[:, i] - q) / ub[i, i]
            wb[:, i:] -= err[:, None] * ub[i, i:][None, :]
            errors[:, i] = err
        w[:, b1:] -= errors @ u[b0:b1, b1:]
    return codes
