"""Input statistics: what each linear layer reads on the calibration text, computed once and cached.

GPTQ and SparseGPT need the input Hessian ``H = X^T X / n``; AWQ, SmoothQuant and Wanda need
per-channel input magnitudes. One forward pass over the calibration batches collects all of them;
linears that read the same tensor (q/k/v, gate/up) share one entry. Results are memoised in the
context and stored on disk as safetensors keyed by (base weights, data, steps applied so far).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from autocompress.cache import mark_used
from autocompress.context import CompressionContext
from autocompress.models.adapter import LinearSite, ModelAdapter


@dataclass
class InputStats:
    """Per-linear input statistics over ``tokens`` calibration tokens."""

    hessian: torch.Tensor  # [in, in], mean of x x^T
    sq_norm: torch.Tensor  # [in], sum over tokens of x^2 (Wanda's ||X_j||^2)
    absmax: torch.Tensor  # [in], max over tokens of |x|
    absmean: torch.Tensor  # [in], mean over tokens of |x| (AWQ's activation scale)
    tokens: int

    @property
    def channel_norm(self) -> torch.Tensor:
        return self.sq_norm.sqrt()


class _Accumulator:
    def __init__(self, width: int):
        self.xtx = torch.zeros(width, width, dtype=torch.float64)
        self.sq = torch.zeros(width, dtype=torch.float64)
        self.absmax = torch.zeros(width)
        self.abssum = torch.zeros(width, dtype=torch.float64)
        self.tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.xtx += (x.T @ x).double()  # fp32 products per batch, fp64 running sums
        self.sq += x.pow(2).sum(0).double()
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.abssum += x.abs().sum(0).double()
        self.tokens += x.shape[0]

    def result(self) -> InputStats:
        n = max(self.tokens, 1)
        return InputStats((self.xtx / n).float(), self.sq.float(), self.absmax, (self.abssum / n).float(), self.tokens)


@torch.no_grad()
def collect_input_stats(model: nn.Module, batches: list[torch.Tensor]) -> dict[str, InputStats]:
    """Statistics of the input of every decoder linear, keyed by module name."""
    forwards = [partial(model, input_ids=ids) for ids in batches]
    return collect_site_stats(ModelAdapter(model).linear_sites(), forwards)


@torch.no_grad()
def collect_site_stats(sites: list[LinearSite], forwards: list[Callable[[], object]]) -> dict[str, InputStats]:
    """Statistics of the inputs of ``sites`` while each of ``forwards`` runs once."""
    accumulators: dict[str, _Accumulator] = {}
    alias: dict[str, str] = {}  # module name -> name of the module whose input it shares
    # id of an input tensor in the current forward -> (first reader, the tensor). Holding the tensor
    # keeps its id from being reused by a later, different input within the same forward.
    seen: dict[int, tuple[str, torch.Tensor]] = {}

    def hook(name: str):
        def record(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
            x = args[0]
            first = seen.setdefault(id(x), (name, x))[0]
            if first != name:
                alias[name] = first
                return
            accumulators.setdefault(name, _Accumulator(x.shape[-1])).add(x)

        return record

    handles = [site.module.register_forward_hook(hook(site.name)) for site in sites]
    try:
        for forward in forwards:
            seen.clear()
            forward()
    finally:
        for handle in handles:
            handle.remove()
    stats = {name: acc.result() for name, acc in accumulators.items()}
    for name, first in alias.items():
        stats[name] = stats[first]
    return stats


class _ReachedFirstLayer(Exception):
    pass


class LayerInputs:
    """The calibration batches' hidden states entering each decoder block of a model *as it is now*.

    Blocks are walked in order: the inputs of block ``i`` are computed through blocks ``< i`` as they
    are when block ``i`` is reached, so after those blocks were quantized their statistics see the
    quantized outputs (sequential quantization, the order of the GPTQ and AWQ reference code). The
    model runs once up to the first block; each later step runs one block."""

    def __init__(self, model: nn.Module, batches: list[torch.Tensor]):
        self.model, self.adapter, self.batches = model, ModelAdapter(model), batches
        self._layer = -1  # the block whose inputs ``_calls`` hold; -1 before the first capture
        self._calls: list[tuple[tuple, dict]] = []

    @torch.no_grad()
    def stats(self, layer: int) -> dict[str, InputStats]:
        """Input statistics of block ``layer``'s linears, on its inputs as the model now computes them."""
        self._advance_to(layer)
        block = self.adapter.layers[layer]
        sites = [s for s in self.adapter.linear_sites() if s.layer == layer]
        return collect_site_stats(sites, [partial(block, *args, **kwargs) for args, kwargs in self._calls])

    def _advance_to(self, layer: int) -> None:
        if layer < self._layer:
            raise ValueError(f"block {layer} was passed already (now at {self._layer}); walk blocks in order")
        if self._layer < 0:
            self._capture()
        while self._layer < layer:
            block = self.adapter.layers[self._layer]
            self._calls = [_next_block_call(block(*args, **kwargs), args, kwargs) for args, kwargs in self._calls]
            self._layer += 1

    def _capture(self) -> None:
        def stop(module: nn.Module, args: tuple, kwargs: dict) -> None:
            self._calls.append((args, kwargs))
            raise _ReachedFirstLayer

        handle = self.adapter.layers[0].register_forward_pre_hook(stop, with_kwargs=True)
        try:
            for ids in self.batches:
                try:
                    self.model(input_ids=ids, use_cache=False)
                except _ReachedFirstLayer:
                    pass
        finally:
            handle.remove()
        self._layer = 0


def _next_block_call(output: object, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The arguments of the next block: this block's hidden-state output in place of its input."""
    hidden = output[0] if isinstance(output, tuple) else output
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def input_stats(model: nn.Module, ctx: CompressionContext) -> dict[str, InputStats]:
    """Cached :func:`collect_input_stats` of ``model`` on the context's calibration batches."""
    return ctx.memo("input_stats", lambda: _load_or_collect(model, ctx))


_FIELDS = ("hessian", "sq_norm", "absmax", "absmean")


def _load_or_collect(model: nn.Module, ctx: CompressionContext) -> dict[str, InputStats]:
    # the cache folder keeps its first name, so existing caches stay valid
    path = ctx.cache_dir / "calibration" / f"input-stats-{ctx.cache_key('input_stats')}.safetensors"
    if path.is_file() and ctx.model_digest:
        mark_used(path)
        with safe_open(str(path), framework="pt") as f:
            flat = {key: f.get_tensor(key) for key in f.keys()}
            shared = json.loads((f.metadata() or {}).get("shared", "{}"))
        names = {key.rsplit("/", 1)[0] for key in flat}
        stats = {n: InputStats(*(flat[f"{n}/{f}"] for f in _FIELDS), int(flat[f"{n}/tokens"].item())) for n in names}
        return stats | {name: stats[owner] for name, owner in shared.items()}
    stats = collect_input_stats(model, ctx.batches(ctx.calibration))
    if ctx.model_digest:  # only a context that knows its base model can key a disk cache
        flat, owners, shared = {}, {}, {}
        for name, s in stats.items():
            if id(s) in owners:  # q/k/v and gate/up read one input: stored once
                shared[name] = owners[id(s)]
                continue
            owners[id(s)] = name
            for field in _FIELDS:
                flat[f"{name}/{field}"] = getattr(s, field).contiguous().clone()
            flat[f"{name}/tokens"] = torch.tensor([s.tokens])
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file(flat, str(tmp), metadata={"shared": json.dumps(shared)})
        tmp.rename(path)
    return stats
