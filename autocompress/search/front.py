"""Trial records read back from an Optuna study, and the Pareto front over feasible trials."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.search.job import Objective

LATE_METRICS = "metrics.trial-"  # study attribute prefix: metrics measured after a trial finished


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
        return {"trial": self.number, "state": self.state, "feasible": self.feasible, "pareto": self.pareto,
                "metrics": self.metrics, "recipe": self.recipe, "run_id": self.run_id, "error": self.error, "duplicate_of": self.duplicate_of}


def is_feasible(trial: FrozenTrial) -> bool:
    constraints = trial.user_attrs.get("constraints", [])
    return trial.state == TrialState.COMPLETE and all(c <= 0 for c in constraints)


def _record(trial: FrozenTrial, late: dict[str, float]) -> TrialRecord:
    return TrialRecord(number=trial.number, state=trial.state.name, metrics=trial.user_attrs.get("metrics", {}) | late,
                       feasible=is_feasible(trial), recipe=trial.user_attrs.get("recipe", {}),
                       run_id=trial.user_attrs.get("run_id"), error=trial.user_attrs.get("error"),
                       duplicate_of=trial.user_attrs.get("duplicate_of"))


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
    records = [_record(t, attrs.get(f"{LATE_METRICS}{t.number}", {})) for t in study.get_trials(deepcopy=False)]
    front = pareto_numbers(records, objectives)
    for r in records:
        r.pareto = r.number in front
    return records
