"""Drive a job's Optuna study: sample recipes, score them, track them, keep the front current.

Every trial is persisted in the SQL storage as it finishes; a killed search resumes by running
the same command again: trials left RUNNING are detected by their missing heartbeat, marked
failed and re-queued with the same parameters, so no finished trial is repeated or lost. Any
number of workers (processes, machines, Ray tasks) can share a job: each reserves its next trial
under a per-job lock, so together they run exactly ``search.trials`` finished trials.
"""

from __future__ import annotations

import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console

from autocompress.cache import cache_limit_bytes, evict_least_recently_used, text_digest
from autocompress.errors import ConfigError
from autocompress.evaluators import evaluators_for
from autocompress.metrics import is_cost_metric
from autocompress.models.loading import check_remote_code, resolve_checkpoint
from autocompress.pipeline import Session, check_compatible, open_session
from autocompress.recipe import Recipe
from autocompress.search.attrs import TrialAttrs, error_text, job_fingerprint_of, set_job_fingerprint, write
from autocompress.search.finish import JobResult, finish_job
from autocompress.search.front import is_feasible, trial_records
from autocompress.search.heartbeat import Heartbeat
from autocompress.search.job import Job
from autocompress.search.lock import STORAGE_WIDE, job_lock
from autocompress.search.objective import TrialObjective, load_targets, predicts_first
from autocompress.search.samplers import make_sampler
from autocompress.search.space import SearchSpace
from autocompress.search.storage import open_storage
from autocompress.tracking import MlflowTracker, NullTracker, Tracker


