"""Wall-clock measurements on the host: micro-benchmarks and real prefill/decode of a model.

Every measurement warms up first, repeats, and reports the median (:func:`autocompress.timing.median_seconds`).
"""

from __future__ import annotations

import inspect
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.timing import median_seconds


def copy_bandwidth_gbps(megabytes: int = 256, repeats: int = 5) -> float:
    """Sustained memory bandwidth: a large tensor copy moves 2 bytes per byte copied."""
    src = torch.empty(megabytes * 2**20 // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / seconds / 1e9


def gemm_gflops(
    m: int = 512, n: int = 1536, k: int = 576, dtype: torch.dtype = torch.float32, repeats: int = 5
) -> float:
    """Throughput of a prefill-shaped matrix product."""
    a = torch.randn(m, k, dtype=dtype)
    b = torch.randn(k, n, dtype=dtype)
    seconds = median_seconds(lambda: a @ b, repeats)
    return 2 * m * n * k / seconds / 1e9


def op_overhead_us(repeats: int = 2000) -> float:
    """Fixed cost of dispatching one tiny op from Python (eager mode)."""
    x = torch.zeros(8)
    seconds = median_seconds(lambda: [x.add_(1) for _ in range(100)], repeats=max(repeats // 100, 5))
    return seconds / 100 * 1e6


@dataclass(frozen=True)
class ModelTiming:
    prefill_ms: float
    decode_ms_per_token: float


@torch.no_grad()
def time_model(
    model: nn.Module, prompt_tokens: int, context_tokens: int, repeats: int = 5, decode_steps: int = 8
) -> ModelTiming:
    """Measured prefill of ``prompt_tokens`` and per-token decode with a KV cache of ``context_tokens``."""
    from transformers import DynamicCache

    vocab = model.config.vocab_size
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=gen)
    # A runtime computes the logits of the prompt's last token only (as the roofline assumes); the
    # full [prompt, vocab] projection would add a depth-independent cost no deployed model pays.
    prefill_s = median_seconds(lambda: model(input_ids=prompt, use_cache=False, logits_to_keep=1), repeats, warmup=1)

    context = torch.randint(0, vocab, (1, context_tokens), generator=gen)
    step = torch.randint(0, vocab, (1, 1), generator=gen)

    # transformers renamed ``past_key_values`` to ``cache``; use whichever this version takes.
    cache_arg = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def decode() -> None:
        cache = DynamicCache(config=model.config)
        model(input_ids=context, use_cache=True, **{cache_arg: cache})
        start = time.perf_counter()
        for _ in range(decode_steps):
            model(input_ids=step, use_cache=True, **{cache_arg: cache})
        per_token.append((time.perf_counter() - start) / decode_steps)

    per_token: list[float] = []
    for _ in range(max(repeats // 2, 2) + 1):
        decode()
    decode_s = statistics.median(per_token[1:])  # the first run warms up
    return ModelTiming(prefill_s * 1e3, decode_s * 1e3)
