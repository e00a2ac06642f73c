"""One trial: recipe -> cost -> compressed model -> accuracy, with its budgets, its twins and its stage clock."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager

import optuna
from optuna.trial import FrozenTrial, TrialState

from autocompress.evaluators import evaluators_for
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import HardwareTarget, load_target
from autocompress.metrics import is_cost_metric, split_metric_name
from autocompress.pipeline import (
    Session,
    apply_recipe,
    cost_needs_model,
    measure_accuracy,
    predict_cost,
    predict_recipe_cost,
)
from autocompress.recipe import Recipe
from autocompress.search.attrs import TrialAttrs, error_text, write
from autocompress.search.fidelity import near_front, objective_points
from autocompress.search.front import trial_records
from autocompress.search.job import Job
from autocompress.search.space import SearchSpace
from autocompress.tracking import Tracker


class StageClock:
    """Wall time per stage of a trial: ``with clock("apply"): ...``, then ``take()``."""

    def __init__(self) -> None:
        self._seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self._seconds[stage] = self._seconds.get(stage, 0.0) + time.perf_counter() - start

    def charge(self, stage: str, seconds: float) -> None:
        """Book time measured elsewhere (e.g. a replayed measurement) to a stage."""
        self._seconds[stage] = self._seconds.get(stage, 0.0) + seconds

    def peek(self) -> dict[str, float]:
        return dict(self._seconds)

    def take(self) -> dict[str, float]:
        seconds, self._seconds = self._seconds, {}
        return seconds


def load_targets(job: Job) -> list[HardwareTarget]:
    """The hardware targets the job's trials are priced on; errors name ``targets[i]``."""
    return [load_target(t, f"targets[{i}]") for i, t in enumerate(job.targets)]


def costly_tokens(session: Session, job: Job) -> float:
    """Declared cost (tokens forwarded) of one evaluation of the job's costly metrics."""
    return sum(e.cost(session.ctx) for e in evaluators_for(job.evaluation.costly, session.evaluation))


def predicts_first(job: Job) -> bool:
    """Whether trials predict their cost from the recipe first: asked for, and a cost budget to check."""
    return job.search.predict_first and any(is_cost_metric(m) for m in job.budgets)


class OverBudget(Exception):
    """The cost breaks a cost budget: the trial is infeasible and its accuracy is not measured."""

    def __init__(self, metrics: dict[str, float], reason: str):
        super().__init__(reason)
        self.metrics, self.reason = metrics, reason


def unevaluated_value(metrics: dict[str, float], metric: str, direction: str) -> float:
    """An objective of a trial that was not evaluated: its cost is known (predicted); an accuracy
    metric is not, and is told to the sampler as the worst value there is (+inf when minimised)."""
    if metric in metrics:
        return float(metrics[metric])
    return math.inf if direction == "minimize" else -math.inf


