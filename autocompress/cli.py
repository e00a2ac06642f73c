"""The ``autocompress`` command line."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Optional

import typer
import yaml
from rich.console import Console
from rich.table import Table

from autocompress.cli_deploy import app as deploy_app
from autocompress.cli_deploy import export_cmd
from autocompress.cli_hardware import app as hardware_app
from autocompress.errors import AutocompressError, ConfigError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Find the best way to compress a small language model for an edge device.")
pipeline_app = typer.Typer(no_args_is_help=True, help="Run declarative recipes from pipelines/.")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(hardware_app, name="hardware")
app.add_typer(deploy_app, name="deploy")
app.command("export")(export_cmd)

out = Console()
err = Console(stderr=True)
_BUDGET = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def _load_job(job_file: Optional[Path], overrides: dict[str, Any]) -> "Job":
    from autocompress.search.job import Job

    data: dict[str, Any] = {}
    if job_file is not None:
        if not job_file.is_file():
            raise ConfigError("job", f"file {str(job_file)!r} does not exist")
        try:
            data = yaml.safe_load(job_file.read_text()) or {}
        except yaml.YAMLError:
            raise ConfigError("job", f"{job_file} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError("job", f"{job_file} must hold a YAML mapping")
    for key, value in overrides.items():
        if value in (None, [], {}):
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(section, "must be a mapping")
            data[section][sub] = value
        else:
            data[key] = value
    return Job.from_dict(data)


def _parse_objectives(items: list[str]) -> list[dict[str, str]]:
    parsed = []
    for item in items:
        metric, _, direction = item.partition(":")
        direction = {"": "minimize", "min": "minimize", "max": "maximize"}.get(direction, direction)
        parsed.append({"metric": metric, "direction": direction})
    return parsed


def _parse_budgets(items: list[str]) -> dict[str, dict[str, float]]:
    budgets: dict[str, dict[str, float]] = {}
    for item in items:
        match = _BUDGET.match(item)
        if not match:
            raise ConfigError("--budget", f"{item!r} must look like 'kl<=0.3' or 'top1_agreement>=0.9'")
        metric, op, value = match.groups()
        budgets.setdefault(metric, {})["max" if op == "<=" else "min"] = float(value)
    return budgets


def _front_table(result: "JobResult") -> Table:
    from autocompress.recipe import Recipe

    job = result.job
    names = list(dict.fromkeys([o.metric for o in job.objectives] + list(job.budgets)))
    table = Table(title=f"Pareto front of {job.name} ({len(result.front)} of {len(result.records)} trials)")
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column(name.replace(".", ".\n", 1), justify="right")
    table.add_column("recipe")
    for record in sorted(result.front, key=lambda r: r.metrics.get(names[0], math.inf)):
        table.add_row(str(record.number), *[f"{record.metrics.get(n, math.nan):.4g}" for n in names],
                      Recipe.parse_obj(record.recipe).summary())
    return table


def _correlation_table(result: "JobResult") -> Table:
    proxy = result.job.evaluation.proxy
    table = Table(title=f"Can {proxy} stand in for the costly metrics? (Spearman rank correlation over trials)")
    for column in ("metric", f"rho({proxy}, metric)", "trials"):
        table.add_column(column, justify="right")
    for metric, row in result.proxy_correlation.items():
        table.add_row(metric, f"{row['rho']:.3f}", str(row["n"]))
    return table


@app.command()
def search(
    job_file: Optional[Path] = typer.Argument(None, help="job YAML; flags override its fields"),
    name: Optional[str] = typer.Option(None, help="job name (resumes a job of this name)"),
    model: Optional[str] = typer.Option(None, help="alias (smollm2-135m), checkpoint folder, .gguf file or hub id"),
    space: Optional[str] = typer.Option(None, help="search space name in search_spaces/ or a YAML path"),
    target: list[str] = typer.Option([], help="hardware target (repeatable)"),
    objective: list[str] = typer.Option([], help="METRIC[:min|max] (repeatable)"),
    budget: list[str] = typer.Option([], help="'METRIC<=X' or 'METRIC>=X' (repeatable)"),
    sampler: Optional[str] = typer.Option(None, help="nsga2, nsga3, tpe, gp or random"),
    trials: Optional[int] = typer.Option(None, help="total finished trials wanted"),
    timeout: Optional[float] = typer.Option(None, help="seconds for this invocation"),
    seed: Optional[int] = typer.Option(None),
    storage: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the Optuna storage"),
    tracking: Optional[str] = typer.Option(None, help="MLflow tracking URI, or 'none'"),
    workdir: Optional[str] = typer.Option(None, help="where databases and artifacts go (default ./runs)"),
    no_export: bool = typer.Option(False, "--no-export", help="do not write Pareto checkpoints"),
    quiet: bool = typer.Option(False, help="no progress bar"),
) -> None:
    """Run (or resume) a multi-objective compression search."""
    from autocompress.backends import run_job

    job = _load_job(job_file, {
        "name": name, "model": model, "space": space, "targets": target, "objectives": _parse_objectives(objective),
        "budgets": _parse_budgets(budget), "search.sampler": sampler, "search.trials": trials,
        "search.timeout": timeout, "search.seed": seed, "storage": storage, "tracking": tracking,
        "workdir": workdir, "export": False if no_export else None})
    result = run_job(job, console=err, progress=not quiet)
    out.print(_front_table(result))
    if job.evaluation.costly:
        out.print(_correlation_table(result))
    if job.export.checkpoint:
        out.print(f"Pareto checkpoints: {job.job_dir / 'pareto'}")
    if job.tracking_uri:
        mlflow_bin = Path(sys.executable).parent / "mlflow"
        command = f"{mlflow_bin if mlflow_bin.exists() else 'mlflow'} ui --backend-store-uri {job.tracking_uri} --port 5000"
        out.print(f"Browse in MLflow (experiment '{job.name}', then open http://127.0.0.1:5000):")
        out.print(command, soft_wrap=True, highlight=False, markup=False)


@app.command()
def pareto(
    job_ref: str = typer.Argument(..., help="job YAML, or a job name with --workdir/--storage"),
    workdir: str = typer.Option("./runs"),
    storage: Optional[str] = typer.Option(None),
    as_json: bool = typer.Option(False, "--json", help="print the front as JSON"),
) -> None:
    """Print the Pareto front of a job."""
    from autocompress.search.finish import load_result

    job_path = Path(job_ref)
    if job_path.is_file():
        job = _load_job(job_path, {"storage": storage})
    else:
        job = _job_from_storage(job_ref, workdir, storage)
    result = load_result(job)
    if as_json:
        print(json.dumps([r.row() for r in result.front], indent=2, default=str))
    else:
        out.print(_front_table(result))


@app.command()
def report(
    job_ref: str = typer.Argument(..., help="job YAML, or a job name with --workdir/--storage"),
    out_dir: Path = typer.Option(..., "--out", help="folder for the HTML/PNG charts and summary.json"),
    workdir: str = typer.Option("./runs"),
    storage: Optional[str] = typer.Option(None),
) -> None:
    """Fronts per target, hypervolume over trials, parameter importances and the time split of a job."""
    import optuna

    from autocompress.search.report import write_report
    from autocompress.search.storage import open_storage

    job = _load_job(Path(job_ref), {"storage": storage}) if Path(job_ref).is_file() else \
        _job_from_storage(job_ref, workdir, storage)
    study = optuna.load_study(study_name=job.name, storage=open_storage(job.storage_url, 10))
    summary = write_report(study, job, out_dir)
    for target, front in summary["fronts"].items():
        out.print(f"{target}: front of {len(front)} trials {front}")
    out.print(f"hypervolume {summary['hypervolume']:.4g}; trial time outside evaluation "
              f"{100 * summary['time']['overhead_share']:.0f}%")
    out.print(f"wrote {out_dir}")


def _job_from_storage(name: str, workdir: str, storage: Optional[str]) -> "Job":
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
    return Job.from_dict({"name": name, "model": fp["model"], "targets": fp["targets"], "objectives": fp["objectives"],
                          "search": {"seed": fp["seed"]},
                          "budgets": fp["budgets"], "workdir": workdir, "storage": storage})


@app.command()
def reproduce(
    ref: str = typer.Argument(..., help="recipe.yaml (metrics.json beside it is the record) or an MLflow run id"),
    out_dir: Path = typer.Option(..., "--out", help="where to write the re-created checkpoint"),
    check: bool = typer.Option(False, help="exit 1 unless metrics (and weights hash) match the record"),
    tracking_uri: str = typer.Option("sqlite:///runs/mlflow.db", help="MLflow tracking URI for run ids"),
) -> None:
    """Re-create a compressed model from its recipe and re-evaluate it."""
    from autocompress.pipeline.reproduce import load_provenance
    from autocompress.pipeline.reproduce import reproduce as run_reproduce

    provenance = load_provenance(ref, tracking_uri)
    if check and not provenance.metrics:  # refuse before any work or any file is written
        raise ConfigError("--check", f"nothing recorded to compare with for {ref!r} (no metrics.json beside it)")
    outcome = run_reproduce(provenance, out_dir)
    _print_metrics(outcome.metrics, provenance.metrics)
    out.print(f"checkpoint: {out_dir}  weights sha256: {outcome.record['weights_sha256'][:16]}")
    if check:
        if outcome.mismatches:
            for line in outcome.mismatches:
                err.print(f"[red]mismatch[/] {line}")
            raise typer.Exit(1)
        out.print("[green]check passed[/]: metrics match the record")


@app.command()
def evaluate(
    ref: str = typer.Argument(..., help="model (alias, folder, .gguf), recipe YAML, or exported checkpoint folder"),
    metric: list[str] = typer.Option([], help="kl, perplexity, top1_agreement, lm_eval:<task> (repeatable)"),
    limit: Optional[int] = typer.Option(None, help="examples per lm-eval task (default 100)"),
    data: Optional[str] = typer.Option(None, help="folder of local task files (default $AUTOCOMPRESS_DATA)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object keyed by metric name"),
) -> None:
    """Score a model on accuracy metrics; results are cached by weights hash."""
    from autocompress.pipeline.evaluate import evaluate_ref
    from autocompress.evaluators import EvalSettings
    if limit is not None and limit < 1:
        raise ConfigError("--limit", f"{limit} must be at least 1")
    if data is not None and not Path(data).expanduser().is_dir():
        raise ConfigError("--data", f"{data!r} is not a folder")
    settings = EvalSettings(**{k: v for k, v in {"limit": limit, "data": data}.items() if v is not None})
    metrics = evaluate_ref(ref, metric, settings)
    if as_json:
        print(json.dumps(metrics))
    else:
        _print_metrics(metrics, {})


@pipeline_app.command("run")
def pipeline_run(
    recipe_file: Path = typer.Argument(..., help="a recipe YAML, e.g. pipelines/int4-rtn.yaml"),
    out_dir: Path = typer.Option(..., "--out"),
    target: list[str] = typer.Option([], help="hardware target for cost metrics (default: all shipped)"),
) -> None:
    """Apply a recipe and write checkpoint, tokenizer, recipe.yaml and metrics.json."""
    from autocompress.pipeline.reproduce import Provenance
    from autocompress.pipeline.reproduce import reproduce as run_reproduce

    from autocompress.recipe import Recipe

    recipe = Recipe.from_file(recipe_file)
    outcome = run_reproduce(Provenance(recipe), out_dir, targets=target)
    _print_metrics(outcome.metrics, {})
    out.print(f"wrote {out_dir}")


def _print_metrics(metrics: dict[str, float], recorded: dict[str, float]) -> None:
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    if recorded:
        table.add_column("recorded", justify="right")
    for name in sorted(metrics):
        row = [name, f"{metrics[name]:.6g}"]
        if recorded:
            row.append(f"{recorded[name]:.6g}" if name in recorded else "")
        table.add_row(*row)
    out.print(table)


def _server_settings(database: Optional[str], workdir: str, allow_remote_code: bool) -> "ServerSettings":
    from autocompress.service.policy import ServerSettings

    root = Path(workdir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return ServerSettings(workdir=root, database=database or f"sqlite:///{root / 'queue.db'}",
                          allow_remote_code=allow_remote_code)


def _open_queue(url: str, claim_timeout: float) -> "JobQueue":
    from autocompress.service.queue import JobQueue

    try:
        return JobQueue(url, claim_timeout)
    except Exception as exc:
        raise ConfigError("--database", f"cannot open {url!r}: {str(exc).splitlines()[0][:200]}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback needs AUTOCOMPRESS_TOKEN"),
    port: int = typer.Option(8000),
    database: Optional[str] = typer.Option(None, help="SQLAlchemy URL of the job queue (default sqlite in --workdir)"),
    workdir: str = typer.Option("./runs", help="every job writes under this folder"),
    no_worker: bool = typer.Option(False, "--no-worker", help="do not run an embedded worker"),
    allow_remote_code: bool = typer.Option(False, help="accept jobs with trust_remote_code: true"),
    heartbeat: float = typer.Option(5.0, help="seconds between a worker's beats; 3 missed beats = dead"),
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) with one embedded worker."""
    import os

    import uvicorn

    from autocompress.service.app import create_app

    token = os.environ.get("AUTOCOMPRESS_TOKEN") or None
    if not _is_loopback(host) and token is None:
        raise ConfigError("--host", f"binding to {host!r} (not loopback) requires a token in AUTOCOMPRESS_TOKEN")
    settings = _server_settings(database, workdir, allow_remote_code)
    queue = _open_queue(settings.database, 3 * heartbeat)
    uvicorn.run(create_app(queue, settings, token, embedded_worker=not no_worker, worker_heartbeat=heartbeat),
                host=host, port=port, log_level="warning")


