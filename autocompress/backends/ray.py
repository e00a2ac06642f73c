"""The ``ray`` backend: Ray Tune runs the trials, each a Tune trial with its own CPU/GPU resources.

Tune's search algorithm here is ``StudySearcher`` (:func:`study_searcher`), an Optuna searcher over the job's persistent
study: it reserves trials exactly as the local backend does (same sampler, same lock, same exact
count across workers), samples their recipes on the driver and beats for them while they are in
flight. The trainable re-opens the study on its node, scores its trial and tells the study. A trial
whose Ray worker dies is re-run by Tune (``FailureConfig(max_failures=ray.max_retries)``) on the same
Optuna trial; one that still fails is recorded as FAIL with the reason. ``ray.address`` joins an
existing cluster.

Why not Tune's stock ``OptunaSearch``: it asks and tells its own study, which would bypass the
per-job reservation, the recipe/metrics attributes and the budgets-as-constraints that every trial
here carries. The study stays the source of truth, so Tune keeps no state of its own worth restoring:
a stopped job resumes from the study, as with the local backend.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from autocompress.backends.base import register_backend
from autocompress.errors import ConfigError
from autocompress.search.attrs import TrialAttrs, write
from autocompress.search.heartbeat import Heartbeat
from autocompress.search.job import Job
from autocompress.search.runner import JobRunner

_RUNNERS: dict[str, Any] = {}  # per Ray worker process: the job's opened runner (model loaded once)
_FORWARDED_ENV = ("AUTOCOMPRESS_PLUGINS", "AUTOCOMPRESS_CACHE", "PYTHONPATH", "HF_HUB_OFFLINE")


def _score(job_data: dict[str, Any], trial_id: int) -> str:
    """Inside a Ray task: score one reserved trial of the job; return its final state."""
    import optuna
    import ray

    job = Job.model_validate(job_data)
    key = f"{job.name}@{job.storage_url}"
    if key not in _RUNNERS:
        runner = JobRunner(job, progress=False)
        runner.open()
        _RUNNERS[key] = runner
    runner = _RUNNERS[key]
    runner.study = optuna.load_study(study_name=job.name, storage=runner.storage)  # sees trials asked elsewhere
    trial = optuna.Trial(runner.study, trial_id)  # its parameters were sampled by the driver
    write(trial, TrialAttrs(ray_node=ray.get_runtime_context().get_node_id()))
    return runner.run_trial(trial, beat=False).state.name  # the driver beats for it


def _connect(address: str | None) -> bool:
    """ray.init once; True if this call started the connection (and should end it)."""
    try:
        import ray
    except ImportError:
        raise ConfigError("backend", "ray is not installed (pip install 'autocompress[ray]')") from None
    if ray.is_initialized():
        return False
    env = {k: os.environ[k] for k in _FORWARDED_ENV if k in os.environ}
    ray.init(
        address=address,
        runtime_env={"env_vars": env} if env else None,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    return True


def _trainable(config: dict[str, Any], job_data: dict[str, Any]) -> None:
    """A Tune function trainable: score the reserved Optuna trial named in ``config``."""
    from ray import tune

    tune.report({"state": _score(job_data, config["optuna_trial_id"])})


def study_searcher(runner: JobRunner) -> Any:
    """The Tune searcher over the job's study (defined here: Tune is imported only when the backend runs)."""
    from ray.tune.search import Searcher

    class StudySearcher(Searcher):
        """Suggests the job's next reserved Optuna trial; FINISHED once the study has all its trials."""

        def __init__(self) -> None:
            super().__init__(metric=None, mode=None)
            self.in_flight: dict[str, tuple[Any, Any]] = {}  # Tune trial id -> (Optuna trial, heartbeat)

        def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
            job = runner.job
            trial, done = runner.reserve()
            if trial is None:
                return Searcher.FINISHED if done and not self.in_flight else None
            runner.space.sample(trial, job.model, job.search.seed, job.calibration)  # the driver's sampler
            optuna_id = runner.trial_id(trial)
            beat = Heartbeat(runner.storage, optuna_id, job.search.heartbeat_seconds).__enter__()
            self.in_flight[trial_id] = (trial, beat)
            return {"optuna_trial_id": optuna_id}

        def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
            import optuna

            trial, beat = self.in_flight.pop(trial_id)
            beat.__exit__(None, None, None)
            if error:  # Tune's retries are exhausted: the trial failed, with the reason
                write(trial, TrialAttrs(error="ray task failed after its retries (see the Tune log)"))
                runner.study.tell(trial, state=optuna.trial.TrialState.FAIL)

        def release(self) -> None:
            """Stop beating for trials still in flight; the study re-queues them once they go stale."""
            for _, beat in self.in_flight.values():
                beat.__exit__(None, None, None)
            self.in_flight.clear()

        def save(self, checkpoint_path: str) -> None:  # the Optuna study is the state
            pass

        def restore(self, checkpoint_path: str) -> None:
            pass

        def __reduce__(self):  # Tune pickles its config for restores we never use
            return (object, ())

    return StudySearcher()


@register_backend("ray")
def run_ray(runner: JobRunner, should_stop: Callable[[], bool]) -> None:
    import ray
    from ray import tune

    job, settings = runner.job, runner.job.ray
    owned = _connect(settings.address)
    searcher = study_searcher(runner)

    class Cancelled(tune.Stopper):
        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return should_stop()

    remaining = runner.deadline - time.monotonic()
    trainable = tune.with_resources(
        tune.with_parameters(_trainable, job_data=job.model_dump(mode="json")),
        {"cpu": settings.cpus_per_trial, "gpu": settings.gpus_per_trial},
    )
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            num_samples=-1,
            max_concurrent_trials=settings.concurrency,
            reuse_actors=True,  # the model stays loaded in a worker across trials
            time_budget_s=remaining if remaining != float("inf") else None,
        ),
        run_config=tune.RunConfig(
            name=f"{job.name}-{int(time.time())}",
            storage_path=str(job.workdir_path / "ray"),
            failure_config=tune.FailureConfig(max_failures=settings.max_retries),
            stop=Cancelled(),
            verbose=0,
        ),
    )
    try:
        tuner.fit()
    finally:
        searcher.release()
        if owned:
            ray.shutdown()
