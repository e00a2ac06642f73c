"""A session (a base model loaded once) and what it does with recipes: apply, predict cost, measure accuracy."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field

from torch import nn

from autocompress.cache import cache_root, text_digest, weights_digest
from autocompress.context import CompressionContext
from autocompress.data.text import load_text
from autocompress.evaluators import EvalSettings, evaluators_for
from autocompress.evaluators.results import evaluate_cached
from autocompress.hardware import cost_metrics
from autocompress.hardware.profile import ModelProfile, profile_model
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import HardwareTarget
from autocompress.metrics import is_cost_metric
from autocompress.models.loading import LoadedModel, load_model
from autocompress.recipe import Recipe, TextSpec
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.early_exit.policy import exit_policy


@dataclass
class Session:
    """A loaded base model with its shared context: built once, used by many recipes."""

    base: LoadedModel
    ctx: CompressionContext
    model_ref: str
    calibration: TextSpec
    seed: int
    evaluation: EvalSettings
    _base_profile: ModelProfile | None = field(default=None, repr=False)

    @property
    def base_profile(self) -> ModelProfile:
        """The base model's profile, measured once."""
        if self._base_profile is None:
            self._base_profile = profile_model(self.base.model)
        return self._base_profile


def open_session(
    model_ref: str,
    calibration: TextSpec,
    seed: int,
    evaluation: EvalSettings | None = None,
    trust_remote_code: bool = False,
) -> Session:
    base = load_model(model_ref, trust_remote_code=trust_remote_code)
    digest = weights_digest(base.model)
    text = load_text(calibration, base.tokenizer, base.model, digest, seed)
    ctx = CompressionContext(
        tokenizer=base.tokenizer,
        calibration=text.calibration,
        evaluation=text.evaluation,
        base_model=base.model,
        cache_dir=cache_root(),
        seed=seed,
        model_digest=digest,
        data_digest=text.digest,
    )
    return Session(base, ctx, model_ref, calibration, seed, evaluation or EvalSettings())


def check_compatible(session: Session, recipe: Recipe) -> None:
    if (recipe.model, recipe.calibration, recipe.seed) != (session.model_ref, session.calibration, session.seed):
        raise ValueError("recipe model/calibration/seed differ from the session's")


def apply_recipe(
    session: Session, recipe: Recipe, clock: Callable[[str], AbstractContextManager[None]] | None = None
) -> nn.Module:
    """A compressed copy of the base model; the base model is never modified. ``clock(stage)``, if
    given, times each step as stage ``apply.<technique>`` (distill is the long one)."""
    check_compatible(session, recipe)
    model = copy.deepcopy(session.base.model)
    ctx = session.ctx
    lineage = ""
    try:
        for i, step in enumerate(recipe.steps):
            technique = TECHNIQUES[step.technique]
            params = technique.parse_params(step.params, f"steps[{i}].params")
            ctx.lineage = lineage
            with clock(f"apply.{step.technique}") if clock else nullcontext():
                model = technique().apply(model, params, ctx)
            lineage = text_digest(lineage, step.model_dump_json())
    finally:
        ctx.lineage = ""
    return model.eval()


def predict_profile(session: Session, recipe: Recipe) -> ModelProfile | None:
    """The profile of ``apply_recipe(session, recipe)`` without applying it: each step's
    ``predict_profile`` on the profile the earlier steps left (milliseconds, no weights touched).
    None when a step can only tell by applying (e.g. early exit's measured depth). Raises what
    applying would raise for the recipe's params and the model's shapes."""
    check_compatible(session, recipe)
    profile: ModelProfile | None = session.base_profile
    ctx, lineage = session.ctx, ""
    try:
        for i, step in enumerate(recipe.steps):
            technique = TECHNIQUES[step.technique]
            params = technique.parse_params(step.params, f"steps[{i}].params")
            ctx.lineage = lineage  # as apply_recipe sets it: cached statistics are found under it
            profile = technique().predict_profile(profile, params, ctx)
            if profile is None:
                return None
            lineage = text_digest(lineage, step.model_dump_json())
    finally:
        ctx.lineage = ""
    return profile


def predict_recipe_cost(
    session: Session, recipe: Recipe, targets: list[HardwareTarget], workload: Workload
) -> dict[str, float] | None:
    """``predict_cost(apply_recipe(session, recipe), targets, workload)`` from the recipe alone, less the
    metrics that depend on what only the compressed model shows (early exit's depth: decode latency and
    energy). None when nothing can be known without applying: a step without a prediction, or a target
    with sparse-unstructured kernels (they read every zero a weight holds, and rounding to a grid makes
    zeros that no recipe declares; a predicted profile counts the zeros the recipe asks for)."""
    if any(t.has("sparse_unstructured") for t in targets):
        return None
    profile = predict_profile(session, recipe)
    if profile is None:
        return None
    return {k: v for k, v in cost_metrics(profile, targets, workload).items() if not math.isnan(v)}


def predict_cost(model: nn.Module, targets: list[HardwareTarget], workload: Workload) -> dict[str, float]:
    """Predicted latency/memory metrics of the model on every target; with early exit, at the exit
    depth measured on the held-out text (also reported as ``avg_exit_layer``)."""
    policy = exit_policy(model)
    if policy is None:
        return cost_metrics(profile_model(model), targets, workload)
    profile = profile_model(model, avg_exit_layer=policy.expected_depth, exit_head_reads=policy.expected_head_reads)
    return cost_metrics(profile, targets, workload) | {"avg_exit_layer": policy.expected_depth}


def cost_needs_model(model: nn.Module) -> bool:
    """Whether the model's cost can differ from what its recipe predicts: early exit's depth is measured
    on text once the model exists (:func:`predict_cost` then charges it)."""
    return exit_policy(model) is not None


def measure_accuracy(model: nn.Module, session: Session, metrics: list[str]) -> dict[str, float]:
    """The accuracy metrics asked for (and their siblings); each evaluator runs once, or not at all
    when the cache holds its result for these weights."""
    evaluators = evaluators_for([m for m in metrics if not is_cost_metric(m)], session.evaluation)
    if not evaluators:
        return {}
    weights = weights_digest(model)
    results: dict[str, float] = {}
    for evaluator in evaluators:
        results.update(evaluate_cached(evaluator, model, session.ctx, weights)[0])
    return results


def evaluate_model(
    model: nn.Module, session: Session, metrics: list[str], targets: list[HardwareTarget], workload: Workload
) -> dict[str, float]:
    return predict_cost(model, targets, workload) | measure_accuracy(model, session, metrics)
