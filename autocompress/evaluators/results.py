"""Stored evaluation results, keyed by (model weights hash, evaluator fingerprint incl. its data hash).

Re-evaluating the same compressed model (a repeated recipe, ``reproduce``, a second
``autocompress evaluate``) reads the stored result instead of recomputing it. A change of the
weights, the evaluator's settings, its data files or the base model changes the key.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from torch import nn

from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.evaluators.base import Evaluator


def cache_path(ctx: CompressionContext, evaluator: Evaluator, weights_sha256: str) -> Path:
    return ctx.cache_dir / "evaluations" / f"{text_digest(weights_sha256, evaluator.fingerprint(ctx))}.json"


def evaluate_cached(
    evaluator: Evaluator, model: nn.Module, ctx: CompressionContext, weights_sha256: str
) -> tuple[dict[str, float], bool]:
    """The evaluator's metrics for these weights, and whether they came from the cache."""
    path = cache_path(ctx, evaluator, weights_sha256)
    if path.is_file():
        stored = json.loads(path.read_text())
        if set(stored) >= set(evaluator.metrics):
            return {m: float(stored[m]) for m in evaluator.metrics}, True
    metrics = evaluator.evaluate(model, ctx)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(metrics))
    tmp.replace(path)
    return metrics, False
