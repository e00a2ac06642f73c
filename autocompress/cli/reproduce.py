"""``autocompress reproduce`` and ``autocompress pipeline run``: a model re-created from its recipe."""

from __future__ import annotations

from pathlib import Path

import typer

from autocompress.cli.common import err, out, print_metrics
from autocompress.errors import ConfigError


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
    print_metrics(outcome.metrics, provenance.metrics)
    out.print(f"checkpoint: {out_dir}  weights sha256: {outcome.record['weights_sha256'][:16]}")
    if check:
        if outcome.mismatches:
            for line in outcome.mismatches:
                err.print(f"[red]mismatch[/] {line}")
            raise typer.Exit(1)
        out.print("[green]check passed[/]: metrics match the record")


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
    print_metrics(outcome.metrics, {})
    out.print(f"wrote {out_dir}")