def counts_as_finished(trial: FrozenTrial) -> bool:
    """COMPLETE and PRUNED trials count; FAIL counts only when the trial itself failed (not a kill)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and TrialAttrs.of(trial).error is not None
    )


def job_fingerprint(job: Job, space: SearchSpace) -> dict[str, Any]:
    """What must not change between runs of the same job name."""
    return {
        "model": job.model,
        "space": space.model_dump(mode="json"),
        "targets": job.targets,
        "objectives": [o.model_dump() for o in job.objectives],
        "budgets": {m: b.model_dump(exclude_none=True) for m, b in job.budgets.items()},
        "calibration": job.calibration.model_dump(),
        "workload": job.workload.model_dump(),
        "seed": job.search.seed,
        # what a trial's accuracy metrics depend on (batch size, costly-metric policy do not)
        "evaluation": job.evaluation.model_dump(include={"data", "limit", "top_k"}),
    }


class JobRunner:
    """Opens (or resumes) the study for a job; its backend runs trials until the job has its count.

    ``open`` -> ``search`` (any number of workers, each with its own runner) -> ``finish`` (once).
    """

    def __init__(
        self,
        job: Job,
        console: Console | None = None,
        progress: bool = True,
        sampler_offset: int = 0,
        worker: str | None = None,
        session: Session | None = None,
    ):
        self.job = job
        self._session = session  # a base model already loaded for this job's model/calibration/seed (benchmarks)
        self.worker = worker  # recorded on each trial it runs
        self.console = console or Console(stderr=True)
        self.progress = progress
        self.sampler_offset = sampler_offset  # workers of one job sample with different seeds
        self._study_id: int | None = None  # the study's id in the storage, read once
        # Validate everything the user wrote before anything is created on disk or in a database.
        self.space = SearchSpace.load(job.space)
        self.targets = load_targets(job)
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
        if job_fingerprint_of(study) != job_fingerprint(job, self.space):
            raise ConfigError(
                "name",
                f"a job named {job.name!r} with a different model, space, targets, objectives, "
                "budgets, calibration, workload, evaluation data or seed already exists in this "
                "storage; use another name",
            )
        study.sampler = self._sampler(len(study.get_trials(deepcopy=False)))
        return study

    def _create_study(self, storage: optuna.storages.BaseStorage) -> optuna.Study:
        job = self.job
        try:
            study = optuna.create_study(
                study_name=job.name,
                storage=storage,
                sampler=self._sampler(),
                directions=[o.direction for o in job.objectives],
            )
        except optuna.exceptions.DuplicatedStudyError:  # another worker created it first
            study = self._load_study(storage)
            assert study is not None
            return study
        set_job_fingerprint(study, job_fingerprint(job, self.space))
        for seed in self.space.seeds:  # sensible configurations first (e.g. uniform int8, uniform int4)
            study.enqueue_trial(seed)
        return study

    def _open_tracker(self) -> Tracker:
        uri = self.job.tracking_uri
        if uri is None:
            return NullTracker()
        try:
            return MlflowTracker(
                uri, self.job.name, artifact_location=str(self.job.workdir_path / "mlartifacts" / self.job.name)
            )
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
            _ = self.session.base_profile  # measured once here, so that no trial pays for it
        self.objective = TrialObjective(job, self.space, self.session, self.targets, self.tracker)
        self.deadline = time.monotonic() + job.search.timeout if job.search.timeout else math.inf

    def _open_session(self) -> Session:
        job = self.job
        with self.console.status(f"loading {job.model} and calibration text..."):
            return open_session(
                job.model, job.calibration, job.search.seed, job.evaluation, trust_remote_code=job.trust_remote_code
            )

    def _reap(self, initial: bool = False) -> None:
        """Fail trials whose worker stopped beating, re-queue them once, close their MLflow runs.

        Call under the job lock, so that two workers never re-queue the same trial.
        """
        study, tracker = self.study, self.tracker
        optuna.storages.fail_stale_trials(study)
        trials = study.get_trials(deepcopy=False)
        requeued = {TrialAttrs.of(t).retry_of for t in trials}
        killed = [
            t
            for t in trials
            if t.state == TrialState.FAIL and TrialAttrs.of(t).error is None and t.number not in requeued
        ]
        for t in killed:
            study.enqueue_trial(t.params, user_attrs=TrialAttrs(retry_of=t.number).stored())
            self.console.print(f"[yellow]trial {t.number} was interrupted; re-queued with the same parameters[/]")
        if initial:
            by_number = {t.number: t for t in trials}
            for number in tracker.running_trials():
                t = by_number.get(number)
                if t is not None and counts_as_finished(t):
                    self._log_outcome(t)
        if initial or killed:
            tracker.close_interrupted(
                {t.number for t in trials if t.state == TrialState.RUNNING or counts_as_finished(t)}
            )

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
            self.storage.record_heartbeat(self.trial_id(trial))
            if self.worker:
                write(trial, TrialAttrs(worker=self.worker))
            return trial, False

    def trial_id(self, trial: optuna.Trial) -> int:
        """The storage's id of a trial of this job's study (what heartbeats and Ray tasks name it by)."""
        if self._study_id is None:
            self._study_id = self.storage.get_study_id_from_name(self.study.study_name)
        return self.storage.get_trial_id_from_study_id_trial_number(self._study_id, trial.number)

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
        beating = Heartbeat(self.storage, self.trial_id(trial), self.job.search.heartbeat_seconds) if beat else None
        with beating or nullcontext():
            try:
                values = self.objective(trial)
            except optuna.TrialPruned:
                state = TrialState.PRUNED
            except Exception as exc:
                state = TrialState.FAIL
                if TrialAttrs.of(trial).error is None:  # failed before the objective could record why
                    write(trial, TrialAttrs(error=error_text(exc)))
            frozen = self.study.tell(trial, values, state=state)
        self._log_outcome(frozen)
        self.tracker.mark_pareto({r.number for r in trial_records(self.study, self.job.objectives) if r.pareto})
        evict_least_recently_used()  # a search meets new step lineages in nearly every trial: ~1 GB each
        gc.collect()
        return frozen

    def _log_outcome(self, trial: FrozenTrial) -> None:
        attrs = TrialAttrs.of(trial)
        if not attrs.run_id:
            return
        reasons = {"pruned_reason": attrs.pruned_reason, "infeasible_reason": attrs.infeasible_reason}
        tags = {f"autocompress.{key}": reason for key, reason in reasons.items() if reason is not None} or None
        seconds = {f"seconds.{stage}": v for stage, v in (attrs.seconds or {}).items()}
        self.tracker.log_trial(
            attrs.run_id,
            (attrs.metrics or {}) | seconds,
            trial.state.name,
            is_feasible(trial),
            error=attrs.error,
            extra_tags=tags,
        )

    # ---- run -------------------------------------------------------------------------------
    def search(
        self, should_stop: Callable[[], bool] = lambda: False, on_trial: Callable[[FrozenTrial], None] = lambda _: None
    ) -> bool:
        """Run trials in this process, one after another (``on_trial`` sees each outcome); True once the job
        has all its finished trials. ``autocompress.backends`` runs them where ``job.backend`` says."""
        while (trial := self.next_trial(should_stop)) is not None:
            on_trial(self.run_trial(trial))
        return self.finished() >= self.job.search.trials

    def finish(self) -> JobResult:
        """The finish step (:func:`autocompress.search.finish.finish_job`). Once per job."""
        return finish_job(self.job, self.study, self.session, self.tracker, self.console)

    def run(self) -> JobResult:
        """open -> search (in this process) -> finish."""
        self.open()
        self.search()
        return self.finish()


def summary(trial: FrozenTrial, job: Job) -> str:
    """One line for a progress bar."""
    attrs = TrialAttrs.of(trial)
    if attrs.infeasible_reason is not None:
        return f"trial {trial.number}: infeasible, not evaluated ({attrs.infeasible_reason})"
    if trial.state == TrialState.COMPLETE:
        metrics = attrs.metrics or {}
        return f"trial {trial.number}: " + ", ".join(
            f"{o.metric}={metrics.get(o.metric, math.nan):.4g}" for o in job.objectives
        )
    return f"trial {trial.number}: {trial.state.name.lower()}"
