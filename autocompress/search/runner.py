"""Drive a job's Optuna study: sample recipes, score them, track them, keep the front current.

Every trial is persisted in the SQL storage as it finishes; a killed search resumes by running
the same command again: trials left RUNNING are detected by their missing heartbeat, marked
failed and re-queued with the same parameters, so no finished trial is repeated or lost. Any
number of workers (processes, machines, Ray tasks) can share a job: each reserves its next trial
under a per-job lock, so together they run exactly ``search.trials`` finished trials.
"""

from __future__ import annotations

import gc
import json
import math
import tempfile
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from autocompress.cache import cache_limit_bytes, evict_least_recently_used, text_digest
from autocompress.errors import ConfigError
from autocompress.evaluators import evaluators_for
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import HardwareTarget, load_target
from autocompress.models.loading import check_remote_code, resolve_checkpoint
from autocompress.pipeline import (Session, apply_recipe, check_compatible, cost_needs_model, measure_accuracy,
                                   open_session, predict_cost, predict_recipe_cost)
from autocompress.metrics import is_cost_metric, split_metric_name
from autocompress.recipe import Recipe
from autocompress.search.finish import export_front
from autocompress.search.fidelity import near_front, objective_points, proxy_correlation
from autocompress.search.front import LATE_METRICS, TrialRecord, is_feasible, trial_records
from autocompress.search.job import Job
from autocompress.search.lock import STORAGE_WIDE, job_lock
from autocompress.search.plots import write_front
from autocompress.search.report import write_report
from autocompress.search.samplers import make_sampler
from autocompress.search.space import SearchSpace
from autocompress.search.storage import open_storage
from autocompress.tracking import MlflowTracker, NullTracker, Tracker

warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # we beat for ask/tell ourselves
warnings.filterwarnings("ignore", message="Clip non-finite values")  # GP: an unevaluated trial's accuracy (below)
optuna.logging.set_verbosity(optuna.logging.WARNING)


@dataclass
class JobResult:
    job: Job
    records: list[TrialRecord]

    @property
    def proxy_correlation(self) -> dict[str, dict[str, float]]:
        """Spearman rho between the cheap proxy and each costly metric, over the trials that have both."""
        return proxy_correlation(self.records, self.job.evaluation.proxy, self.job.evaluation.costly)

    @property
    def front(self) -> list[TrialRecord]:
        return [r for r in self.records if r.pareto]


