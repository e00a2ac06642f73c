"""MLflow I/O and nothing else: one experiment per job, a parent run per job, a child run per trial.

Only ``mlflow.MlflowClient`` is used (no fluent, process-global active run), so several trackers
and worker threads can coexist. ``NullTracker`` is the drop-in for users who disable tracking.
Files (the front's charts, a report) are logged as they are given: nothing here draws them.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Protocol

import yaml

from autocompress.recipe import Recipe

ROLE, TRIAL, STATE, FEASIBLE, PARETO, ERROR = (
    f"autocompress.{k}" for k in ("role", "trial", "state", "feasible", "pareto", "error")
)
PARENT = "mlflow.parentRunId"
FRONT_FILES = ("pareto.json", "pareto.png", "pareto.html")  # what log_front logs of the folder it is given
MAX_ERROR_CHARS = 5000
_TERMINAL = {"COMPLETE": "FINISHED", "PRUNED": "FINISHED", "FAIL": "FAILED"}


class Tracker(Protocol):
    """What the search runner needs from experiment tracking."""

    enabled: bool  # False: every call is a no-op (files for it need not be written)

    def start_job(self, job_config: dict) -> str: ...
    def job_run_id(self) -> str: ...
    def start_trial(self, trial_number: int, recipe: Recipe) -> str: ...
    def log_trial(
        self,
        run_id: str,
        metrics: dict[str, float],
        state: str,
        feasible: bool,
        error: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None: ...
    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None: ...
    def trial_runs(self) -> dict[int, str]: ...
    def running_trials(self) -> dict[int, str]: ...
    def close_interrupted(self, live_trial_numbers: set[int]) -> list[int]: ...
    def mark_pareto(self, pareto_trials: set[int], tag: str = ...) -> None: ...
    def log_report(self, folder: str) -> None: ...
    def log_front(self, folder: str) -> None: ...
    def log_model(self, run_id: str, model_dir: str, registered_name: str) -> str: ...
    def finish_job(self, status: str = "FINISHED") -> None: ...


def _bool(value: bool) -> str:
    return "true" if value else "false"


def json_safe(value: Any) -> Any:
    """Plain JSON/YAML data: non-finite floats become ``null``, unknown objects ``str``."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [json_safe(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item"):  # numpy / torch scalars
        return json_safe(value.item())
    if value is None or isinstance(value, (str, int, float)):
        return value
    return str(value)  # paths, enums, ...


