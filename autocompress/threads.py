"""Thread-count control for loops of many tiny tensor ops."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def one_thread() -> Iterator[None]:
    """Run torch on one thread inside the block. Column loops (GPTQ, SparseGPT) are thousands of tiny
    ops; on a busy CPU, waking a thread pool for each costs far more than the op (measured 30-50x)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
