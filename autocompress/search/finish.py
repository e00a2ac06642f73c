"""The finish step of a job: the Pareto-optimal trials as deployable checkpoints, registered in MLflow."""

from __future__ import annotations

import shutil
from pathlib import Path

from autocompress.export.checkpoint import read_record, write_artifact
from autocompress.export.deploy import export_gguf, measure
from autocompress.export.packed import export_packed
from autocompress.pipeline import Session, apply_recipe
from autocompress.recipe import Recipe
from autocompress.search.front import TrialRecord
from autocompress.search.job import Job
from autocompress.tracking import Tracker


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
        write_artifact(model, session.base.tokenizer, recipe, record.metrics, dest,
                       extra={"job": job.name, "trial": record.number, "targets": job.targets,
                              "workload": job.workload.model_dump(), "run_id": record.run_id,
                              "tracking_uri": job.tracking_uri})
        if record.run_id:
            tracker.log_model(record.run_id, str(dest), job.name)
        _deployables(job, dest, session)
        written.append(str(dest))
    if pareto_dir.is_dir():
        for stale in pareto_dir.glob("trial-*"):
            if stale.name not in keep:
                shutil.rmtree(stale)
    return written
