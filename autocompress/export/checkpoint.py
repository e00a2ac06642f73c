"""The artifact layout every path writes: checkpoint, tokenizer, recipe.yaml, metrics.json and,
for quantized models, quant_grid.safetensors.

Written to a temporary sibling folder and renamed into place, so a crash leaves no half-written
artifact behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from autocompress.cache import weights_digest
from autocompress.export.grids import save_grids
from autocompress.recipe import Recipe


def write_artifact(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    recipe: Recipe,
    metrics: dict[str, float],
    out_dir: Path,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Save a transformers-loadable safetensors checkpoint with its provenance; return metrics.json's content."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "metrics": metrics,
        "weights_sha256": weights_digest(model),
        "recipe_digest": recipe.digest(),
        **(extra or {}),
    }
    if "avg_exit_layer" in metrics:  # early exit: the measured mean exit depth, also at the top level
        record["avg_exit_layer"] = metrics["avg_exit_layer"]
    tmp = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        save_grids(model, tmp)
        (tmp / "recipe.yaml").write_text(recipe.to_yaml())
        (tmp / "metrics.json").write_text(json.dumps(record, indent=2, sort_keys=True))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def read_record(artifact_dir: Path) -> dict[str, Any] | None:
    path = Path(artifact_dir) / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else None
