"""``autocompress evaluate``: accuracy metrics of a model, a recipe or an exported checkpoint."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from autocompress.evaluators import EvalSettings, default_metrics
from autocompress.models.loading import load_model
from autocompress.pipeline.session import Session, apply_recipe, measure_accuracy, open_session
from autocompress.recipe import Recipe, TextSpec


def open_subject(ref: str, settings: EvalSettings) -> tuple[Session, nn.Module]:
    """The session (base model, text) and the model to score for ``ref``.

    A recipe file is applied to its base model; a checkpoint folder with a ``recipe.yaml`` (as
    autocompress writes them) is scored against the recipe's base model; any other model
    reference is its own base (so its KL is 0).
    """
    path = Path(ref).expanduser()
    if path.is_file() and path.suffix in (".yaml", ".yml"):
        recipe = Recipe.from_file(path)
        session = open_session(recipe.model, recipe.calibration, recipe.seed, settings)
        return session, apply_recipe(session, recipe)
    if path.is_dir() and (path / "recipe.yaml").is_file():
        recipe = Recipe.from_file(path / "recipe.yaml")
        session = open_session(recipe.model, recipe.calibration, recipe.seed, settings)
        return session, load_model(str(path)).model
    session = open_session(ref, TextSpec(), 0, settings)
    return session, session.base.model


def evaluate_ref(ref: str, metrics: list[str], settings: EvalSettings) -> dict[str, float]:
    """The requested metrics of ``ref``, in the order asked (cached results are reused)."""
    from autocompress.evaluators import evaluators_for

    metrics = list(dict.fromkeys(metrics or default_metrics()))
    for evaluator in evaluators_for(metrics, settings, "--metric"):  # bad input fails before any model loads
        evaluator.prepare()
    session, model = open_subject(ref, settings)
    values = measure_accuracy(model, session, metrics)
    return {m: values[m] for m in metrics}
