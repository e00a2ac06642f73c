"""The ``autocompress`` command line: one module per command (group), registered here.

``main`` is the console script's entry point; process-wide settings (warning filters, Optuna's and
transformers' verbosity) are made there, at start-up, never when a module is imported.
"""

from __future__ import annotations

import sys

import typer

from autocompress.cli import deploy, evaluate, hardware, reproduce, results, service
from autocompress.cli import search as search_cmd
from autocompress.cli.common import err
from autocompress.errors import AutocompressError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Find the best way to compress a small language model for an edge device.",
)
pipeline_app = typer.Typer(no_args_is_help=True, help="Run declarative recipes from pipelines/.")
app.add_typer(pipeline_app, name="pipeline")
app.add_typer(hardware.app, name="hardware")
app.add_typer(deploy.app, name="deploy")
app.command("export")(deploy.export_cmd)
app.command()(search_cmd.search)
app.command()(results.pareto)
app.command()(results.report)
app.command()(reproduce.reproduce)
app.command()(evaluate.evaluate)
pipeline_app.command("run")(reproduce.pipeline_run)
app.command()(service.serve)
app.command()(service.worker)


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