@app.command()
def worker(
    database: str = typer.Option(..., help="SQLAlchemy URL of the server's job queue"),
    workdir: str = typer.Option("./runs", help="the server's workdir (shared folder when on another machine)"),
    allow_remote_code: bool = typer.Option(False, help="run jobs with trust_remote_code: true"),
    heartbeat: float = typer.Option(5.0, help="seconds between beats; 3 missed beats = dead"),
    poll: float = typer.Option(2.0, help="seconds between looks for work when idle"),
    max_jobs: Optional[int] = typer.Option(None, help="exit after handling this many claims"),
) -> None:
    """Claim queued jobs and run their trials until stopped (SIGINT/SIGTERM end after the current trial)."""
    import signal
    import threading

    from autocompress.service.worker import Worker

    settings = _server_settings(database, workdir, allow_remote_code)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Worker(_open_queue(database, 3 * heartbeat), settings, heartbeat=heartbeat, poll=poll,
           console=err).run(stop, max_jobs)


def quiet_optuna() -> None:
    """Silence what Optuna says about the way the search drives it (called at start-up, never at import)."""
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed")  # we beat for ask/tell ourselves
    warnings.filterwarnings("ignore", message="Clip non-finite values")  # GP: an unevaluated trial's accuracy
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial: the progress bar shows them


def main() -> None:
    import transformers

    quiet_optuna()
    transformers.utils.logging.disable_progress_bar()  # rich shows our own progress
    transformers.utils.logging.set_verbosity_error()
    try:
        app()
    except AutocompressError as exc:
        err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
