"""Execution backends: where a job's trials run once its runner has opened the study.

A backend is a function ``run(runner, should_stop) -> None`` that takes trials with
``runner.next_trial`` and scores them with ``runner.run_trial`` until it gets None. Reservation,
heartbeats, reaping and tracking live in the runner, so every backend gets them the same way.
The caller picks the backend (``job.backend``) and starts it: the runner imports none.
"""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console

from autocompress.registry import Registry
from autocompress.search.finish import JobResult
from autocompress.search.job import Job
from autocompress.search.runner import JobRunner

Backend = Callable[[JobRunner, Callable[[], bool]], None]
BACKENDS: Registry[Backend] = Registry("backend", "autocompress.backends")


def register_backend(name: str) -> Callable[[Backend], Backend]:
    return lambda fn: BACKENDS.register(fn, name)


def backend_for(job: Job) -> Backend:
    """The job's backend; an unknown name is a ConfigError on ``backend``."""
    return BACKENDS.get(job.backend, "backend")


def run_trials(runner: JobRunner, should_stop: Callable[[], bool] = lambda: False) -> bool:
    """Run trials of an opened runner on its job's backend; True once the job has all its finished trials."""
    backend_for(runner.job)(runner, should_stop)
    return runner.finished() >= runner.job.search.trials


def run_job(job: Job, console: Console | None = None, progress: bool = True) -> JobResult:
    """Open (or resume) a job, run its trials on its backend, finish it: ``autocompress search``."""
    backend_for(job)  # a bad name fails before anything is created
    runner = JobRunner(job, console, progress)
    runner.open()
    run_trials(runner)
    return runner.finish()
