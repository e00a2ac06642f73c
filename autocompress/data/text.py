"""Calibration and held-out evaluation token blocks.

Default (``source: generated``): text sampled from the base model itself at temperature 1 from
a spread of prompts, seeded and cached on disk, so the product needs no dataset. A ``.txt`` /
``.jsonl`` file or a folder of them (e.g. ``../shared/data/wikitext-2-raw``) can be used instead.
Blocks are disjoint: calibration blocks are never evaluated on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import PreTrainedTokenizerBase

from autocompress.cache import cache_root, text_digest
from autocompress.errors import ConfigError
from autocompress.recipe import TextSpec

_console = Console(stderr=True)

# A spread of genres so that generated text covers more than one register.
PROMPTS = (
    "The history of the Roman Empire",
    "Once upon a time, in a small village,",
    "def fibonacci(n):",
    "Photosynthesis is the process by which",
    "Dear customer, thank you for",
    "The recipe calls for",
    "In quantum mechanics, the uncertainty principle",
    "Breaking news: scientists have discovered",
    "Q: What is the capital of Australia?\nA:",
    "The football match ended with",
    "To install the package, run",
    "My favourite memory from childhood is",
    "The stock market today",
    "A haiku about autumn:",
    "Chapter 1\n\nThe rain had not stopped for three days",
    "The main causes of the French Revolution were",
    "Instructions: summarise the following article.",
    "SELECT name, age FROM users WHERE",
    "The human heart has four chambers",
    "Travel guide: the best things to do in Kyoto",
    "Abstract. We propose a new method for",
    "Grandma's advice for a happy life:",
    "The mitochondria is",
    "In the year 2150, humanity",
)


@dataclass
class TextData:
    calibration: torch.Tensor  # [calibration_samples, seq_len]
    evaluation: torch.Tensor  # [eval_samples, seq_len]
    digest: str


def load_text(
    spec: TextSpec, tokenizer: PreTrainedTokenizerBase, model: nn.Module, model_digest: str, seed: int
) -> TextData:
    """Token blocks for a text spec; generated text is cached by (model, spec, seed)."""
    if spec.source == "generated":
        blocks = _generated_blocks(spec, tokenizer, model, model_digest, seed)
        source_digest = text_digest("generated", model_digest)
    else:
        text = _read_text(Path(spec.source).expanduser())
        source_digest = text_digest(text)
        blocks = _file_blocks(text, spec, tokenizer, seed)
    n_cal = spec.calibration_samples
    return TextData(
        blocks[:n_cal],
        blocks[n_cal : n_cal + spec.eval_samples],
        text_digest(source_digest, spec.model_dump_json(), str(seed)),
    )


def _read_text(path: Path) -> str:
    files = sorted(p for p in path.iterdir() if p.suffix in (".txt", ".raw", ".jsonl")) if path.is_dir() else [path]
    if not path.exists() or not files:
        raise ConfigError(
            "calibration.source", f"{str(path)!r} is not 'generated', a .txt/.jsonl file or a folder of them"
        )
    parts = []
    for file in files:
        if file.suffix == ".jsonl":
            for line in file.read_text().splitlines():
                if line.strip():
                    record = json.loads(line)
                    parts.append(record.get("text") or next(v for v in record.values() if isinstance(v, str)))
        else:
            parts.append(file.read_text())
    return "\n\n".join(parts)


def _file_blocks(text: str, spec: TextSpec, tokenizer: PreTrainedTokenizerBase, seed: int) -> torch.Tensor:
    ids = torch.tensor(tokenizer(text, add_special_tokens=False).input_ids, dtype=torch.long)
    n_blocks = ids.numel() // spec.seq_len
    wanted = spec.calibration_samples + spec.eval_samples
    if n_blocks < wanted:
        raise ConfigError(
            "calibration",
            f"the text has {n_blocks} blocks of {spec.seq_len} tokens; "
            f"{wanted} are needed (calibration_samples + eval_samples)",
        )
    blocks = ids[: n_blocks * spec.seq_len].view(n_blocks, spec.seq_len)
    order = torch.randperm(n_blocks, generator=torch.Generator().manual_seed(seed))
    return blocks[order[:wanted]]


@torch.no_grad()
def _generated_blocks(
    spec: TextSpec, tokenizer: PreTrainedTokenizerBase, model: nn.Module, model_digest: str, seed: int
) -> torch.Tensor:
    wanted = spec.calibration_samples + spec.eval_samples
    key = text_digest(model_digest, str(seed), str(spec.seq_len), str(wanted), *PROMPTS)
    path = cache_root() / "text" / f"generated-{key}.safetensors"
    if path.is_file():
        return load_file(path)["tokens"]
    _console.print(
        f"[dim]generating {wanted} x {spec.seq_len} tokens of calibration text with the base model "
        "(once; cached)...[/dim]"
    )
    torch.manual_seed(seed)
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(wanted)]
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        enc = tokenizer(prompts, return_tensors="pt", padding=True)
    finally:
        tokenizer.padding_side = old_side
    rows = []
    for start in range(0, wanted, 16):
        out = model.generate(
            input_ids=enc.input_ids[start : start + 16],
            attention_mask=enc.attention_mask[start : start + 16],
            do_sample=True,
            temperature=1.0,
            top_p=0.95,
            top_k=0,
            max_new_tokens=spec.seq_len,
            min_new_tokens=spec.seq_len,
            pad_token_id=tokenizer.pad_token_id,
        )
        rows.append(out[:, enc.input_ids.shape[1] :])
    tokens = torch.cat(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file({"tokens": tokens.contiguous()}, str(tmp))
    tmp.rename(path)
    (path.with_suffix(".txt")).write_text("\n\n---\n\n".join(tokenizer.batch_decode(tokens)))
    return tokens
