"""The one home of what the search stores on Optuna trials and studies as user attributes.

A trial gains its attributes as it runs, so every field is optional. Read them with
``TrialAttrs.of(trial)``; write them with ``write(trial, TrialAttrs(...))``. The stored names are the
field names (what existing storages hold, and what MLflow tags and reports repeat). A trial's
budget violations are not here: they are Optuna's own constraints (``trial.constraints``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import optuna
from optuna.trial import FrozenTrial

MAX_ERROR_CHARS = 5000


@dataclass(frozen=True)
class TrialAttrs:
    recipe: dict[str, Any] | None = None  # the sampled recipe, as a dict
    recipe_digest: str | None = None
    run_id: str | None = None  # the trial's MLflow run ("" when tracking is off)
    metrics: dict[str, float] | None = None  # cost and accuracy metrics measured (or predicted)
    seconds: dict[str, float] | None = None  # wall time per stage
    error: str | None = None  # why the trial itself failed (a killed trial has none)
    infeasible_reason: str | None = None  # over a cost budget: stopped before accuracy was measured
    pruned_reason: str | None = None  # PRUNED by an earlier version for being over budget
    duplicate_of: int | None = None  # the trial whose recipe (and metrics) this one repeats
    retry_of: int | None = None  # the killed trial this one re-runs with the same parameters
    worker: str | None = None  # the service worker that ran it
    costly_tokens: float | None = None  # tokens forwarded for its costly metrics
    cost_from_recipe: bool | None = None  # whether its cost was predicted from the recipe
    ray_node: str | None = None  # the Ray node that scored it

    @classmethod
    def of(cls, trial: FrozenTrial | optuna.Trial) -> TrialAttrs:
        stored = trial.user_attrs
        return cls(**{f.name: stored[f.name] for f in fields(cls) if f.name in stored})

    def stored(self) -> dict[str, Any]:
        """The fields that are set, under their stored names."""
        return {name: value for name, value in asdict(self).items() if value is not None}


def write(trial: optuna.Trial, attrs: TrialAttrs) -> None:
    """Store the fields of ``attrs`` that are set on a running trial."""
    for name, value in attrs.stored().items():
        trial.set_user_attr(name, value)


def error_text(exc: BaseException) -> str:
    """A failure as stored in ``error``: the exception's type and message, bounded."""
    return f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]


# ---- the study's own attributes ------------------------------------------------------------------
_JOB = "job"  # the job's fingerprint: what must not change between runs of one job name
_LATE_METRICS = "metrics.trial-"  # + trial number: metrics measured after the trial finished


def job_fingerprint_of(study: optuna.Study) -> dict[str, Any] | None:
    return study.user_attrs.get(_JOB)


def set_job_fingerprint(study: optuna.Study, fingerprint: dict[str, Any]) -> None:
    study.set_user_attr(_JOB, fingerprint)


def late_metrics(study_attrs: dict[str, Any], number: int) -> dict[str, float]:
    """The metrics measured for trial ``number`` after it finished, from ``study.user_attrs``."""
    return study_attrs.get(f"{_LATE_METRICS}{number}", {})


def set_late_metrics(study: optuna.Study, number: int, metrics: dict[str, float]) -> None:
    study.set_user_attr(f"{_LATE_METRICS}{number}", metrics)
