"""The finish step of a job, once its trials are done: costly metrics of the front, the front's files and
tags, the report, and the Pareto-optimal trials as deployable checkpoints registered in MLflow."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import optuna
from rich.console import Console

from autocompress.errors import ConfigError
from autocompress.export.checkpoint import read_record, write_artifact
from autocompress.export.deploy import export_gguf, measure
from autocompress.export.packed import export_packed
from autocompress.pipeline import Session, apply_recipe, measure_accuracy
from autocompress.recipe import Recipe
from autocompress.search.attrs import set_late_metrics
from autocompress.search.fidelity import proxy_correlation
from autocompress.search.front import TrialRecord, trial_records
from autocompress.search.job import Job
from autocompress.search.plots import write_front
from autocompress.search.report import write_report
from autocompress.search.storage import open_storage
from autocompress.tracking import Tracker


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


def finish_job(job: Job, study: optuna.Study, session: Session, tracker: Tracker, console: Console) -> JobResult:
    """The front: costly metrics, Pareto tags, front artifacts, the report, exported checkpoints. Once per job.
    The trial records are read once and handed to each part."""
    records = trial_records(study, job.objectives)
    if job.evaluation.costly:
        with console.status("measuring costly metrics of the Pareto-optimal trials..."):
            score_front(records, job, study, session, tracker)
        result = JobResult(job, records)
        job.job_dir.mkdir(parents=True, exist_ok=True)
        (job.job_dir / "proxy_correlation.json").write_text(json.dumps(result.proxy_correlation, indent=2))
        tracker.log_metrics(
            tracker.job_run_id(),
            {f"spearman.{job.evaluation.proxy}.{m}": c["rho"] for m, c in result.proxy_correlation.items()},
        )
    tracker.mark_pareto({r.number for r in records if r.pareto})
    if tracker.enabled:
        with tempfile.TemporaryDirectory() as tmp:
            tracker.log_front(
                str(write_front([r.row() for r in records], [(o.metric, o.direction) for o in job.objectives], tmp))
            )
    report = write_report(study, job, job.job_dir / "report", records)
    for target, front in report["fronts"].items():
        tracker.mark_pareto(set(front), tag=f"autocompress.pareto.{target}")
    tracker.log_report(str(job.job_dir / "report"))
    if job.export.checkpoint:
        with console.status("exporting Pareto-optimal checkpoints..."):
            export_front(job, session, records, tracker)
    tracker.finish_job()
    return JobResult(job, records)


def score_front(records: list[TrialRecord], job: Job, study: optuna.Study, session: Session, tracker: Tracker) -> None:
    """Costly metrics for every Pareto-optimal trial that lacks them, stored in the study, logged to the trial's
    MLflow run and added to its record (costly metrics are never objectives: the front stays as it is)."""
    costly = job.evaluation.costly
    for record in records:
        if record.pareto and not all(m in record.metrics for m in costly):
            model = apply_recipe(session, Recipe.parse_obj(record.recipe))
            late = measure_accuracy(model, session, costly)
            set_late_metrics(study, record.number, late)
            if record.run_id:
                tracker.log_metrics(record.run_id, late)
            record.metrics = record.metrics | late


def load_result(job: Job) -> JobResult:
    """The trials of a job as stored, without running anything."""
    storage = open_storage(job.storage_url, job.search.heartbeat_seconds)
    try:
        study = optuna.load_study(study_name=job.name, storage=storage)
    except KeyError:
        raise ConfigError("name", f"no job named {job.name!r} in {job.storage_url}") from None
    return JobResult(job, trial_records(study, job.objectives))


def _deployables(job: Job, artifact: Path, session: Session) -> None:
    """The job's deployable formats beside a fresh artifact, and (``measure``) llama.cpp's figures,
    which ``measure`` logs to the trial's run as ``host.llamacpp.*``."""
    writers = {"gguf": export_gguf, "packed": export_packed}
    for fmt in job.export.formats:
        writers[fmt](artifact)
    if job.export.measure:
        measure(artifact, tracking_uri=job.tracking_uri, blocks=session.ctx.evaluation)


def export_front(job: Job, session: Session, records: list[TrialRecord], tracker: Tracker) -> list[str]:
    """``<workdir>/<job>/pareto/trial-<N>/`` for each Pareto trial; stale ones are removed."""
    pareto_dir = job.job_dir / "pareto"
    written = []
    keep = set()
    for record in (r for r in records if r.pareto):
        recipe = Recipe.parse_obj(record.recipe)
        dest = pareto_dir / f"trial-{record.number}"
        keep.add(dest.name)
        existing = read_record(dest)
        if existing and existing.get("recipe_digest") == recipe.digest():
            continue  # exported (and registered) by an earlier run of this job
        model = apply_recipe(session, recipe)
        write_artifact(
            model,
            session.base.tokenizer,
            recipe,
            record.metrics,
            dest,
            extra={
                "job": job.name,
                "trial": record.number,
                "targets": job.targets,
                "workload": job.workload.model_dump(),
                "run_id": record.run_id,
                "tracking_uri": job.tracking_uri,
            },
        )
        if record.run_id:
            tracker.log_model(record.run_id, str(dest), job.name)
        _deployables(job, dest, session)
        written.append(str(dest))
    if pareto_dir.is_dir():
        for stale in pareto_dir.glob("trial-*"):
            if stale.name not in keep:
                shutil.rmtree(stale)
    return written
