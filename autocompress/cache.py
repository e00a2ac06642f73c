"""The on-disk cache directory and content hashing; no hidden global state beyond the path."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn


def cache_root() -> Path:
    """``$AUTOCOMPRESS_CACHE`` or ``~/.cache/autocompress``."""
    root = Path(os.environ.get("AUTOCOMPRESS_CACHE", Path.home() / ".cache" / "autocompress"))
    root.mkdir(parents=True, exist_ok=True)
    return root


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
