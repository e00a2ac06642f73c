"""Multi-fidelity evaluation: every trial gets the cheap metrics, costly ones only near the front.

The front moves as trials arrive; a trial is scored on the costly metrics (``evaluation.costly``,
e.g. lm-eval accuracies) when it finishes within ``evaluation.margin`` of the current front, and
every trial of the final front is scored after the search. Whether the cheap proxy can stand in
for the costly metrics is reported as a Spearman rank correlation over the trials that have both.
"""

from __future__ import annotations

import math

from autocompress.search.front import TrialRecord, dominates
from autocompress.search.job import Objective


def near_front(point: list[float], others: list[list[float]], margin: float) -> bool:
    """Whether no other point still dominates ``point`` after being handicapped by ``margin``.

    Objectives are minimised and normalised to [0, 1] over all points, so ``margin`` is a fraction
    of each objective's observed range (additive epsilon-dominance, Laumanns et al. 2002).
    With ``margin = 0`` this is plain Pareto optimality.
    """
    points = others + [point]
    lows = [min(p[i] for p in points) for i in range(len(point))]
    spans = [(max(p[i] for p in points) - lows[i]) or 1.0 for i in range(len(point))]
    scaled = [[(v - lo) / s for v, lo, s in zip(p, lows, spans)] for p in points]
    mine = scaled[-1]
    return not any(dominates([v + margin for v in other], mine) for other in scaled[:-1])


def objective_points(records: list[TrialRecord], objectives: list[Objective]) -> list[list[float]]:
    """Signed (all-minimised) objective values of the feasible, distinct, finished trials."""
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    points = []
    for r in records:
        values = [r.metrics.get(o.metric, math.nan) for o in objectives]
        if r.feasible and r.duplicate_of is None and all(math.isfinite(v) for v in values):
            points.append([s * v for s, v in zip(signs, values)])
    return points


def _ranks(values: list[float]) -> list[float]:
    """1-based ranks, ties sharing their average rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def spearman(x: list[float], y: list[float]) -> float:
    """Spearman's rho: Pearson correlation of the ranks; NaN with fewer than 3 pairs or a constant side."""
    if len(x) != len(y) or len(x) < 3:
        return math.nan
    rx, ry = _ranks(x), _ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    vx, vy = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(vx * vy) if vx and vy else math.nan


def proxy_correlation(records: list[TrialRecord], proxy: str, metrics: list[str]) -> dict[str, dict[str, float]]:
    """Per costly metric: Spearman rho with the proxy and the number of trials both were measured on."""
    report = {}
    for metric in metrics:
        pairs = [
            (r.metrics[proxy], r.metrics[metric])
            for r in records
            if r.duplicate_of is None and proxy in r.metrics and metric in r.metrics
        ]
        report[metric] = {"rho": spearman([p for p, _ in pairs], [m for _, m in pairs]), "n": len(pairs)}
    return report
