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
from safetensors import safe_open
from safetensors.torch import save_file

from autocompress.cache import mark_used
from autocompress.context import CompressionContext
from autocompress.models.annotations import WeightGrid
from autocompress.techniques.quantize.grid import Quantized


@dataclass
class WeightCache:
    folder: Path | None  # None: caching off
    hits: int = 0
    misses: int = 0
    _ctx: CompressionContext | None = field(default=None, repr=False)

    @classmethod
    def for_context(cls, ctx: CompressionContext) -> WeightCache:
        return cls(ctx.cache_dir / "quant-weights" if ctx.model_digest else None, _ctx=ctx)

    def key(self, *parts: str) -> str:
        return self._ctx.cache_key("quant-weight", *parts)

    def _path(self, key: str) -> Path:
        return self.folder / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> Quantized | None:
        path = self._path(key) if self.folder is not None else None
        if path is not None and path.is_file():
            mark_used(path)
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                tensors = {name: f.get_tensor(name) for name in f.keys()}
            if "grid" in meta:  # files from before grids were recorded are misses
                self.hits += 1
                return Quantized(tensors["weight"], _grid_from(meta["grid"], tensors))
        self.misses += 1
        return None

    def put(self, key: str, result: Quantized) -> None:
        if self.folder is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors = {"weight": result.weight.detach().contiguous()}
        grid = result.grid
        if grid is not None:
            tensors |= {"scale": grid.scale, "zero": grid.zero}
            if grid.input_scale is not None:
                tensors["input_scale"] = grid.input_scale
        meta = "none" if grid is None else f"{grid.bits},{grid.group},{int(grid.symmetric)}"
        tmp = path.with_suffix(".tmp")
        save_file(tensors, str(tmp), metadata={"grid": meta})
        tmp.rename(path)


def _grid_from(meta: str, tensors: dict[str, torch.Tensor]) -> WeightGrid | None:
    if meta == "none":
        return None
    bits, group, symmetric = (int(v) for v in meta.split(","))
    return WeightGrid(tensors["scale"], tensors["zero"], bits, group, bool(symmetric), tensors.get("input_scale"))
