"""``autocompress pareto`` and ``autocompress report``: a stored job's front and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from autocompress.cli.common import front_table, load_job, out
from autocompress.errors import ConfigError

if TYPE_CHECKING:
    from autocompress.search.job import Job


def pareto(
    job_ref: str = typer.Argument(..., help="job YAML, or a job name with --workdir/--storage"),
    workdir: str = typer.Option("./runs"),
    storage: str | None = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print the front as JSON"),
) -> None:
    """Print the Pareto front of a job."""
    from autocompress.search.finish import load_result

    job_path = Path(job_ref)
    if job_path.is_file():
        job = load_job(job_path, {"storage": storage})
    else:
        job = _job_from_storage(job_ref, workdir, storage)
    result = load_result(job)
    if as_json:
        print(json.dumps([r.row() for r in result.front], indent=2, default=str))
    else:
        out.print(front_table(result))


def report(
    job_ref: str = typer.Argument(..., help="job YAML, or a job name with --workdir/--storage"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the HTML/PNG charts and summary.json"),
    workdir: str = typer.Option("./runs"),
    storage: str | None = typer.Option(None),
) -> None:
    """Fronts per target, hypervolume over trials, parameter importances and the time split of a job."""
    import optuna

    from autocompress.search.report import write_report
    from autocompress.search.storage import open_storage

    job = (
        load_job(Path(job_ref), {"storage": storage})
        if Path(job_ref).is_file()
        else _job_from_storage(job_ref, workdir, storage)
    )
    study = optuna.load_study(study_name=job.name, storage=open_storage(job.storage_url, 10))
    summary = write_report(study, job, out_dir)
    for target, front in summary["fronts"].items():
        out.print(f"{target}: front of {len(front)} trials {front}")
    out.print(
        f"hypervolume {summary['hypervolume']:.4g}; trial time outside evaluation "
        f"{100 * summary['time']['overhead_share']:.0f}%"
    )
    out.print(f"wrote {out_dir}")


def _job_from_storage(name: str, workdir: str, storage: str | None) -> Job:
    """Rebuild a job's definition from what the study recorded."""
    import optuna

    from autocompress.search.attrs import job_fingerprint_of
    from autocompress.search.job import Job
    from autocompress.search.storage import open_storage

    probe = Job.model_construct(name=name, workdir=workdir, storage=storage)
    url = probe.storage_url
    try:
        study = optuna.load_study(study_name=name, storage=open_storage(url, 10))
    except KeyError:
        raise ConfigError("job", f"no job named {name!r} in {url}") from None
    fp = job_fingerprint_of(study)
    return Job.from_dict(
        {
            "name": name,
            "model": fp["model"],
            "targets": fp["targets"],
            "objectives": fp["objectives"],
            "search": {"seed": fp["seed"]},
            "budgets": fp["budgets"],
            "workdir": workdir,
            "storage": storage,
        }
    )
