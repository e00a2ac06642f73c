"""Accuracy evaluators; importing this package registers the built-in ones."""

from autocompress.evaluators import harness, next_token  # noqa: F401
from autocompress.evaluators.base import (
    EVALUATORS,
    Evaluator,
    default_metrics,
    evaluator_class,
    evaluators_for,
    is_accuracy_metric,
    known_metrics,
    never_negative,
)
from autocompress.evaluators.settings import EvalSettings

__all__ = [
    "EVALUATORS",
    "EvalSettings",
    "Evaluator",
    "default_metrics",
    "evaluator_class",
    "evaluators_for",
    "is_accuracy_metric",
    "known_metrics",
    "never_negative",
]
