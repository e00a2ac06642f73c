"""What to zero: a sparsity target (unstructured fraction or N:M) and keep-masks from importance scores."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

_SPARSE_ATTR = "_autocompress_sparse"


@dataclass(frozen=True)
class SparsityTarget:
    """Unstructured: zero ``sparsity`` of the weights. N:M (``m > 0``): keep at most ``n`` of every ``m``
    consecutive inputs of each output row (2:4 is what sparse tensor cores run)."""

    sparsity: float
    n: int = 0
    m: int = 0

    @property
    def structured(self) -> bool:
        return self.m > 0

    @property
    def fraction(self) -> float:
        return 1 - self.n / self.m if self.structured else self.sparsity


def kth_smallest(values: torch.Tensor, k: int) -> torch.Tensor:
    """Exact k-th smallest (1-based) of a flat tensor, by bracketing it with quantiles of a sample.

    Two comparisons over the whole tensor plus a selection among the few values inside the
    bracket: several times faster than ``torch.kthvalue`` on the full tensor.
    """
    n = values.numel()
    if n > 1 << 16:
        sample = values[torch.randint(n, (1 << 14,), generator=torch.Generator().manual_seed(0))]
        q = k / n
        lo, hi = torch.quantile(sample, torch.tensor([max(q - 0.02, 0.0), min(q + 0.02, 1.0)]))
        below = int((values < lo).sum())
        inside = values[(values >= lo) & (values <= hi)]
        if below < k <= below + inside.numel():
            return torch.kthvalue(inside, k - below).values
    return torch.kthvalue(values, k).values


def layer_keep_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes exactly ``round(sparsity * numel)`` entries of lowest score in the whole matrix."""
    n_zero = round(sparsity * score.numel())
    flat = score.flatten()
    if n_zero == 0:
        return torch.ones_like(score, dtype=torch.bool)
    threshold = kth_smallest(flat, n_zero)
    mask = flat > threshold
    # Ties at the threshold (common in dequantized checkpoints): zero the first ones by index.
    surplus = int((~mask).sum()) - n_zero
    if surplus > 0:
        ties = (flat == threshold).nonzero().flatten()
        mask[ties[-surplus:]] = True
    return mask.view_as(score)


def row_keep_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes exactly ``round(sparsity * cols)`` lowest-score entries of every row."""
    n_zero = round(sparsity * score.shape[1])
    mask = torch.ones_like(score, dtype=torch.bool)
    if n_zero:
        mask.scatter_(1, score.topk(n_zero, dim=1, largest=False).indices, False)
    return mask


def nm_keep_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the ``n`` highest scores of every ``m`` consecutive inputs of each row."""
    rows, cols = score.shape
    groups = score.reshape(rows, cols // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, groups.topk(n, dim=2).indices, True)
    return mask.reshape(rows, cols)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that zeroes exactly ``round(sparsity * numel)`` weights of smallest magnitude."""
    return layer_keep_mask(weight.abs(), sparsity)


def mark_sparse(module: nn.Module) -> None:
    """Record that the zeros of ``module.weight`` are a pruning mask, to be kept by later training."""
    setattr(module, _SPARSE_ATTR, True)


def keep_mask(module: nn.Module) -> torch.Tensor | None:
    """The keep-mask of a module marked sparse (its nonzero weights), else None. Derived from the
    weight: quantization after sparsify keeps zeros at zero, so the mask survives it."""
    return module.weight.detach() != 0 if getattr(module, _SPARSE_ATTR, False) else None