def counts_as_finished(trial: FrozenTrial) -> bool:
    """COMPLETE and PRUNED trials count; FAIL counts only when the trial itself failed (not a kill)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs)


def job_fingerprint(job: Job, space: SearchSpace) -> dict[str, Any]:
    """What must not change between runs of the same job name."""
    return {"model": job.model, "space": space.model_dump(mode="json"), "targets": job.targets,
            "objectives": [o.model_dump() for o in job.objectives],
            "budgets": {m: b.model_dump(exclude_none=True) for m, b in job.budgets.items()}, "calibration": job.calibration.model_dump(),
            "workload": job.workload.model_dump(), "seed": job.search.seed,
            # what a trial's accuracy metrics depend on (batch size, costly-metric policy do not)
            "evaluation": job.evaluation.model_dump(include={"data", "limit", "top_k"})}


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

    def __init__(self, job: Job, space: SearchSpace, session: Session, targets: list[HardwareTarget],
                 tracker: Tracker):
        self.job, self.space, self.session, self.targets, self.tracker = job, space, session, targets, tracker
        self.workload = Workload(**job.workload.model_dump())
        self.uncertainty = {t.name: t.uncertainty for t in targets}
        self.clock = StageClock()
        self.predicts_first = predicts_first(job)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        job = self.job
        recipe = self.space.sample(trial, job.model, job.search.seed, job.calibration)
        trial.set_user_attr("recipe", recipe.to_dict())
        trial.set_user_attr("recipe_digest", recipe.digest())
        with self.clock("tracking"):
            trial.set_user_attr("run_id", self.tracker.start_trial(trial.number, recipe))
        try:
            twin = self._twin(trial, recipe.digest())
            if twin is not None:  # samplers repeat points of small spaces: reuse, don't recompute
                trial.set_user_attr("duplicate_of", twin.number)
                metrics = dict(twin.user_attrs["metrics"])
                if twin.state == TrialState.PRUNED:  # stored by earlier versions, which pruned over-budget trials
                    trial.set_user_attr("metrics", metrics)
                    raise optuna.TrialPruned(twin.user_attrs.get("pruned_reason", "cost over budget"))
                if "infeasible_reason" in twin.user_attrs:
                    raise OverBudget(metrics, twin.user_attrs["infeasible_reason"])
            else:
                metrics = self._measure(trial, recipe)
            values = tuple(float(metrics[o.metric]) for o in job.objectives)
            bad = [o.metric for o, v in zip(job.objectives, values) if not math.isfinite(v)]
            if bad:
                raise ValueError(f"objective {', '.join(bad)} is not finite")
        except OverBudget as over:  # COMPLETE and infeasible: the sampler learns from it (docs/search.md)
            metrics = over.metrics
            trial.set_user_attr("infeasible_reason", over.reason)
            values = tuple(unevaluated_value(metrics, o.metric, o.direction) for o in job.objectives)
        except optuna.TrialPruned as exc:
            trial.set_user_attr("pruned_reason", str(exc))
            raise
        except Exception as exc:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:5000])
            raise
        finally:
            trial.set_user_attr("seconds", self.clock.take())
        trial.set_user_attr("metrics", metrics)
        constraints = {m: self.violation(m, metrics) for m in job.budgets}
        trial.set_user_attr("constraints", list(constraints.values()))
        for metric, violation in constraints.items():
            trial.set_constraint(metric, violation)  # what NSGA-II and TPE read
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
            trial.set_user_attr("cost_from_recipe", predicted is not None)
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
            raise OverBudget(metrics, f"cost over budget ({source}): "
                             + ", ".join(f"{m}={metrics[m]:.4g}" for m in over))

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
        spent = sum(t.user_attrs.get("costly_tokens", 0.0) for t in trial.study.get_trials(deepcopy=False))
        if job.evaluation.costly_budget is not None and spent + tokens > job.evaluation.costly_budget:
            return False
        trial.set_user_attr("costly_tokens", tokens)
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
            for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                  TrialState.RUNNING)):
                if other.user_attrs.get("recipe_digest") != digest or other.number == trial.number:
                    continue
                if other.state != TrialState.RUNNING and "duplicate_of" not in other.user_attrs:
                    return other
                running |= other.state == TrialState.RUNNING and other.number < trial.number
            if not running:
                return None
            time.sleep(0.5)
            optuna.storages.fail_stale_trials(study)


class Heartbeat:
    """Records an Optuna heartbeat for one trial every ``interval`` seconds while it runs.

    Optuna only beats for ``study.optimize``; trials taken with ``ask`` (every backend here) need
    their own, so that a dead worker's trials go stale and ``reap`` fails and re-queues them.
    """

    def __init__(self, storage: optuna.storages.RDBStorage, trial_id: int, interval: float):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, daemon=True, name=f"heartbeat-{trial_id}")

    def _beat(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # a database hiccup must not kill the trial; the next beat retries
                pass

    def __enter__(self) -> "Heartbeat":
        self.storage.record_heartbeat(self.trial_id)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class JobRunner:
    """Opens (or resumes) the study for a job; its backend runs trials until the job has its count.

    ``open`` -> ``search`` (any number of workers, each with its own runner) -> ``finish`` (once).
    """

    def __init__(self, job: Job, console: Console | None = None, progress: bool = True, sampler_offset: int = 0,
                 worker: str | None = None, session: Session | None = None):
        self.job = job
        self._session = session  # a base model already loaded for this job's model/calibration/seed (benchmarks)
        self.worker = worker  # recorded on each trial it runs
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.sampler_offset = sampler_offset  # workers of one job sample with different seeds
        # Validate everything the user wrote before anything is created on disk or in a database.
        self.space = SearchSpace.load(job.space)
        self.targets = [load_target(t, f"targets[{i}]") for i, t in enumerate(job.targets)]
        check_remote_code(resolve_checkpoint(job.model), job.trust_remote_code)
        accuracy = [m for m in job.metric_names + job.evaluation.costly if not is_cost_metric(m)]
        for evaluator in evaluators_for(accuracy, job.evaluation, "evaluation"):
            evaluator.prepare()
        if session is not None:
            check_compatible(session, Recipe(model=job.model, seed=job.search.seed, calibration=job.calibration))

    # ---- set-up ----------------------------------------------------------------------------
    def _sampler(self, trials_so_far: int = 0) -> optuna.samplers.BaseSampler:
        """The job's sampler; workers of one job, and a resumed study, each get their own stream.

        A fresh study samples with the job's seed (reproducible); a resumed one with a seed derived
        from it and the number of trials already there, or it would replay the random draws it began with.
        """
        settings = self.job.search
        seed = settings.seed + 1000 * self.sampler_offset
        if trials_so_far:
            seed = int(text_digest(str(seed), str(trials_so_far))[:8], 16)
        return make_sampler(settings.model_copy(update={"seed": seed}))

    def _load_study(self, storage: optuna.storages.BaseStorage) -> optuna.Study | None:
        """The job's existing study (None if new); a different job under the same name is an error."""
        job = self.job
        try:
            study = optuna.load_study(study_name=job.name, storage=storage, sampler=self._sampler())
        except KeyError:
            return None
        if study.user_attrs.get("job") != job_fingerprint(job, self.space):
            raise ConfigError("name", f"a job named {job.name!r} with a different model, space, targets, objectives, "
                                      "budgets, calibration, workload, evaluation data or seed already exists in this "
                                      "storage; use another name")
        study.sampler = self._sampler(len(study.get_trials(deepcopy=False)))
        return study

    def _create_study(self, storage: optuna.storages.BaseStorage) -> optuna.Study:
        job = self.job
        try:
            study = optuna.create_study(study_name=job.name, storage=storage, sampler=self._sampler(),
                                        directions=[o.direction for o in job.objectives])
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it first
            study = self._load_study(storage)
            assert study is not None
            return study
        study.set_user_attr("job", job_fingerprint(job, self.space))
        for seed in self.space.seeds:  # sensible configurations first (e.g. uniform int8, uniform int4)
            study.enqueue_trial(seed)
        return study

    def _open_tracker(self) -> Tracker:
        uri = self.job.tracking_uri
        if uri is None:
            return NullTracker()
        try:
            return MlflowTracker(uri, self.job.name, artifact_location=str(self.job.workdir_path / "mlartifacts"
                                                                          / self.job.name))
        except Exception as exc:
            raise ConfigError("tracking", f"cannot open MLflow tracking URI {uri!r}: {str(exc)[:200]}") from None

    def open(self) -> None:
        """Connect storage and tracking, create or resume the study, load the model once."""
        job = self.job
        cache_limit_bytes()  # a bad $AUTOCOMPRESS_CACHE_MAX_GB fails here, before anything is written
        if job.storage is None or job.tracking is None:
            job.workdir_path.mkdir(parents=True, exist_ok=True)
        with job_lock(job.storage_url, STORAGE_WIDE):  # processes starting together create the tables once
            self.storage = open_storage(job.storage_url, job.search.heartbeat_seconds)
        with job_lock(job.storage_url, job.name):  # ... and the study and its MLflow job run once
            study = self._load_study(self.storage)
            self.tracker = self._open_tracker()  # only now: every check that can fail has passed
            self.study = study or self._create_study(self.storage)
            self.tracker.start_job(job.model_dump(mode="json"))
            self._reap(initial=True)
        self.session = self._session or self._open_session()
        if predicts_first(job):
            self.session.base_profile  # measured once here, so that no trial pays for it
        self.objective = TrialObjective(job, self.space, self.session, self.targets, self.tracker)
        self.deadline = time.monotonic() + job.search.timeout if job.search.timeout else math.inf

    def _open_session(self) -> Session:
        job = self.job
        with self.console.status(f"loading {job.model} and calibration text..."):
            return open_session(job.model, job.calibration, job.search.seed, job.evaluation,
                                trust_remote_code=job.trust_remote_code)

    def _reap(self, initial: bool = False) -> None:
        """Fail trials whose worker stopped beating, re-queue them once, close their MLflow runs.

        Call under the job lock, so that two workers never re-queue the same trial.
        """
        study, tracker = self.study, self.tracker
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        requeued = {t.user_attrs.get("retry_of") for t in trials}
        killed = [t for t in trials if t.state == TrialState.FAIL and "error" not in t.user_attrs
                  and t.number not in requeued]
        for t in killed:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
            self.console.print(f"[yellow]trial {t.number} was interrupted; re-queued with the same parameters[/]")
        if initial:
            by_number = {t.number: t for t in trials}
            for number in tracker.running_trials():
                t = by_number.get(number)
                if t is not None and counts_as_finished(t):
                    self._log_outcome(t)
        if initial or killed:
            tracker.close_interrupted({t.number for t in trials
                                       if t.state == TrialState.RUNNING or counts_as_finished(t)})

    # ---- trials (what backends call) -------------------------------------------------------
    def finished(self) -> int:
        return sum(counts_as_finished(t) for t in self.study.get_trials(deepcopy=False))

    def reserve(self) -> tuple[optuna.Trial | None, bool]:
        """(the job's next trial or None, whether the job has all its finished trials).

        Under the job lock a worker starts a trial only while finished + running < trials, so any
        number of workers together start exactly as many as needed. (None, False) means the last
        trials are running elsewhere: they finish, or their worker dies and they are re-queued.
        """
        job = self.job
        with job_lock(job.storage_url, job.name):
            self._reap()
            trials = self.study.get_trials(deepcopy=False)
            done = sum(counts_as_finished(t) for t in trials)
            if done >= job.search.trials:
                return None, True
            if done + sum(t.state == TrialState.RUNNING for t in trials) >= job.search.trials:
                return None, False
            trial = self.study.ask()  # a re-queued trial first, if any
            self.storage.record_heartbeat(trial._trial_id)
            if self.worker:
                trial.set_user_attr("worker", self.worker)
            return trial, False

    def next_trial(self, should_stop: Callable[[], bool] = lambda: False) -> optuna.Trial | None:
        """The job's next trial, waiting while the last ones run elsewhere; None when done or stopping."""
        while not should_stop() and time.monotonic() < self.deadline:
            trial, done = self.reserve()
            if trial is not None or done:
                return trial
            time.sleep(self.job.search.heartbeat_seconds)
        return None

    def run_trial(self, trial: optuna.Trial, beat: bool = True) -> FrozenTrial:
        """Score one reserved trial (beating meanwhile, unless the caller does), store its outcome."""
        values, state = None, TrialState.COMPLETE
        with Heartbeat(self.storage, trial._trial_id, self.job.search.heartbeat_seconds) if beat else nullcontext():
            try:
                values = self.objective(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except Exception as exc:
                state = TrialState.FAIL
                if "error" not in trial.user_attrs:  # failed before the objective could record why
                    trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:5000])
            frozen = self.study.tell(trial, values, state=state)
        self._log_outcome(frozen)
        self.tracker.mark_pareto({r.number for r in trial_records(self.study, self.job.objectives) if r.pareto})
        evict_least_recently_used()  # a search meets new step lineages in nearly every trial: ~1 GB each
        gc.collect()
        return frozen

    def _log_outcome(self, trial: FrozenTrial) -> None:
        run_id = trial.user_attrs.get("run_id")
        if not run_id:
            return
        tags = {f"autocompress.{key}": trial.user_attrs[key] for key in ("pruned_reason", "infeasible_reason")
                if key in trial.user_attrs} or None
        seconds = {f"seconds.{stage}": v for stage, v in trial.user_attrs.get("seconds", {}).items()}
        self.tracker.log_trial(run_id, trial.user_attrs.get("metrics", {}) | seconds, trial.state.name,
                               is_feasible(trial), error=trial.user_attrs.get("error"), extra_tags=tags)

    # ---- run -------------------------------------------------------------------------------
    def search(self, should_stop: Callable[[], bool] = lambda: False,
               on_trial: Callable[[FrozenTrial], None] = lambda _: None) -> bool:
        """Run trials in this process, one after another (``on_trial`` sees each outcome); True once the job
        has all its finished trials. ``autocompress.backends`` runs them where ``job.backend`` says."""
        while (trial := self.next_trial(should_stop)) is not None:
            on_trial(self.run_trial(trial))
        return self.finished() >= self.job.search.trials

    def finish(self) -> JobResult:
        """The front: Pareto tags, front artifacts, exported checkpoints. Once per job."""
        job, tracker = self.job, self.tracker
        records = trial_records(self.study, job.objectives)
        if job.evaluation.costly:
            with self.console.status("measuring costly metrics of the Pareto-optimal trials..."):
                records = self._score_front(records)
            result = JobResult(job, records)
            job.job_dir.mkdir(parents=True, exist_ok=True)
            (job.job_dir / "proxy_correlation.json").write_text(json.dumps(result.proxy_correlation, indent=2))
            tracker.log_metrics(tracker.job_run_id(), {f"spearman.{job.evaluation.proxy}.{m}": c["rho"]
                                                       for m, c in result.proxy_correlation.items()})
        tracker.mark_pareto({r.number for r in records if r.pareto})
        if tracker.enabled:
            with tempfile.TemporaryDirectory() as tmp:
                tracker.log_front(str(write_front([r.row() for r in records],
                                                  [(o.metric, o.direction) for o in job.objectives], tmp)))
        report = write_report(self.study, job, job.job_dir / "report")
        for target, front in report["fronts"].items():
            tracker.mark_pareto(set(front), tag=f"autocompress.pareto.{target}")
        tracker.log_report(str(job.job_dir / "report"))
        if job.export.checkpoint:
            with self.console.status("exporting Pareto-optimal checkpoints..."):
                export_front(job, self.session, records, tracker)
        tracker.finish_job()
        return JobResult(job, records)

    def run(self) -> JobResult:
        """open -> search (in this process) -> finish."""
        self.open()
        self.search()
        return self.finish()

    def _score_front(self, records: list[TrialRecord]) -> list[TrialRecord]:
        """Costly metrics for every Pareto-optimal trial that lacks them, logged to its own MLflow run."""
        costly = self.job.evaluation.costly
        for record in records:
            if record.pareto and not all(m in record.metrics for m in costly):
                model = apply_recipe(self.session, Recipe.parse_obj(record.recipe))
                late = measure_accuracy(model, self.session, costly)
                self.study.set_user_attr(f"{LATE_METRICS}{record.number}", late)
                if record.run_id:
                    self.tracker.log_metrics(record.run_id, late)
        return trial_records(self.study, self.job.objectives)


def summary(trial: FrozenTrial, job: Job) -> str:
    """One line for a progress bar."""
    if "infeasible_reason" in trial.user_attrs:
        return f"trial {trial.number}: infeasible, not evaluated ({trial.user_attrs['infeasible_reason']})"
    if trial.state == TrialState.COMPLETE:
        metrics = trial.user_attrs.get("metrics", {})
        return f"trial {trial.number}: " + ", ".join(f"{o.metric}={metrics.get(o.metric, math.nan):.4g}"
                                                      for o in job.objectives)
    return f"trial {trial.number}: {trial.state.name.lower()}"


def load_result(job: Job) -> JobResult:
    """The trials of a job as stored, without running anything."""
    storage = open_storage(job.storage_url, job.search.heartbeat_seconds)
    try:
        study = optuna.load_study(study_name=job.name, storage=storage)
    except KeyError:
        raise ConfigError("name", f"no job named {job.name!r} in {job.storage_url}") from None
    return JobResult(job, trial_records(study, job.objectives))

