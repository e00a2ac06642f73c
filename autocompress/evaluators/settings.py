"""How a job (or ``autocompress evaluate``) evaluates: local task data, subset sizes, multi-fidelity."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

DATA_ENV = "AUTOCOMPRESS_DATA"


class EvalSettings(BaseModel):
    """Evaluation settings; ``costly`` metrics are measured only for trials on or near the front."""

    model_config = ConfigDict(extra="forbid")

    data: str | None = Field(None, description=f"folder of local lm-eval task files; default ${DATA_ENV}")
    limit: int | None = Field(100, ge=1, description="examples per lm-eval task (the first N); null = all")
    batch_size: int = Field(8, ge=1)
    top_k: int = Field(64, ge=1, description="base-model log-probs kept per position for KL")
    costly: list[str] = Field(default_factory=list, description="metrics measured only on or near the front")
    margin: float = Field(0.05, ge=0, description="additive epsilon, in objectives normalised to [0, 1]")
    costly_budget: float | None = Field(None, gt=0, description="forwarded tokens for costly metrics during the search")
    proxy: str = Field("kl", description="the cheap metric whose rank correlation with costly ones is reported")

    def data_dir(self) -> Path | None:
        """The folder local task files are read from, if any."""
        ref = self.data or os.environ.get(DATA_ENV)
        return Path(ref).expanduser() if ref else None
