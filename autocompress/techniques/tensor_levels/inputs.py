"""What the level methods read about each tensor's input: the base model's statistics on the calibration text.

Levels are computed once per base model and text (the store's key), so their inputs are always the *base*
model's, whatever a recipe did before (pruned blocks keep their original keys and statistics).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

import torch

from autocompress.context import CompressionContext
from autocompress.inputs import InputStats, collect_site_stats, input_stats
from autocompress.models.adapter import LinearSite, ModelAdapter
from autocompress.techniques.tensor_levels.keys import EMBEDDING, LM_HEAD, linear_key
from autocompress.techniques.tensor_levels.levels import TensorInputs


@contextmanager
def at_base(ctx: CompressionContext) -> Iterator[CompressionContext]:
    """The context as it is before any step (lineage of the base model)."""
    lineage, ctx.lineage = ctx.lineage, ""
    try:
        yield ctx
    finally:
        ctx.lineage = lineage


def _inputs(stats: InputStats) -> TensorInputs:
    return TensorInputs(stats.hessian, stats.sq_norm / max(stats.tokens, 1))


def _uniform(cols: int) -> TensorInputs:
    """No statistics (an untied input embedding reads one row per token): every input counts alike."""
    return TensorInputs(torch.eye(cols), torch.ones(cols))


@torch.no_grad()
def _head_stats(ctx: CompressionContext) -> InputStats:
    model = ctx.base_model
    site = LinearSite("lm_head", ModelAdapter(model).lm_head, None, "lm_head")
    return collect_site_stats([site], [partial(model, input_ids=ids) for ids in ctx.batches(ctx.calibration)])[
        "lm_head"
    ]


def base_inputs(ctx: CompressionContext) -> dict[str, TensorInputs]:
    """Tensor key -> its inputs on the calibration text, for the base model (memoised with it)."""

    def compute() -> dict[str, TensorInputs]:
        with at_base(ctx):
            stats = input_stats(ctx.base_model, ctx)
        adapter = ModelAdapter(ctx.base_model)
        out = {linear_key(s.layer, s.role): _inputs(stats[s.name]) for s in adapter.linear_sites()}
        head = _inputs(_head_stats(ctx))
        if adapter.tied_embeddings:
            out[EMBEDDING] = head
        else:
            out[EMBEDDING] = _uniform(adapter.hidden_size)
            out[LM_HEAD] = head
        return out

    return ctx.memo("tensor_level_inputs", compute, of_base=True)
