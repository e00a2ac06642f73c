"""``autocompress evaluate``: accuracy metrics of a model, a recipe or an exported checkpoint."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from autocompress.cli.common import print_metrics
from autocompress.errors import ConfigError


def evaluate(
    ref: str = typer.Argument(..., help="model (alias, folder, .gguf), recipe YAML, or exported checkpoint folder"),
    metric: list[str] = typer.Option([], help="kl, perplexity, top1_agreement, lm_eval:<task> (repeatable)"),
    limit: int | None = typer.Option(None, help="examples per lm-eval task (default 100)"),
    data: str | None = typer.Option(None, help="folder of local task files (default $AUTOCOMPRESS_DATA)"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object keyed by metric name"),
) -> None:
    """Score a model on accuracy metrics; results are cached by weights hash."""
    from autocompress.evaluators import EvalSettings
    from autocompress.pipeline.evaluate import evaluate_ref

    if limit is not None and limit < 1:
        raise ConfigError("--limit", f"{limit} must be at least 1")
    if data is not None and not Path(data).expanduser().is_dir():
        raise ConfigError("--data", f"{data!r} is not a folder")
    settings = EvalSettings(**{k: v for k, v in {"limit": limit, "data": data}.items() if v is not None})
    metrics = evaluate_ref(ref, metric, settings)
    if as_json:
        print(json.dumps(metrics))
    else:
        print_metrics(metrics, {})
