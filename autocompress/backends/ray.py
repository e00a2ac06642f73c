"""The ``ray`` backend: each trial is a Ray task with its own CPU/GPU resources, on any node.

The driver (this runner) reserves trials from the job's persistent Optuna study exactly as the
local backend does (same sampler, same lock, same exact count) and beats for them while they are
in flight; a task re-opens the study on its node, scores its trial and tells the study. A task
whose worker process dies is re-run by Ray (``max_retries``) on the same trial; one that still
fails is recorded as FAIL with the reason. ``ray.address`` joins an existing cluster.

Why not Ray Tune's ``OptunaSearch``: it asks and tells the study itself, which would bypass the
per-job reservation (exactly ``trials`` trials across workers), the recipe/metrics attributes
and the budgets-as-constraints that every trial here carries.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, Callable

from autocompress.backends import register_backend
from autocompress.errors import ConfigError

if TYPE_CHECKING:
    from autocompress.search.runner import JobRunner

_RUNNERS: dict[str, Any] = {}  # per Ray worker process: the job's opened runner (model loaded once)
_FORWARDED_ENV = ("AUTOCOMPRESS_PLUGINS", "AUTOCOMPRESS_CACHE", "PYTHONPATH", "HF_HUB_OFFLINE")


def _score(job_data: dict[str, Any], trial_id: int) -> str:
    """Inside a Ray task: score one reserved trial of the job; return its final state."""
    import optuna
    import ray

    from autocompress.search.job import Job
    from autocompress.search.runner import JobRunner

    job = Job.model_validate(job_data)
    key = f"{job.name}@{job.storage_url}"
    if key not in _RUNNERS:
        runner = JobRunner(job, progress=False)
        runner.open()
        _RUNNERS[key] = runner
    runner = _RUNNERS[key]
    runner.study = optuna.load_study(study_name=job.name, storage=runner.storage)  # sees trials asked elsewhere
    trial = optuna.Trial(runner.study, trial_id)  # its parameters were sampled by the driver
    trial.set_user_attr("ray_node", ray.get_runtime_context().get_node_id())
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
    ray.init(address=address, runtime_env={"env_vars": env} if env else None, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    return True


@register_backend("ray")
def run_ray(runner: "JobRunner", should_stop: Callable[[], bool]) -> None:
    import optuna
    import ray

    from autocompress.search.runner import Heartbeat

    job, settings = runner.job, runner.job.ray
    owned = _connect(settings.address)
    task = ray.remote(_score).options(num_cpus=settings.cpus_per_trial, num_gpus=settings.gpus_per_trial,
                                      max_retries=settings.max_retries, retry_exceptions=False)
    job_data = job.model_dump(mode="json")
    pending: dict[Any, tuple[optuna.Trial, Heartbeat]] = {}
    try:
        while not should_stop() and time.monotonic() < runner.deadline:
            done = False
            if len(pending) < settings.concurrency:
                trial, done = runner.reserve()
                if trial is not None:
                    runner.space.sample(trial, job.model, job.search.seed, job.calibration)  # the driver's sampler
                    beat = Heartbeat(runner.storage, trial._trial_id, job.search.heartbeat_seconds).__enter__()
                    pending[task.remote(job_data, trial._trial_id)] = (trial, beat)
                    continue
            if done and not pending:
                break
            if not pending:
                time.sleep(job.search.heartbeat_seconds)
                continue
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=job.search.heartbeat_seconds)
            for ref in ready:
                trial, beat = pending.pop(ref)
                beat.__exit__(None, None, None)
                try:
                    ray.get(ref)
                except Exception as exc:  # retries exhausted: the trial failed, with the reason
                    trial.set_user_attr("error", f"ray task failed: {type(exc).__name__}: {exc}"[:5000])
                    runner.study.tell(trial, state=optuna.trial.TrialState.FAIL)
    finally:
        for ref, (_, beat) in pending.items():  # stopping: the study re-queues them once they go stale
            ray.cancel(ref, force=True)
            beat.__exit__(None, None, None)
        if owned:
            ray.shutdown()
