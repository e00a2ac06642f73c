"""Trial records read back from an Optuna study, and the Pareto front over feasible trials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.metrics import is_cost_metric, metric_name, split_metric_name
from autocompress.search.attrs import TrialAttrs, late_metrics
from autocompress.search.job import Objective


@dataclass
class TrialRecord:
    number: int
    state: str
    metrics: dict[str, float]
    feasible: bool
    recipe: dict[str, Any]
    run_id: str | None
    error: str | None = None
    duplicate_of: int | None = None
    pareto: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        return {
            "trial": self.number,
            "state": self.state,
            "feasible": self.feasible,
            "pareto": self.pareto,
            "metrics": self.metrics,
            "recipe": self.recipe,
            "run_id": self.run_id,
            "error": self.error,
            "duplicate_of": self.duplicate_of,
        }


def is_feasible(trial: FrozenTrial) -> bool:
    """COMPLETE and within every budget (Optuna's constraints: a violation <= 0 is met)."""
    return trial.state == TrialState.COMPLETE and all(c <= 0 for c in trial.constraints.values())


def _record(trial: FrozenTrial, late: dict[str, float]) -> TrialRecord:
    attrs = TrialAttrs.of(trial)
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        metrics=(attrs.metrics or {}) | late,
        feasible=is_feasible(trial),
        recipe=attrs.recipe or {},
        run_id=attrs.run_id,
        error=attrs.error,
        duplicate_of=attrs.duplicate_of,
    )


def dominates(a: list[float], b: list[float]) -> bool:
    """``a`` is no worse than ``b`` everywhere and better somewhere (all minimised)."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_numbers(records: list[TrialRecord], objectives: list[Objective]) -> set[int]:
    """Trial numbers of the non-dominated feasible trials; a repeated recipe counts once (its first trial)."""
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    points = {}
    for r in records:
        values = [r.metrics.get(o.metric, math.nan) for o in objectives]
        if r.feasible and r.duplicate_of is None and all(math.isfinite(v) for v in values):
            points[r.number] = [s * v for s, v in zip(signs, values)]
    return {n for n, p in points.items() if not any(dominates(q, p) for q in points.values())}


def trial_records(study: optuna.Study, objectives: list[Objective]) -> list[TrialRecord]:
    """Every trial with its metrics, feasibility and whether it is on the front now."""
    attrs = study.user_attrs
    records = [_record(t, late_metrics(attrs, t.number)) for t in study.get_trials(deepcopy=False)]
    front = pareto_numbers(records, objectives)
    for r in records:
        r.pareto = r.number in front
    return records


def hypervolume(points: list[list[float]], reference: list[float]) -> float:
    """Volume dominated by ``points`` (all minimised) and bounded by ``reference``.

    Exact, by slicing along the first objective: between consecutive x values the dominated
    region is the (d-1)-dimensional hypervolume of the points at or left of the slice.
    """
    pts = [p for p in points if all(x < r for x, r in zip(p, reference))]
    if not pts:
        return 0.0
    if len(reference) == 1:
        return reference[0] - min(p[0] for p in pts)
    pts.sort(key=lambda p: p[0])
    volume = 0.0
    for i, p in enumerate(pts):
        right = pts[i + 1][0] if i + 1 < len(pts) else reference[0]
        if right > p[0]:
            volume += (right - p[0]) * hypervolume([q[1:] for q in pts[: i + 1]], reference[1:])
    return volume


def minimised(record: TrialRecord, objectives: list[Objective]) -> list[float]:
    return [(1.0 if o.direction == "minimize" else -1.0) * record.metrics.get(o.metric, math.nan) for o in objectives]


def retarget(objectives: list[Objective], target: str) -> list[Objective]:
    """The same objectives with every cost metric read on ``target`` instead."""
    return [
        o.model_copy(update={"metric": metric_name(target, split_metric_name(o.metric)[1])})
        if is_cost_metric(o.metric)
        else o
        for o in objectives
    ]


def per_target_fronts(
    records: list[TrialRecord], objectives: list[Objective], targets: list[str]
) -> dict[str, set[int]]:
    """Accuracy does not depend on the device: one set of trials gives a front per target."""
    return {t: pareto_numbers(records, retarget(objectives, t)) for t in targets}


def running_hypervolume(records: list[TrialRecord], objectives: list[Objective], reference: list[float]) -> list[float]:
    """Hypervolume of the feasible front after each trial (in trial order), against a fixed ``reference``
    given in the objectives' own directions (a maximised objective's reference is its lowest useful value)."""
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    bound = [s * r for s, r in zip(signs, reference)]
    history, seen = [], []
    for r in sorted(records, key=lambda r: r.number):
        point = minimised(r, objectives)
        if r.feasible and all(math.isfinite(v) for v in point):
            seen.append(point)
        history.append(hypervolume(seen, bound))
    return history


def trials_to_reach(history: list[float], level: float) -> int | None:
    """How many trials a run needed for its hypervolume to reach ``level`` (None: it never did)."""
    return next((i + 1 for i, v in enumerate(history) if v >= level), None)


def hypervolume_history(records: list[TrialRecord], objectives: list[Objective]) -> list[float]:
    """Hypervolume of the feasible front after each trial, with the worst value seen as reference."""
    feasible = [
        minimised(r, objectives)
        for r in records
        if r.feasible and all(math.isfinite(v) for v in minimised(r, objectives))
    ]
    if not feasible:
        return [0.0] * len(records)
    signs = [1.0 if o.direction == "minimize" else -1.0 for o in objectives]
    worst = [max(p[i] for p in feasible) * 1.1 + 1e-12 for i in range(len(objectives))]
    return running_hypervolume(records, objectives, [s * w for s, w in zip(signs, worst)])
