"""The Evaluator protocol and its registry.

An evaluator class declares the metric names it measures (``kl``..., or a family such as
``lm_eval:<task>``), which of them can never be negative, and builds an instance per group of
metrics it measures together; every list of accuracy metric names is built from these declarations.
Each instance declares its ``cost`` (tokens forwarded through the model per evaluation), so a job can
budget evaluation, and a ``fingerprint``
of everything besides the weights that its result depends on, so results can be cached.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.evaluators.settings import EvalSettings
from autocompress.registry import Registry


class Evaluator(ABC):
    """Accuracy metrics of a model."""

    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]] = ()  # the fixed names it measures
    never_negative: ClassVar[tuple[str, ...]] = ()  # those of its metrics that cannot be negative
    metrics: tuple[str, ...]  # what this instance measures

    @classmethod
    def claims(cls, metric: str) -> bool:
        """Whether ``metric`` is one of this evaluator's metric names."""
        return metric in cls.metric_names

    @classmethod
    def family_names(cls) -> list[str]:
        """Names of a family of metrics (beyond ``metric_names``) as messages list them, e.g. ``lm_eval:<task>``."""
        return []

    @classmethod
    @abstractmethod
    def create(cls, metric: str, settings: EvalSettings) -> Evaluator:
        """The instance that measures ``metric`` (and its siblings)."""

    def prepare(self) -> None:  # noqa: B027 - an optional hook: most evaluators have nothing to check early
        """Check what can be checked before any model loads (e.g. that data files exist)."""

    @abstractmethod
    def cost(self, ctx: CompressionContext) -> float:
        """Estimated tokens forwarded through the model by one evaluation."""

    @abstractmethod
    def fingerprint(self, ctx: CompressionContext) -> str:
        """Digest of the evaluator's settings, data and base model: the cache key besides the weights."""

    @abstractmethod
    def evaluate(self, model: nn.Module, ctx: CompressionContext) -> dict[str, float]:
        """Return a value for each of ``self.metrics``."""


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator", "autocompress.evaluators")


def register_evaluator(cls: type[Evaluator]) -> type[Evaluator]:
    return EVALUATORS.register(cls)


DEFAULT_EVALUATOR = "next_token"  # what is measured when no metric is named


def _classes() -> list[type[Evaluator]]:
    return [EVALUATORS[name] for name in EVALUATORS]


def known_metrics() -> list[str]:
    """The accuracy metric names, for messages: every evaluator's fixed names, then the families."""
    classes = _classes()
    return [m for cls in classes for m in cls.metric_names] + [m for cls in classes for m in cls.family_names()]


def default_metrics() -> list[str]:
    """The metrics measured when none are named (the next-token metrics)."""
    return list(EVALUATORS[DEFAULT_EVALUATOR].metric_names)


def never_negative(metric: str) -> bool:
    """Whether an evaluator declares that accuracy metric never negative (a budget below 0 is unmeetable)."""
    return any(metric in cls.never_negative for cls in _classes())


def is_accuracy_metric(metric: str) -> bool:
    return any(EVALUATORS[name].claims(metric) for name in EVALUATORS)


def evaluator_class(metric: str, field: str) -> type[Evaluator]:
    for name in EVALUATORS:
        if EVALUATORS[name].claims(metric):
            return EVALUATORS[name]
    raise ConfigError(field, f"unknown accuracy metric {metric!r}; allowed: {', '.join(known_metrics())}")


def evaluators_for(metrics: list[str], settings: EvalSettings, field: str = "metrics") -> list[Evaluator]:
    """One evaluator per group of metrics measured together, in a stable order."""
    found: dict[tuple[str, tuple[str, ...]], Evaluator] = {}
    for metric in metrics:
        if any(metric in ev.metrics for ev in found.values()):
            continue
        evaluator = evaluator_class(metric, field).create(metric, settings)
        found[(evaluator.name, evaluator.metrics)] = evaluator
    return [found[k] for k in sorted(found)]
