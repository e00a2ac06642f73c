"""The on-disk cache directory and content hashing; no hidden global state beyond the path."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import suppress
from pathlib import Path

import torch
from torch import nn

from autocompress.errors import ConfigError


def cache_root() -> Path:
    """``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress``."""
    root = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))
    root.mkdir(parents=True, exist_ok=True)
    return root


# What a search leaves behind per new step lineage, ~1 GB a trial on SmolLM2-135M (input statistics,
# quantized modules, distillation checkpoints); the small caches (converted base checkpoints, generated
# text, evaluation results, the base model's top-k) are not evicted.
EVICTABLE = ("calibration", "quant-weights", "distill")
DEFAULT_LIMIT_GB = 20.0
RECENTLY_USED_S = 600.0  # never evicted: another worker may be about to read it


def cache_limit_bytes() -> int:
    """``$AUTOCOMPRESS_CACHE_MAX_GB`` (default 20) in bytes: the evictable caches' size cap."""
    value = os.environ.get("AUTOCOMPRESS_CACHE_MAX_GB", str(DEFAULT_LIMIT_GB))
    try:
        limit = float(value)
    except ValueError:
        limit = -1.0
    if not limit > 0:
        raise ConfigError("AUTOCOMPRESS_CACHE_MAX_GB", f"{value!r} is not a positive number of GiB")
    return int(limit * 2**30)


def mark_used(path: Path) -> None:
    """Record a cache hit: eviction removes the least recently *used* files first."""
    with suppress(OSError):
        os.utime(path)


def evict_least_recently_used(
    root: Path | None = None, max_bytes: int | None = None, keep_s: float = RECENTLY_USED_S
) -> int:
    """Delete the least recently used cache files until the evictable folders hold at most ``max_bytes``
    (files used within the last ``keep_s`` seconds stay). Every cache is content-keyed, so an evicted
    entry is only recomputed when needed again. Returns the bytes freed."""
    root = root or cache_root()
    max_bytes = cache_limit_bytes() if max_bytes is None else max_bytes
    files = []
    for folder in EVICTABLE:
        for dirpath, _, names in os.walk(root / folder):
            for name in names:
                with suppress(FileNotFoundError):  # another worker evicted it meanwhile
                    stat = os.stat(path := os.path.join(dirpath, name))
                    files.append((stat.st_mtime, stat.st_size, path))
    excess = sum(size for _, size, _ in files) - max_bytes
    freed, cutoff = 0, time.time() - keep_s
    for mtime, size, path in sorted(files):
        if freed >= excess or mtime > cutoff:
            break
        with suppress(FileNotFoundError):
            os.remove(path)
            freed += size
    return freed


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def text_digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16]


def weights_digest(model: nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names, shapes, bytes), shared tensors once."""
    h = hashlib.sha256()
    seen: set[int] = set()
    for name, tensor in sorted(model.state_dict(keep_vars=False).items()):
        if tensor.data_ptr() in seen and tensor.numel() > 0:
            continue
        seen.add(tensor.data_ptr())
        t = tensor.detach().contiguous().cpu()
        h.update(name.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(str(t.dtype).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