class TrialObjective:
    """Recipe -> cost (predicted from the recipe when it can be) -> compressed model -> cost -> accuracy;
    a trial whose cost breaks a cost budget stops at the first of those that shows it (see docs/search.md)."""

    def __init__(self, job: Job, space: SearchSpace, session: Session, targets: list[HardwareTarget], tracker: Tracker):
        self.job, self.space, self.session, self.targets, self.tracker = job, space, session, targets, tracker
        self.workload = Workload(**job.workload.model_dump())
        self.uncertainty = {t.name: t.uncertainty for t in targets}
        self.clock = StageClock()
        self.predicts_first = predicts_first(job)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        job = self.job
        recipe = self.space.sample(trial, job.model, job.search.seed, job.calibration)
        write(trial, TrialAttrs(recipe=recipe.to_dict(), recipe_digest=recipe.digest()))
        with self.clock("tracking"):
            write(trial, TrialAttrs(run_id=self.tracker.start_trial(trial.number, recipe)))
        try:
            twin = self._twin(trial, recipe.digest())
            if twin is not None:  # samplers repeat points of small spaces: reuse, don't recompute
                write(trial, TrialAttrs(duplicate_of=twin.number))
                known = TrialAttrs.of(twin)
                metrics = dict(known.metrics)  # type: ignore[arg-type]  # a finished trial has metrics
                if twin.state == TrialState.PRUNED:  # stored by earlier versions, which pruned over-budget trials
                    write(trial, TrialAttrs(metrics=metrics))
                    raise optuna.TrialPruned(known.pruned_reason or "cost over budget")
                if known.infeasible_reason is not None:
                    raise OverBudget(metrics, known.infeasible_reason)
            else:
                metrics = self._measure(trial, recipe)
            values = tuple(float(metrics[o.metric]) for o in job.objectives)
            bad = [o.metric for o, v in zip(job.objectives, values) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"objective {', '.join(bad)} is not finite")
        except OverBudget as over:  # COMPLETE and infeasible: the sampler learns from it (docs/search.md)
            metrics = over.metrics
            write(trial, TrialAttrs(infeasible_reason=over.reason))
            values = tuple(unevaluated_value(metrics, o.metric, o.direction) for o in job.objectives)
        except optuna.TrialPruned as exc:
            write(trial, TrialAttrs(pruned_reason=str(exc)))
            raise
        except Exception as exc:
            write(trial, TrialAttrs(error=error_text(exc)))
            raise
        finally:
            write(trial, TrialAttrs(seconds=self.clock.take()))
        write(trial, TrialAttrs(metrics=metrics))
        for metric in job.budgets:  # Optuna's constraints: what NSGA-II and TPE read, and what feasibility is
            trial.set_constraint(metric, self.violation(metric, metrics))
        return values

    def violation(self, metric: str, metrics: dict[str, float]) -> float:
        """How far a metric is beyond its budget (<= 0: met); cost metrics may use their upper bound.
        A metric not measured (the accuracy of an over-budget trial) has no known violation: 0."""
        if metric not in metrics:
            return 0.0
        value = metrics[metric]
        target = split_metric_name(metric)[0]
        if self.job.search.cost_bound == "upper" and target in self.uncertainty:
            value *= 1 + self.uncertainty[target]
        return self.job.budgets[metric].violation(value)

    def _measure(self, trial: optuna.Trial, recipe: Recipe) -> dict[str, float]:
        predicted = None
        if self.predicts_first:
            with self.clock("predict_recipe"):
                predicted = predict_recipe_cost(self.session, recipe, self.targets, self.workload)
            write(trial, TrialAttrs(cost_from_recipe=predicted is not None))
            if predicted is not None:
                self._check_cost(predicted, "predicted from the recipe")
        with self.clock("apply"):
            model = apply_recipe(self.session, recipe, self.clock)
        if predicted is not None and not cost_needs_model(model):
            metrics = dict(predicted)  # equal to the applied model's cost (tests/test_predict_profile.py)
        else:  # the exit depth is measured on text; or nothing was predicted
            with self.clock("predict"):
                metrics = predict_cost(model, self.targets, self.workload)
            self._check_cost(metrics, "predicted from the compressed model")
        with self.clock("evaluate"):
            metrics |= measure_accuracy(model, self.session, self.job.metric_names)
        if self._wants_costly(trial, metrics):
            with self.clock("evaluate_costly"):
                metrics |= measure_accuracy(model, self.session, self.job.evaluation.costly)
        return metrics

    def _check_cost(self, metrics: dict[str, float], source: str) -> None:
        """Raise :class:`OverBudget` if a cost metric breaks its budget."""
        over = [m for m in self.job.budgets if is_cost_metric(m) and self.violation(m, metrics) > 0]
        if over:
            raise OverBudget(
                metrics, f"cost over budget ({source}): " + ", ".join(f"{m}={metrics[m]:.4g}" for m in over)
            )

    def _wants_costly(self, trial: optuna.Trial, metrics: dict[str, float]) -> bool:
        """Multi-fidelity: costly metrics only for a feasible trial within the margin of the current
        front, while the job's budget of forwarded tokens for them lasts."""
        job = self.job
        if not job.evaluation.costly or any(self.violation(m, metrics) > 0 for m in job.budgets):
            return False
        signs = [1.0 if o.direction == "minimize" else -1.0 for o in job.objectives]
        point = [s * metrics[o.metric] for s, o in zip(signs, job.objectives)]
        others = objective_points(trial_records(trial.study, job.objectives), job.objectives)
        if not near_front(point, others, job.evaluation.margin):
            return False
        tokens = costly_tokens(self.session, job)
        spent = sum(TrialAttrs.of(t).costly_tokens or 0.0 for t in trial.study.get_trials(deepcopy=False))
        if job.evaluation.costly_budget is not None and spent + tokens > job.evaluation.costly_budget:
            return False
        write(trial, TrialAttrs(costly_tokens=tokens))
        return True

    @staticmethod
    def _twin(trial: optuna.Trial, digest: str) -> FrozenTrial | None:
        """The first finished trial with the same recipe, if any.

        A lower-numbered trial with the same recipe that is still running (another worker sampled
        it at the same moment) is waited for, so that a recipe is never measured twice; if its
        worker dies it goes stale, fails and stops being a twin.
        """
        study = trial.study
        while True:
            running = False
            for other in study.get_trials(
                deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
            ):
                attrs = TrialAttrs.of(other)
                if attrs.recipe_digest != digest or other.number == trial.number:
                    continue
                if other.state != TrialState.RUNNING and attrs.duplicate_of is None:
                    return other
                running |= other.state == TrialState.RUNNING and other.number < trial.number
            if not running:
                return None
            time.sleep(0.5)
            optuna.storages.fail_stale_trials(study)
