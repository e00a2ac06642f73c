"""Accuracy evaluators; importing this package registers the built-in ones."""

from autocompress.evaluators import next_token  # noqa: F401
from autocompress.evaluators.base import EVALUATORS, Evaluator, evaluator_for_metric, known_metrics

__all__ = ["EVALUATORS", "Evaluator", "evaluator_for_metric", "known_metrics"]
