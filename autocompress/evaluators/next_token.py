"""Next-token metrics on the held-out text: KL to the base model, perplexity, top-1 agreement.

One forward pass of the compressed model gives all three; a model with early exit runs that pass
with its exits active (exited tokens carry the exit layer's logits). Of the base model only the
top-k log-probabilities per position are kept (computed once per base model and text, memoised in
the context and cached on disk), instead of the full vocabulary: 64 of SmolLM2's 49,152 entries.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from autocompress.cache import text_digest
from autocompress.context import CompressionContext
from autocompress.evaluators.base import Evaluator, register_evaluator
from autocompress.evaluators.settings import EvalSettings


@torch.no_grad()
def log_probs(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Next-token log-probabilities (float32) of ``model`` on the token blocks ``ids``."""
    return F.log_softmax(model(input_ids=ids).logits.float(), dim=-1)


def topk_kl(base_top: torch.Tensor, base_idx: torch.Tensor, logq: torch.Tensor) -> torch.Tensor:
    """KL(base || q) per position, over the base's top-k tokens plus one bucket for the rest.

    This is the exact KL between the two distributions coarsened to k+1 outcomes, so it is never
    negative, never above the full KL (data processing inequality), and equal to it when the base's
    top-k hold all of its mass. ``base_top``: [..., k] base log-probs; ``logq``: [..., V] log-probs.
    """
    logq_top = logq.gather(-1, base_idx)
    p = base_top.exp()
    head = (p * (base_top - logq_top)).sum(-1)
    p_rest = (1 - p.sum(-1)).clamp_min(0)
    q_rest = (1 - logq_top.exp().sum(-1)).clamp_min(1e-12)
    return head + torch.xlogy(p_rest, p_rest) - p_rest * q_rest.log()


def base_topk(ctx: CompressionContext, k: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The base model's top-k (log-probs, token ids) per eval batch; memoised, and on disk when keyed."""

    def compute() -> list[tuple[torch.Tensor, torch.Tensor]]:
        path = None
        if ctx.model_digest and ctx.data_digest:
            path = ctx.cache_dir / "base_topk" / f"{text_digest(ctx.model_digest, ctx.data_digest, str(k))}.safetensors"
            if path.is_file():
                stored = load_file(path)
                return [(stored[f"values.{i}"], stored[f"indices.{i}"].long()) for i in range(len(stored) // 2)]
        batches = [
            log_probs(ctx.base_model, ids).topk(min(k, ctx.base_model.config.vocab_size), dim=-1)
            for ids in ctx.batches(ctx.evaluation)
        ]
        result = [(b.values.contiguous(), b.indices) for b in batches]
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tensors = {f"values.{i}": v for i, (v, _) in enumerate(result)}
            tensors |= {f"indices.{i}": ix.int().contiguous() for i, (_, ix) in enumerate(result)}
            tmp = path.with_suffix(".tmp")
            save_file(tensors, str(tmp))
            tmp.rename(path)
        return result

    return ctx.memo(f"base_topk:{k}", compute, of_base=True)


@register_evaluator
class NextTokenEvaluator(Evaluator):
    name = "next_token"
    metric_names = ("kl", "perplexity", "top1_agreement")
    never_negative = metric_names
    metrics = metric_names

    def __init__(self, top_k: int = 64):
        self.top_k = top_k

    @classmethod
    def create(cls, metric: str, settings: EvalSettings) -> NextTokenEvaluator:
        return cls(settings.top_k)

    def cost(self, ctx: CompressionContext) -> float:
        return float(ctx.evaluation.numel())

    def fingerprint(self, ctx: CompressionContext) -> str:
        return text_digest(self.name, str(self.top_k), ctx.model_digest, ctx.data_digest)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, ctx: CompressionContext) -> dict[str, float]:
        kl_sum = nll_sum = agree = 0.0
        tokens = 0
        for ids, (top, idx) in zip(ctx.batches(ctx.evaluation), base_topk(ctx, self.top_k)):
            logp = log_probs(model, ids)
            kl_sum += topk_kl(top, idx, logp).sum().item()
            # Perplexity: predict token t+1 from positions <= t.
            nll_sum += F.nll_loss(logp[:, :-1].flatten(0, 1), ids[:, 1:].flatten(), reduction="sum").item()
            agree += (logp.argmax(-1) == idx[..., 0]).sum().item()
            tokens += ids.numel()
        n_pred = tokens - ctx.evaluation.shape[0]
        return {
            "kl": max(kl_sum / tokens, 0.0),
            "perplexity": math.exp(nll_sum / n_pred),
            "top1_agreement": agree / tokens,
        }
