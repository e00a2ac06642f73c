"""Per-module quantized weights on disk, keyed by content: a trial that repeats a choice loads it.

A key covers the base weights, the calibration data and the steps applied before (the context's
``cache_key``), the module, the method and its version, the format and, for methods whose result
depends on the other members of the input group, their formats too. Files are safetensors, written
atomically; a context that does not know its base model's digest caches nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from autocompress.context import CompressionContext


@dataclass
class WeightCache:
    folder: Path | None  # None: caching off
    hits: int = 0
    misses: int = 0
    _ctx: CompressionContext | None = field(default=None, repr=False)

    @classmethod
    def for_context(cls, ctx: CompressionContext) -> "WeightCache":
        return cls(ctx.cache_dir / "quant-weights" if ctx.model_digest else None, _ctx=ctx)

    def key(self, *parts: str) -> str:
        return self._ctx.cache_key("quant-weight", *parts)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        if self.folder is not None and self._path(key).is_file():
            self.hits += 1
            return load_file(str(self._path(key)))["weight"]
        self.misses += 1
        return None

    def put(self, key: str, weight: torch.Tensor) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"weight": weight.detach().contiguous()}, str(tmp))
        tmp.rename(path)
