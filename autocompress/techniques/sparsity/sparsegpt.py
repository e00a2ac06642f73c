"""SparseGPT (Frantar & Alistarh, 2023): prune column by column, updating the remaining weights with OBS.

For a layer with input Hessian H = X^T X / n, removing weight w_ij costs w_ij^2 / [H^-1]_jj and the
optimal update of the row's later weights is -w_ij / [H^-1]_jj * [H^-1]_j,j: (Algorithm 1 of the paper).
The mask is chosen lazily per block of ``block`` columns (unstructured) or per group of M columns
(N:M), from the same score. Here the Hessian is the cached one of the unpruned layer's inputs
(one-shot, not the paper's sequential re-collection after each pruned block).
"""

from __future__ import annotations

import torch

from autocompress.calibration import InputStats
from autocompress.techniques.sparsity.masks import SparsityTarget


def inverse_hessian_cholesky(hessian: torch.Tensor, weight: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; dead inputs get H_jj = 1 (and zero weights)."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    weight[:, dead] = 0
    h.diagonal().add_(damp * h.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()


@torch.no_grad()
def sparsegpt_prune(weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget,
                    block: int = 128, damp: float = 0.01) -> torch.Tensor:
    w = weight.float().clone()
    rows, cols = w.shape
    hinv = inverse_hessian_cholesky(stats.hessian, w, damp)
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        w1, hinv1 = w[:, b0:b1].clone(), hinv[b0:b1, b0:b1]
        d = hinv1.diagonal()
        err1 = torch.zeros_like(w1)
        prune = torch.zeros_like(w1, dtype=torch.bool)
        if not target.structured:  # exactly round(s * block size) lowest-score weights of the block
            score = (w1.pow(2) / d.pow(2)).flatten()
            prune.view(-1)[score.topk(round(target.sparsity * score.numel()), largest=False).indices] = True
        for j in range(b1 - b0):
            if target.structured and j % target.m == 0:  # choose the group's M - N pruned inputs
                score = w1[:, j:j + target.m].pow(2) / d[j:j + target.m].pow(2)
                prune[:, j:j + target.m].scatter_(1, score.topk(target.m - target.n, dim=1, largest=False).indices,
                                                  True)
            col = w1[:, j]
            q = torch.where(prune[:, j], torch.zeros_like(col), col)
            err = (col - q) / d[j]
            w1[:, j:] -= err.unsqueeze(1) * hinv1[j, j:].unsqueeze(0)  # OBS update of the later columns
            w1[:, j] = q
            err1[:, j] = err
        w[:, b0:b1] = w1
        w[:, b1:] -= err1 @ hinv[b0:b1, b1:]  # the block's accumulated update, applied lazily
    return w.to(weight.dtype)
