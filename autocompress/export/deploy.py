"""From an artifact folder to a deployable file, and what a runtime really gives of each technique.

``deploy.json`` in the artifact records, per export format, the file, its tensor types and extra
error, and an honest account of the recipe: which techniques the runtime turns into smaller files
or faster tokens, and which ones it does not (2:4 sparsity in llama.cpp, early exit, ...).
``measure`` adds what llama.cpp did on this host: agreement with the torch model and tokens/s.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from autocompress.errors import ConfigError
from autocompress.export.checkpoint import read_record
from autocompress.export.grids import load_grids
from autocompress.recipe import Recipe, TextSpec
from autocompress.techniques import TECHNIQUES

DEPLOY_FILE = "deploy.json"
GGUF_NAME = "model.gguf"


def _recipe(artifact: Path) -> Recipe:
    path = artifact / "recipe.yaml"
    if not path.is_file():
        raise ConfigError("artifact", f"{str(artifact)!r} is not an artifact folder (no recipe.yaml)")
    return Recipe.from_file(path)


def source_gguf(model_ref: str) -> Path | None:
    """The GGUF a base model was read from (its tokenizer metadata is copied), if it came from one."""
    from autocompress.models.loading import ALIASES

    if model_ref in ALIASES:
        return ALIASES[model_ref]()
    return Path(model_ref) if model_ref.endswith(".gguf") and Path(model_ref).is_file() else None


def deploy_notes(recipe: Recipe) -> dict[str, list[str]]:
    """What llama.cpp gets of the recipe and what it does not, step by step (each technique says)."""
    gets: list[str] = []
    lacks: list[str] = []
    for step in recipe.steps:
        support = TECHNIQUES[step.technique].runtime_support(step.params)
        gets += support.gets
        lacks += support.lacks
    return {"runtime_gets": gets, "runtime_does_not_get": lacks}


def update_deploy(artifact: Path, section: str, content: dict[str, Any]) -> dict[str, Any]:
    """Merge ``content`` into ``deploy.json[section]`` (written atomically)."""
    path = artifact / DEPLOY_FILE
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[section] = {**data.get(section, {}), **content}
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True))
    os.replace(tmp, path)
    return data


def load_artifact(artifact: Path):
    """The artifact's torch model (fp32, eval) and tokenizer, read from safetensors."""
    from autocompress.models.loading import load_model

    if not (artifact / "config.json").is_file():
        raise ConfigError("artifact", f"{str(artifact)!r} has no checkpoint (config.json)")
    loaded = load_model(str(artifact))
    return loaded.model, loaded.tokenizer


def export_gguf(artifact: Path, out: Path | None = None, float_type: str = "F16", embedding_type: str | None = None):
    """Write the artifact's model as GGUF (default ``<artifact>/model.gguf``) and record it in deploy.json."""
    from autocompress.export.gguf_export import write_gguf

    artifact = Path(artifact)
    recipe = _recipe(artifact)
    model, tokenizer = load_artifact(artifact)
    out = Path(out) if out is not None else artifact / GGUF_NAME
    report = write_gguf(
        model,
        tokenizer,
        out,
        float_type=float_type,
        embedding_type=embedding_type,
        grids=load_grids(artifact),
        source_gguf=source_gguf(recipe.model),
        name=f"autocompress {recipe.digest()[:12]}",
    )
    update_deploy(artifact, "gguf", {**report.summary(), "runtime": "llama.cpp", **deploy_notes(recipe)})
    return report


def eval_blocks(artifact: Path, model, tokenizer, text: str | None, samples: int, seq_len: int) -> torch.Tensor:
    """Held-out token blocks: from ``text`` (a .txt/.jsonl file or folder), else the recipe's evaluation text."""
    from autocompress.data.text import load_text

    recipe = _recipe(artifact)
    if text is not None:
        spec = TextSpec(source=text, seq_len=seq_len, calibration_samples=1, eval_samples=samples)
    else:
        spec = recipe.calibration.model_copy(update={"eval_samples": samples, "seq_len": seq_len})
    digest = (read_record(artifact) or {}).get("weights_sha256", str(artifact.resolve()))
    return load_text(spec, tokenizer, model, digest, recipe.seed).evaluation


def measure(
    artifact: Path,
    gguf_path: Path | None = None,
    text: str | None = None,
    samples: int = 4,
    seq_len: int = 128,
    prompt_tokens: int = 128,
    decode_tokens: int = 32,
    repeats: int = 5,
    threads: int | None = None,
    tracking_uri: str | None = None,
    blocks: torch.Tensor | None = None,
) -> dict[str, float]:
    """llama.cpp against the torch model on held-out text, and its speed; logged as ``host.llamacpp.*``."""
    from autocompress.export.runtime import agreement, gguf_logits, measure_speed, open_gguf, torch_logits
    from autocompress.metrics import measured_name

    artifact = Path(artifact)
    gguf_path = Path(gguf_path) if gguf_path is not None else artifact / GGUF_NAME
    if not gguf_path.is_file():
        export_gguf(artifact, gguf_path)
    model, tokenizer = load_artifact(artifact)
    if blocks is None:
        blocks = eval_blocks(artifact, model, tokenizer, text, samples, seq_len)
    llm = open_gguf(gguf_path, blocks.shape[1], logits_all=True, threads=threads)
    agree = agreement(torch_logits(model, blocks), gguf_logits(llm, blocks))
    del llm
    speed = measure_speed(
        gguf_path, prompt_tokens, decode_tokens, repeats, threads=threads, vocab=model.config.vocab_size
    )
    figures = {
        "kl": agree.kl,
        "top1_agreement": agree.top1_agreement,
        "prefill_tokens_per_s": speed.prefill_tokens_per_s,
        "decode_tokens_per_s": speed.decode_tokens_per_s,
        "decode_ms_per_token": 1e3 / speed.decode_tokens_per_s,
        "file_mb": gguf_path.stat().st_size / 1e6,
    }
    metrics = {measured_name("llamacpp", k): v for k, v in figures.items()}
    update_deploy(
        artifact,
        "gguf",
        {
            "host": {
                **figures,
                "threads": speed.threads,
                "eval_tokens": blocks.numel(),
                "prompt_tokens": prompt_tokens,
                "decode_tokens": decode_tokens,
                "repeats": repeats,
            }
        },
    )
    _log_to_run(artifact, metrics, tracking_uri)
    return metrics


def _log_to_run(artifact: Path, metrics: dict[str, float], tracking_uri: str | None) -> str | None:
    """Log to the trial's MLflow run when the artifact records one."""
    record = read_record(artifact) or {}
    uri = tracking_uri or record.get("tracking_uri")
    if not (uri and record.get("run_id") and record.get("job")):
        return None
    from autocompress.tracking import MlflowTracker

    MlflowTracker(uri, record["job"]).log_metrics(record["run_id"], metrics)
    return record["run_id"]
