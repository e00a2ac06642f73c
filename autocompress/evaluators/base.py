"""The Evaluator protocol and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.registry import Registry


class Evaluator(ABC):
    """Accuracy metrics of a model. ``cost`` is a relative price, so a job can budget evaluation."""

    name: ClassVar[str]
    metrics: ClassVar[tuple[str, ...]]
    cost: ClassVar[float] = 1.0

    @abstractmethod
    def evaluate(self, model: nn.Module, ctx: CompressionContext) -> dict[str, float]:
        """Return a value for each of ``self.metrics``."""


EVALUATORS: Registry[type[Evaluator]] = Registry("evaluator", "autocompress.evaluators")


def register_evaluator(cls: type[Evaluator]) -> type[Evaluator]:
    return EVALUATORS.register(cls)


def known_metrics() -> list[str]:
    return sorted(m for name in EVALUATORS for m in EVALUATORS[name].metrics)


def evaluator_for_metric(metric: str, field: str) -> type[Evaluator]:
    for name in EVALUATORS:
        if metric in EVALUATORS[name].metrics:
            return EVALUATORS[name]
    raise ConfigError(field, f"unknown accuracy metric {metric!r}; allowed: {', '.join(known_metrics())}")
