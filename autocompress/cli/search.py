"""``autocompress search``: run (or resume) a job and print its front."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from autocompress.cli.common import correlation_table, err, front_table, load_job, out, parse_budgets, parse_objectives


def search(
    job_file: Path | None = typer.Argument(None, help="job YAML; flags override its fields"),
    name: str | None = typer.Option(None, help="job name (resumes a job of this name)"),
    model: str | None = typer.Option(None, help="alias (smollm2-135m), checkpoint folder, .gguf file or hub id"),
    space: str | None = typer.Option(None, help="search space name in search_spaces/ or a YAML path"),
    target: list[str] = typer.Option([], help="hardware target (repeatable)"),
    objective: list[str] = typer.Option([], help="METRIC[:min|max] (repeatable)"),
    budget: list[str] = typer.Option([], help="'METRIC<=X' or 'METRIC>=X' (repeatable)"),
    sampler: str | None = typer.Option(None, help="nsga2, nsga3, tpe, gp or random"),
    trials: int | None = typer.Option(None, help="total finished trials wanted"),
    timeout: float | None = typer.Option(None, help="seconds for this invocation"),
    seed: int | None = typer.Option(None),
    storage: str | None = typer.Option(None, help="SQLAlchemy URL of the Optuna storage"),
    tracking: str | None = typer.Option(None, help="MLflow tracking URI, or 'none'"),
    workdir: str | None = typer.Option(None, help="where databases and artifacts go (default ./runs)"),
    no_export: bool = typer.Option(False, "--no-export", help="do not write Pareto checkpoints"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Run (or resume) a multi-objective compression search."""
    from autocompress.backends import run_job

    job = load_job(
        job_file,
        {
            "name": name,
            "model": model,
            "space": space,
            "targets": target,
            "objectives": parse_objectives(objective),
            "budgets": parse_budgets(budget),
            "search.sampler": sampler,
            "search.trials": trials,
            "search.timeout": timeout,
            "search.seed": seed,
            "storage": storage,
            "tracking": tracking,
            "workdir": workdir,
            "export": False if no_export else None,
        },
    )
    result = run_job(job, console=err, progress=not quiet)
    out.print(front_table(result))
    if job.evaluation.costly:
        out.print(correlation_table(result))
    if job.export.checkpoint:
        out.print(f"Pareto checkpoints: {job.job_dir / 'pareto'}")
    if job.tracking_uri:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        command = (
            f"{mlflow_bin if mlflow_bin.exists() else 'mlflow'} ui --backend-store-uri {job.tracking_uri} --port 5000"
        )
        out.print(f"Browse in MLflow (experiment '{job.name}', then open http://127.0.0.1:5000):")
        out.print(command, soft_wrap=True, highlight=False, markup=False)
