"""Next-token metrics on the held-out text: KL to the base model, perplexity, top-1 agreement.

One forward pass of the compressed model gives all three; a model with early exit runs that pass with
its exits active (exited tokens carry the exit layer's logits). The base model's log-probabilities
are computed once per context (i.e. once per job) and reused by every trial.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from autocompress.context import CompressionContext
from autocompress.evaluators.base import Evaluator, register_evaluator


@torch.no_grad()
def _log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)


def base_log_probs(ctx: CompressionContext) -> list[torch.Tensor]:
    """The base model's next-token log-probabilities per eval batch (cached in the context)."""
    return ctx.memo("base_log_probs", lambda: [_log_probs(ctx.base_model, ids) for ids in ctx.batches(ctx.evaluation)],
                    of_base=True)


@register_evaluator
class NextTokenEvaluator(Evaluator):
    name = "next_token"
    metrics = ("kl", "perplexity", "top1_agreement")
    cost = 1.0

    @torch.no_grad()
    def evaluate(self, model: nn.Module, ctx: CompressionContext) -> dict[str, float]:
        kl_sum = nll_sum = agree = 0.0
        tokens = 0
        for ids, base in zip(ctx.batches(ctx.evaluation), base_log_probs(ctx)):
            logp = _log_probs(model, ids)
            # KL(base || compressed) per position, summed over the vocabulary.
            kl_sum += F.kl_div(logp, base, log_target=True, reduction="sum").item()
            # Perplexity: predict token t+1 from positions <= t.
            nll_sum += F.nll_loss(logp[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            agree += (logp.argmax(-1) == base.argmax(-1)).sum().item()
            tokens += ids.numel()
        n_pred = tokens - ctx.evaluation.shape[0]
        return {"kl": max(kl_sum / tokens, 0.0), "perplexity": math.exp(nll_sum / n_pred), "top1_agreement": agree / tokens}
