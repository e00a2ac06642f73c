"""``lm_eval:<task>``: accuracy on an lm-eval task, scoring the in-memory model through lm-eval's HFLM."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from torch import nn

from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.evaluators.base import Evaluator, register_evaluator
from autocompress.evaluators.settings import EvalSettings
from autocompress.evaluators.tasks import TaskSource, build_task, local_task_names, task_source

PREFIX = "lm_eval:"


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm-eval without its progress bars and info/warning logs (errors still raise)."""
    logger = logging.getLogger("lm_eval")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with open(os.devnull, "w") as sink, contextlib.redirect_stderr(sink):
            yield
    finally:
        logger.setLevel(level)


@register_evaluator
class LmEvalEvaluator(Evaluator):
    """One lm-eval task, zero-shot, on the first ``limit`` examples; reports the task's catalog metric."""

    name = "lm_eval"

    def __init__(self, task: str, settings: EvalSettings):
        self.task, self.settings = task, settings
        self.metrics = (PREFIX + task,)
        self._source: TaskSource | None = None

    @classmethod
    def claims(cls, metric: str) -> bool:
        return metric.startswith(PREFIX) and len(metric) > len(PREFIX)

    @classmethod
    def family_names(cls) -> list[str]:
        """The catalog's local tasks, and any stock lm-eval task."""
        return [PREFIX + t for t in local_task_names()] + [PREFIX + "<task>"]

    @classmethod
    def create(cls, metric: str, settings: EvalSettings) -> LmEvalEvaluator:
        return cls(metric[len(PREFIX) :], settings)

    @property
    def source(self) -> TaskSource:
        if self._source is None:
            self._source = task_source(self.task, self.settings.data_dir())
        return self._source

    def prepare(self) -> None:
        self.source  # noqa: B018 - resolving the task checks its data files

    def cost(self, ctx: CompressionContext) -> float:
        return float(self.source.tokens_per_example * (self.settings.limit or 1000))

    def fingerprint(self, ctx: CompressionContext) -> str:
        return text_digest(self.name, self.source.digest(), str(self.settings.limit), ctx.model_digest)

    def evaluate(self, model: nn.Module, ctx: CompressionContext) -> dict[str, float]:
        from lm_eval import simple_evaluate
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager

        with _quiet():
            task = build_task(self.source, self.settings.limit)
            lm = HFLM(pretrained=model, tokenizer=ctx.tokenizer, batch_size=self.settings.batch_size)
            out = simple_evaluate(
                model=lm,
                tasks=[task],
                limit=self.settings.limit,
                bootstrap_iters=0,
                log_samples=False,
                task_manager=TaskManager(include_defaults=False),
                random_seed=ctx.seed,
                numpy_random_seed=ctx.seed,
                torch_random_seed=ctx.seed,
                fewshot_random_seed=ctx.seed,
            )
        result = out["results"][task.task_name]
        return {self.metrics[0]: float(result[f"{self.source.metric},none"])}