def _metric_rows(metrics: dict[str, float]) -> list[Any]:
    """MLflow metric entities for the finite values, stamped now."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    return [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(v)]


class MlflowTracker:
    """Tracks one job in one MLflow experiment (``experiment``), created on first use."""

    enabled = True

    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None):
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            try:
                # The kind makes MLflow 3's UI open the classic runs table rather than the GenAI views.
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location, tags={"mlflow.experimentKind": "custom_model_development"}
                )
            except MlflowException:  # created concurrently by another worker
                found = self.client.get_experiment_by_name(experiment)
                if found is None:
                    raise
        if found is not None:
            if found.lifecycle_stage == "deleted":
                self.client.restore_experiment(found.experiment_id)
            self.experiment_id = found.experiment_id
        self._job_run_id: str | None = None

    # ---- job -----------------------------------------------------------------------------
    def start_job(self, job_config: dict) -> str:
        """Create the job's parent run, or reuse it on resume; (re)write ``job.yaml``."""
        existing = self._search(f"tags.`{ROLE}` = 'job'")
        if existing:
            run = min(existing, key=lambda r: r.info.start_time or 0)
            run_id = run.info.run_id
            if run.info.status != "RUNNING":
                self.client.update_run(run_id, status="RUNNING")
        else:
            run_id = self.client.create_run(self.experiment_id, tags={ROLE: "job"}, run_name="job").info.run_id
        self.client.log_text(run_id, yaml.safe_dump(json_safe(job_config), sort_keys=False), "job.yaml")
        self._job_run_id = run_id
        return run_id

    def job_run_id(self) -> str:
        if self._job_run_id is None:
            raise RuntimeError("start_job() has not been called")
        return self._job_run_id

    def finish_job(self, status: str = "FINISHED") -> None:
        """Terminate the job run (``FINISHED``, ``FAILED`` or ``KILLED``); a resume reopens it."""
        self.client.set_terminated(self.job_run_id(), status)

    # ---- trials --------------------------------------------------------------------------
    def start_trial(self, trial_number: int, recipe: Recipe) -> str:
        """A child run ``trial-<n>`` with the recipe as params and ``recipe.yaml``."""
        from mlflow.entities import Param

        tags = {
            PARENT: self.job_run_id(),
            ROLE: "trial",
            TRIAL: str(trial_number),
            STATE: "RUNNING",
            FEASIBLE: "false",
            PARETO: "false",
        }
        run_id = self.client.create_run(self.experiment_id, tags=tags, run_name=f"trial-{trial_number}").info.run_id
        params = [Param(k, v[:6000]) for k, v in recipe.flatten().items()]
        for i in range(0, len(params), 100):  # MLflow's per-batch limit
            self.client.log_batch(run_id, params=params[i : i + 100])
        self.client.log_text(run_id, recipe.to_yaml(), "recipe.yaml")
        return run_id

    def log_trial(
        self,
        run_id: str,
        metrics: dict[str, float],
        state: str,
        feasible: bool,
        error: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None:
        """Log finite metrics and the outcome tags, then terminate the run."""
        from mlflow.entities import RunTag

        if state not in _TERMINAL:
            raise ValueError(f"state must be one of {sorted(_TERMINAL)}, got {state!r}")
        rows = _metric_rows(metrics)
        tags = {STATE: state, FEASIBLE: _bool(feasible), **(extra_tags or {})}
        if error:
            tags[ERROR] = error[:MAX_ERROR_CHARS]
        tag_rows = [RunTag(k, str(v)) for k, v in tags.items()]
        for i in range(0, max(len(rows), 1), 1000):
            self.client.log_batch(run_id, metrics=rows[i : i + 1000], tags=tag_rows if i == 0 else [])
        self.client.set_terminated(run_id, _TERMINAL[state])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        """Add finite metrics to an existing run, finished or not (e.g. costly metrics measured later)."""
        rows = _metric_rows(metrics)
        for i in range(0, len(rows), 1000):
            self.client.log_batch(run_id, metrics=rows[i : i + 1000])

    def trial_runs(self) -> dict[int, str]:
        """Trial number -> run id (the newest run where a number has several)."""
        return {n: run.info.run_id for n, run in self._trials().items()}

    def running_trials(self) -> dict[int, str]:
        """Trial number -> run id of the trial runs that have not been terminated."""
        return {n: run.info.run_id for n, run in self._trials().items() if run.info.status == "RUNNING"}

    def close_interrupted(self, live_trial_numbers: set[int]) -> list[int]:
        """Mark runs left RUNNING by a killed process as ``INTERRUPTED`` / ``KILLED``."""
        closed = []
        for n, run in sorted(self._trials().items()):
            running = run.info.status == "RUNNING" or run.data.tags.get(STATE) == "RUNNING"
            if running and n not in live_trial_numbers:
                self.client.set_tag(run.info.run_id, STATE, "INTERRUPTED")
                self.client.set_terminated(run.info.run_id, "KILLED")
                closed.append(n)
        return closed

    def mark_pareto(self, pareto_trials: set[int], tag: str = PARETO) -> None:
        """Set ``tag`` (default ``autocompress.pareto``) on every trial run, writing only the tags that change."""
        for n, run in self._trials().items():
            want = _bool(n in pareto_trials)
            if run.data.tags.get(tag) != want:
                self.client.set_tag(run.info.run_id, tag, want)

    def log_report(self, folder: str) -> None:
        """A report folder's files under ``report/`` of the job run."""
        self.client.log_artifacts(self.job_run_id(), folder, "report")

    # ---- artifacts -----------------------------------------------------------------------
    def log_front(self, folder: str) -> None:
        """``pareto.json``, ``pareto.png`` and ``pareto.html`` from ``folder`` on the job run."""
        run_id = self.job_run_id()
        for name in FRONT_FILES:
            self.client.log_artifact(run_id, str(Path(folder) / name))

    def log_model(self, run_id: str, model_dir: str, registered_name: str) -> str:
        """Log ``model_dir`` under ``model/`` of the run and register it; returns the version."""
        from mlflow.exceptions import MlflowException

        if not Path(model_dir).is_dir():
            raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
        self.client.log_artifacts(run_id, model_dir, "model")
        try:
            self.client.create_registered_model(registered_name)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
        run = self.client.get_run(run_id)
        source = f"{run.info.artifact_uri.rstrip('/')}/model"
        tags = {TRIAL: run.data.tags[TRIAL]} if TRIAL in run.data.tags else {}
        version = self.client.create_model_version(registered_name, source, run_id=run_id, tags=tags)
        return str(version.version)

    # ---- helpers -------------------------------------------------------------------------
    def _search(self, filter_string: str) -> list[Any]:
        runs: list[Any] = []
        token = None
        while True:
            page = self.client.search_runs([self.experiment_id], filter_string, max_results=1000, page_token=token)
            runs.extend(page)
            token = page.token
            if not token:
                return runs

    def _trials(self) -> dict[int, Any]:
        found: dict[int, Any] = {}
        for run in sorted(self._search(f"tags.`{ROLE}` = 'trial'"), key=lambda r: r.info.start_time or 0):
            found[int(run.data.tags[TRIAL])] = run
        return found


class NullTracker:
    """Tracking switched off: every method is a no-op with a harmless return value."""

    enabled = False

    def start_job(self, job_config: dict) -> str:
        return ""

    def job_run_id(self) -> str:
        return ""

    def finish_job(self, status: str = "FINISHED") -> None:
        pass

    def start_trial(self, trial_number: int, recipe: Recipe) -> str:
        return ""

    def log_trial(
        self,
        run_id: str,
        metrics: dict[str, float],
        state: str,
        feasible: bool,
        error: str | None = None,
        extra_tags: dict[str, str] | None = None,
    ) -> None:
        pass

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        pass

    def trial_runs(self) -> dict[int, str]:
        return {}

    def running_trials(self) -> dict[int, str]:
        return {}

    def close_interrupted(self, live_trial_numbers: set[int]) -> list[int]:
        return []

    def log_report(self, folder: str) -> None:
        return None

    def mark_pareto(self, pareto_trials: set[int], tag: str = PARETO) -> None:
        pass

    def log_front(self, folder: str) -> None:
        pass

    def log_model(self, run_id: str, model_dir: str, registered_name: str) -> str:
        return ""
