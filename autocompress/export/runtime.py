"""llama.cpp on the host (through llama-cpp-python, the ``[llamacpp]`` extra): logits and speed of a GGUF.

Tokens are fed as ids (no tokenizer round trip, no BOS added), so the GGUF's next-token
distributions compare position by position with the torch model's on the same ids. Speed follows
the hardware module's protocol: warm-up runs, then the median of repeats.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from autocompress.errors import ConfigError


def llama_cpp_module():
    """The ``llama_cpp`` module, or a clear error naming the extra that provides it."""
    try:
        import llama_cpp
    except ImportError:
        raise ConfigError(
            "deploy",
            "llama.cpp is not installed; pip install 'autocompress[llamacpp]' (builds llama-cpp-python from source)",
        ) from None
    return llama_cpp


def default_threads() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def open_gguf(path: Path, n_ctx: int, logits_all: bool, threads: int | None = None):
    """A llama.cpp context on ``path`` (CPU), quiet."""
    llama_cpp = llama_cpp_module()
    threads = threads or default_threads()
    if not Path(path).is_file():
        raise ConfigError("gguf", f"{str(path)!r} does not exist")
    return llama_cpp.Llama(
        model_path=str(path),
        n_ctx=n_ctx,
        n_batch=n_ctx,
        n_ubatch=n_ctx,
        n_threads=threads,
        n_threads_batch=threads,
        logits_all=logits_all,
        verbose=False,
        seed=0,
        n_gpu_layers=0,
    )


def gguf_logits(llm, blocks: torch.Tensor) -> torch.Tensor:
    """Logits ``[blocks, seq, vocab]`` of a llama.cpp context opened with ``logits_all=True``."""
    out = []
    for ids in blocks.tolist():
        llm.reset()
        llm.eval(ids)
        out.append(torch.from_numpy(np.array(llm.scores[: len(ids)], dtype=np.float32)))
    return torch.stack(out)


@torch.no_grad()
def torch_logits(model: nn.Module, blocks: torch.Tensor) -> torch.Tensor:
    return torch.cat([model(input_ids=b[None]).logits.float() for b in blocks])


@dataclass(frozen=True)
class Agreement:
    kl: float  # mean KL(reference || candidate) per token, nats
    top1_agreement: float  # share of positions with the same arg-max


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> Agreement:
    """Next-token agreement of two ``[..., vocab]`` logit tensors over the same positions."""
    vocab = min(reference.shape[-1], candidate.shape[-1])  # llama.cpp may pad nothing; HF may pad the head
    logp = F.log_softmax(reference[..., :vocab].double(), -1)
    logq = F.log_softmax(candidate[..., :vocab].double(), -1)
    kl = (logp.exp() * (logp - logq)).sum(-1).mean().item()
    top1 = (reference[..., :vocab].argmax(-1) == candidate[..., :vocab].argmax(-1)).double().mean().item()
    return Agreement(max(kl, 0.0), top1)


@dataclass(frozen=True)
class Speed:
    prefill_tokens_per_s: float
    decode_tokens_per_s: float
    threads: int


def measure_speed(
    path: Path,
    prompt_tokens: int = 128,
    decode_tokens: int = 32,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    vocab: int = 256,
) -> Speed:
    """Median prefill and decode tokens/s of a GGUF with llama.cpp: prefill of ``prompt_tokens`` in one
    batch; decode of ``decode_tokens`` single tokens after that prompt (KV cache grows as it would)."""
    threads = threads or default_threads()
    llm = open_gguf(path, prompt_tokens + decode_tokens + 8, logits_all=False, threads=threads)
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, vocab, (prompt_tokens,), generator=gen).tolist()
    steps = torch.randint(0, vocab, (decode_tokens,), generator=gen).tolist()
    prefill, decode = [], []
    for run in range(warmup + repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        mid = time.perf_counter()
        for token in steps:
            llm.eval([token])
        end = time.perf_counter()
        if run >= warmup:
            prefill.append(prompt_tokens / (mid - start))
            decode.append(decode_tokens / (end - mid))
    return Speed(statistics.median(prefill), statistics.median(decode), threads)


def time_gguf(
    path: Path,
    prompt_tokens: int,
    context_tokens: int,
    decode_tokens: int = 16,
    repeats: int = 5,
    warmup: int = 1,
    threads: int | None = None,
    vocab: int = 256,
) -> tuple[float, float]:
    """Median prefill ms of ``prompt_tokens`` in one batch, and median ms per decoded token with a KV cache
    of ``context_tokens`` (the hardware module's workload; :func:`measure_speed` decodes after the prompt).

    The context is evaluated once, ``decode_tokens / 2`` short, so the decoded tokens' KV lengths average
    ``context_tokens``; each repeat truncates the cache back to it (``eval`` drops positions past ``n_tokens``).
    """
    threads = threads or default_threads()
    filled = max(context_tokens - decode_tokens // 2, 1)
    llm = open_gguf(path, max(prompt_tokens, filled + decode_tokens) + 8, logits_all=False, threads=threads)
    gen = torch.Generator().manual_seed(0)
    prompt, context, steps = (
        torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (prompt_tokens, filled, decode_tokens)
    )
    prefill, decode = [], []
    for run in range(warmup + repeats):
        llm.reset()
        start = time.perf_counter()
        llm.eval(prompt)
        if run >= warmup:
            prefill.append(time.perf_counter() - start)
    llm.reset()
    llm.eval(context)
    for run in range(warmup + repeats):
        llm.n_tokens = filled
        start = time.perf_counter()
        for token in steps:
            llm.eval([token])
        if run >= warmup:
            decode.append((time.perf_counter() - start) / decode_tokens)
    return statistics.median(prefill) * 1e3, statistics.median(decode) * 1e3


def llama_quantize(
    source: Path, dest: Path, ftype: str, token_embedding_type: str | None = None, threads: int | None = None
) -> Path:
    """llama.cpp's own quantizer (``llama_model_quantize``) from a float GGUF: ``ftype`` such as
    ``Q4_0`` or ``Q4_K_M``; ``token_embedding_type`` (e.g. ``F16``) overrides its choice for token_embd."""
    import ctypes

    llama_cpp = llama_cpp_module()
    code = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{ftype.upper()}", None)
    if code is None:
        raise ConfigError("ftype", f"llama.cpp has no file type {ftype!r}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = code
    params.nthread = threads or default_threads()
    if token_embedding_type is not None:
        params.token_embedding_type = getattr(llama_cpp, f"GGML_TYPE_{token_embedding_type.upper()}")
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), ctypes.byref(params)) != 0:
        raise RuntimeError(f"llama_model_quantize failed for {source} -> {ftype}")
    return Path(dest)
