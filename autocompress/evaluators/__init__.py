"""Accuracy evaluators; importing this package registers the built-in ones."""

from autocompress.evaluators import harness, next_token  # noqa: F401
from autocompress.evaluators.base import (EVALUATORS, Evaluator, evaluator_class, evaluators_for, is_accuracy_metric,
                                          known_metrics)
from autocompress.evaluators.settings import EvalSettings

__all__ = ["EVALUATORS", "EvalSettings", "Evaluator", "evaluator_class", "evaluators_for", "is_accuracy_metric",
           "known_metrics"]
