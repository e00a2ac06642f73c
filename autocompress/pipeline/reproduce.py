"""Re-create a model from its recipe, re-evaluate it, and compare with what was recorded."""

from __future__ import annotations

import math
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import AutocompressError, ConfigError
from autocompress.evaluators import default_metrics, known_metrics
from autocompress.export.checkpoint import read_record, write_artifact
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import list_targets, load_target
from autocompress.metrics import is_cost_metric, split_metric_name
from autocompress.pipeline.session import apply_recipe, evaluate_model, open_session
from autocompress.recipe import Recipe

REL_TOL = 1e-4
ABS_TOL = 1e-6


@dataclass
class Provenance:
    """A recipe and, when known, the metrics and weights hash recorded for it."""

    recipe: Recipe
    metrics: dict[str, float] = field(default_factory=dict)
    weights_sha256: str | None = None
    workload: dict[str, Any] = field(default_factory=dict)


@dataclass
class Outcome:
    metrics: dict[str, float]
    record: dict[str, Any]
    mismatches: list[str]


def from_recipe_file(path: Path) -> Provenance:
    recipe = Recipe.from_file(path)
    record = read_record(path.parent) or {}
    return Provenance(recipe, record.get("metrics", {}), record.get("weights_sha256"), record.get("workload", {}))


def from_mlflow_run(run_id: str, tracking_uri: str) -> Provenance:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri)
    try:
        run = client.get_run(run_id)
        with tempfile.TemporaryDirectory() as tmp:
            recipe = Recipe.from_file(Path(client.download_artifacts(run_id, "recipe.yaml", tmp)))
            parent = run.data.tags.get("mlflow.parentRunId")
            job = yaml.safe_load(Path(client.download_artifacts(parent, "job.yaml", tmp)).read_text()) if parent else {}
    except MlflowException:
        raise ConfigError("run", f"{run_id!r} is neither a recipe file nor an MLflow run in {tracking_uri}") from None
    recorded = {k: v for k, v in run.data.metrics.items() if is_cost_metric(k) or k in known_metrics()}
    return Provenance(recipe, recorded, None, (job or {}).get("workload", {}))


def reproduce(provenance: Provenance, out_dir: Path, targets: list[str] | None = None) -> Outcome:
    """Apply the recipe, evaluate the recorded metrics (or the defaults), write the artifact."""
    recipe = provenance.recipe
    wanted = list(provenance.metrics) or default_metrics()  # the evaluator measures them all together
    target_names = sorted({t for t, _ in map(split_metric_name, wanted) if t} | set(targets or []))
    if not provenance.metrics and not targets:
        target_names = list_targets()
    loaded_targets = [load_target(t, "targets") for t in target_names]
    workload = Workload(**provenance.workload)
    session = open_session(recipe.model, recipe.calibration, recipe.seed)
    model = apply_recipe(session, recipe)
    metrics = evaluate_model(model, session, wanted, loaded_targets, workload)
    record = write_artifact(
        model, session.base.tokenizer, recipe, metrics, out_dir, extra={"workload": workload.__dict__}
    )
    return Outcome(metrics, record, compare(provenance, metrics, record["weights_sha256"]))


def compare(provenance: Provenance, metrics: dict[str, float], weights_sha256: str) -> list[str]:
    """Human-readable differences between recorded and re-measured values."""
    problems = []
    if provenance.weights_sha256 and provenance.weights_sha256 != weights_sha256:
        problems.append(f"weights hash {weights_sha256[:12]} != recorded {provenance.weights_sha256[:12]}")
    for name, recorded in sorted(provenance.metrics.items()):
        got = metrics.get(name)
        if got is None:
            problems.append(f"{name}: not re-measured")
        elif not math.isclose(got, recorded, rel_tol=REL_TOL, abs_tol=ABS_TOL):
            problems.append(f"{name}: {got:.6g} != recorded {recorded:.6g}")
    return problems


def load_provenance(ref: str, tracking_uri: str) -> Provenance:
    path = Path(ref)
    if path.is_file():
        return from_recipe_file(path)
    if path.is_dir() and (path / "recipe.yaml").is_file():
        return from_recipe_file(path / "recipe.yaml")
    if "/" in ref or ref.endswith((".yaml", ".yml")):
        raise ConfigError("recipe", f"file {ref!r} does not exist")
    if not ref.isalnum():
        raise AutocompressError(f"run: {ref!r} is neither a recipe file nor an MLflow run id")
    return from_mlflow_run(ref, tracking_uri)
