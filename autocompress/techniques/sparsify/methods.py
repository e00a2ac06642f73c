"""Sparsity methods, chosen by name from :data:`SPARSITY_METHODS`: zero the weights with the lowest
importance score (or, SparseGPT, prune with weight updates: ``sparsegpt.py``).

Magnitude: score |W_ij|, compared over the whole matrix.
Wanda (Sun et al., 2023, "A Simple and Effective Pruning Approach for LLMs"): score
|W_ij| * ||X_j||_2 with ||X_j|| the norm of input feature j over the calibration tokens,
compared within each output row (the paper's "per output" comparison group).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch

from autocompress.inputs import InputStats
from autocompress.registry import Registry
from autocompress.techniques.sparsify.masks import SparsityTarget, layer_keep_mask, nm_keep_mask, row_keep_mask
from autocompress.techniques.sparsify.sparsegpt import sparsegpt_prune


def magnitude_prune(weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget) -> torch.Tensor:
    score = weight.abs()
    keep = nm_keep_mask(score, target.n, target.m) if target.structured else layer_keep_mask(score, target.sparsity)
    return weight * keep


def wanda_prune(weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget) -> torch.Tensor:
    score = weight.abs().float() * stats.channel_norm.unsqueeze(0)  # |W_ij| * ||X_j||
    keep = nm_keep_mask(score, target.n, target.m) if target.structured else row_keep_mask(score, target.sparsity)
    return weight * keep


def matrix_zeros(rows: int, cols: int, sparsity: float) -> int:
    """One comparison group per matrix (``layer_keep_mask``)."""
    return round(sparsity * rows * cols)


def row_zeros(rows: int, cols: int, sparsity: float) -> int:
    """One comparison group per output row (``row_keep_mask``)."""
    return rows * round(sparsity * cols)


def block_zeros(rows: int, cols: int, sparsity: float, block: int = 128) -> int:
    """SparseGPT: one group per block of ``block`` input columns."""
    return sum(round(sparsity * rows * min(block, cols - b0)) for b0 in range(0, cols, block))


class SparsityMethod(ABC):
    name: ClassVar[str]
    needs_stats: ClassVar[bool] = True  # reads the calibration input statistics

    @abstractmethod
    def prune(self, weight: torch.Tensor, stats: InputStats | None, target: SparsityTarget) -> torch.Tensor:
        """The weight with the method's zeros (and, where the method updates them, its other weights)."""

    @abstractmethod
    def zeros(self, rows: int, cols: int, sparsity: float) -> int:
        """How many zeros it sets in a ``rows x cols`` weight at an unstructured ``sparsity``."""


SPARSITY_METHODS: Registry[type[SparsityMethod]] = Registry("sparsity method")


@SPARSITY_METHODS.decorator()
class Magnitude(SparsityMethod):
    name = "magnitude"
    needs_stats = False

    def prune(self, weight, stats, target):
        return magnitude_prune(weight, stats, target)

    def zeros(self, rows, cols, sparsity):
        return matrix_zeros(rows, cols, sparsity)


@SPARSITY_METHODS.decorator()
class Wanda(SparsityMethod):
    name = "wanda"

    def prune(self, weight, stats, target):
        return wanda_prune(weight, stats, target)

    def zeros(self, rows, cols, sparsity):
        return row_zeros(rows, cols, sparsity)


@SPARSITY_METHODS.decorator()
class SparseGPT(SparsityMethod):
    name = "sparsegpt"

    def prune(self, weight, stats, target):
        return sparsegpt_prune(weight, stats, target)

    def zeros(self, rows, cols, sparsity):
        return block_zeros(rows, cols, sparsity)
