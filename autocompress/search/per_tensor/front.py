"""Budgets to aim at, and the 2-D (bytes, KL) front with hypervolume gains of candidates.

Hypervolume is taken in (bytes normalised to [0, 1] over the problem's range, log KL): KL spans orders of
magnitude across sizes (Q8_0 ~1e-3, Q3_K ~0.5), and in linear KL the small-size end would own all the volume;
in log KL a 10 % better KL counts the same at every size.
"""

from __future__ import annotations

import numpy as np


def van_der_corput(i: int) -> float:
    """The i-th (i >= 1) point of the base-2 van der Corput sequence: 1/2, 1/4, 3/4, 1/8, ..."""
    q, denom = 0.0, 1.0
    while i:
        denom *= 2
        i, bit = divmod(i, 2)
        q += bit / denom
    return q


def budget_schedule(i: int, targets: tuple[float, ...], lo: float, hi: float, target_share: float = 0.5) -> float:
    """The i-th budget (i >= 0): targets in turn for ``target_share`` of the asks, otherwise a
    low-discrepancy spread over [lo, hi] so that the whole front fills."""
    if targets:
        every = max(int(round(1 / target_share)), 1) if target_share > 0 else 0
        if every and i % every == 0:
            return float(targets[(i // every) % len(targets)])
        i = i - (i // every + 1 if every else 0)
    return lo + (hi - lo) * van_der_corput(i + 1)


def pareto_indices(b: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated points (both minimised), sorted by bytes ascending (KL descending)."""
    b, k = np.asarray(b, dtype=float), np.asarray(k, dtype=float)
    order = np.lexsort((k, b))
    keep, best = [], np.inf
    for i in order:
        if k[i] < best:
            keep.append(i)
            best = k[i]
    return np.array(keep, dtype=int)


def hv_gain(
    front_b: np.ndarray, front_k: np.ndarray, cand_b: np.ndarray, cand_k: np.ndarray, ref_b: float, ref_k: float
) -> np.ndarray:
    """Hypervolume each candidate alone adds to a front (minimised axes, reference point (ref_b, ref_k)).

    ``front_*`` must be non-dominated and sorted by bytes ascending (see :func:`pareto_indices`)."""
    fb = np.asarray(front_b, dtype=float)
    fk = np.minimum(np.asarray(front_k, dtype=float), ref_k)
    lo = np.concatenate(([-np.inf], fb))  # staircase intervals [lo_j, hi_j) at level s_j
    hi = np.concatenate((fb, [np.inf]))
    level = np.concatenate(([ref_k], fk))
    cb = np.asarray(cand_b, dtype=float)[:, None]
    ck = np.asarray(cand_k, dtype=float)[:, None]
    width = np.clip(np.minimum(hi, ref_b)[None] - np.maximum(lo[None], cb), 0, None)
    height = np.clip(level[None] - ck, 0, None)
    return (width * height).sum(axis=1)
