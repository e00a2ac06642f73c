"""SparseGPT (Frantar & Alistarh, 2023): prune column by column, updating the remaining weights with OBS.

For a layer with input Hessian H = X^T X / n, removing weight w_ij costs w_ij^2 / [H^-1]_jj and the
optimal update of the row's later weights is -w_ij / [H^-1]_jj * [H^-1]_j,j: (Algorithm 1 of the paper).
The mask is chosen lazily per block of ``block`` columns (unstructured) or per group of M columns
(N:M), from the same score. Here the Hessian is the cached one of the unpruned layer's inputs
(one-shot, not the paper's sequential re-collection after each pruned block).
"""

from __future__ import annotations

import torch

from autocompress.inputs import InputStats
from autocompress.techniques.sparsify.masks import SparsityTarget
from autocompress.threads import one_thread


def inverse_hessian_cholesky(hessian: torch.Tensor, weight: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1; dead inputs get H_jj = 1 (and zero weights)."""
    h = hessian.double().clone()
    dead = h.diagonal() == 0
    h[dead, dead] = 1
    weight[:, dead] = 0
    h.diagonal().add_(damp * h.diagonal().mean())
    return torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True).float()


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget, block: int = 128, damp: float = 0.01
) -> torch.Tensor:
    with one_thread():
        w = weight.float().clone()
        hinv = inverse_hessian_cholesky(stats.hessian, w, damp)
        return _prune_columns(w.T.contiguous(), hinv, target, block).T.to(weight.dtype)


def _prune_columns(wt: torch.Tensor, hinv: torch.Tensor, target: SparsityTarget, block: int) -> torch.Tensor:
    """Algorithm 1 on the transposed weight ``wt`` [in, out], so that a column of W is a contiguous row."""
    cols = wt.shape[0]
    for b0 in range(0, cols, block):
        b1 = min(b0 + block, cols)
        w1, hinv1 = wt[b0:b1].clone(), hinv[b0:b1, b0:b1]
        d = hinv1.diagonal()
        err1 = torch.zeros_like(w1)
        prune = torch.zeros_like(w1, dtype=torch.bool)
        if not target.structured:  # exactly round(s * block size) lowest-score weights of the block
            score = (w1.pow(2) / d.pow(2).unsqueeze(1)).flatten()
            prune.view(-1)[score.topk(round(target.sparsity * score.numel()), largest=False).indices] = True
        for j in range(b1 - b0):
            if target.structured and j % target.m == 0:  # choose the group's M - N pruned inputs
                score = w1[j : j + target.m].pow(2) / d[j : j + target.m].pow(2).unsqueeze(1)
                prune[j : j + target.m].scatter_(0, score.topk(target.m - target.n, dim=0, largest=False).indices, True)
            err = w1[j] * prune[j] / d[j]  # only pruned weights move: (w - q) / [H^-1]_jj with q = 0
            w1[j:].addr_(hinv1[j, j:], err, alpha=-1)  # OBS update of this and the later columns
            err1[j] = err
        wt[b0:b1] = w1.masked_fill_(prune, 0)
        wt[b1:] -= hinv[b0:b1, b1:].T @ err1  # the block's accumulated update, applied lazily
    return wt
