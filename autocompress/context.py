"""What techniques and evaluators share and must not recompute."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


@dataclass
class CompressionContext:
    """Tokenizer, calibration/eval token blocks, the base model, cached statistics, seed.

    ``memo`` caches statistics of the model *as a technique sees it*: the key includes
    ``lineage`` (the digest of the steps applied so far), so a statistic of the base model
    is reused by every trial whose earlier steps are the same. The base model's entries stay in
    memory; of other lineages only the ``memo_lineages`` most recently used do (a search meets a new
    lineage in nearly every trial, and one lineage's input statistics take ~0.5 GB on SmolLM2-135M;
    the disk cache keeps them for a later trial).
    """

    tokenizer: PreTrainedTokenizerBase
    calibration: torch.Tensor  # [n, seq_len] token ids
    evaluation: torch.Tensor  # [m, seq_len] token ids, held out from calibration
    base_model: nn.Module
    cache_dir: Path
    seed: int = 0
    model_digest: str = ""  # SHA-256 of the base model's weights
    data_digest: str = ""  # digest of the calibration/eval token blocks
    lineage: str = ""
    batch_size: int = 8
    memo_lineages: int = 2  # >= 1
    _memo: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict, repr=False)  # lineage -> key -> value

    def memo(self, key: str, compute: Callable[[], T], *, of_base: bool = False) -> T:
        """Compute once; ``of_base=True`` keys by the base model alone, not the lineage."""
        lineage = "" if of_base else self.lineage
        entries = self._memo.setdefault(lineage, {})
        self._memo.move_to_end(lineage)
        if key not in entries:
            entries[key] = compute()
        for stale in [name for name in self._memo if name][: -self.memo_lineages]:  # least recently used first
            del self._memo[stale]
        return entries[key]

    def memoised(self, key: str, *, of_base: bool = False) -> Any:
        """What :meth:`memo` holds for ``key`` now (None if nothing), without computing it."""
        return self._memo.get("" if of_base else self.lineage, {}).get(key)

    def cache_key(self, *parts: str) -> str:
        """A content key for on-disk caches: base weights, data and the steps applied so far."""
        from autocompress.cache import text_digest

        return text_digest(self.model_digest, self.data_digest, self.lineage, *parts)

    def batches(self, tokens: torch.Tensor) -> list[torch.Tensor]:
        return list(tokens.split(self.batch_size))
