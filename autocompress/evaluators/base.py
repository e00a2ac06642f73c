"""The Evaluator protocol and its registry.

An evaluator class claims a family of metric names (``kl``..., ``lm_eval:<task>``) and builds an
instance per group of metrics it measures together. Each instance declares its ``cost`` (tokens
forwarded through the model per evaluation), so a job can budget evaluation, and a ``fingerprint``
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
    metrics: tuple[str, ...]

    @classmethod
    @abstractmethod
    def claims(cls, metric: str) -> bool:
        """Whether ``metric`` is one of this evaluator's metric names."""

    @classmethod
    @abstractmethod
    def create(cls, metric: str, settings: EvalSettings) -> "Evaluator":
        """The instance that measures ``metric`` (and its siblings)."""

    def prepare(self) -> None:
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


def known_metrics() -> list[str]:
    """The accuracy metric names, for messages (``lm_eval:`` also takes any stock lm-eval task)."""
    from autocompress.evaluators.tasks import local_task_names

    return ["kl", "perplexity", "top1_agreement"] + [f"lm_eval:{t}" for t in local_task_names()] + ["lm_eval:<task>"]


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
