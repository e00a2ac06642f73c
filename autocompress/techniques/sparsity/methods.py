"""Magnitude and Wanda pruning: zero the weights with the lowest importance score.

Magnitude: score |W_ij|, compared over the whole matrix.
Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for LLMs"): score
|W_ij| * ||X_j||_2 with ||X_j|| the norm of input feature j over the calibration tokens,
compared within each output row (the paper's "per output" comparison group).
"""

from __future__ import annotations

import torch

from autocompress.inputs import InputStats
from autocompress.techniques.sparsity.masks import (SparsityTarget, layer_keep_mask, nm_keep_mask,
                                                     row_keep_mask)


def magnitude_prune(weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget) -> torch.Tensor:
    score = weight.abs()
    keep = nm_keep_mask(score, target.n, target.m) if target.structured else layer_keep_mask(score, target.sparsity)
    return weight * keep


def wanda_prune(weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget) -> torch.Tensor:
    score = weight.abs().float() * stats.channel_norm.unsqueeze(0)  # |W_ij| * ||X_j||
    keep = nm_keep_mask(score, target.n, target.m) if target.structured else row_keep_mask(score, target.sparsity)
    return weight * keep
