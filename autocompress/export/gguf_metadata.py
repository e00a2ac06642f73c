"""GGUF metadata of an exported model: llama.cpp's hyperparameters and the tokenizer, as llama.cpp's
``convert_hf_to_gguf.py`` writes them (or copied from the GGUF the base model came from)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import gguf

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter


def rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta or getattr(config, "rope_theta", None) or 10000.0)


def write_hyperparameters(w: gguf.GGUFWriter, adapter: ModelAdapter, intermediate: int) -> None:
    config = adapter.config
    w.add_context_length(int(getattr(config, "max_position_embeddings", 2048)))
    w.add_embedding_length(adapter.hidden_size)
    w.add_block_count(adapter.num_layers)
    w.add_feed_forward_length(intermediate)
    w.add_head_count(adapter.num_heads)
    w.add_head_count_kv(adapter.num_kv_heads)
    w.add_key_length(adapter.head_dim)
    w.add_value_length(adapter.head_dim)
    w.add_rope_dimension_count(adapter.head_dim)
    w.add_rope_freq_base(rope_theta(config))
    w.add_layer_norm_rms_eps(float(getattr(config, "rms_norm_eps", 1e-6)))
    w.add_vocab_size(adapter.vocab_size)


def copy_tokenizer(w: gguf.GGUFWriter, source: Path, vocab_size: int) -> bool:
    """Copy the ``tokenizer.*`` fields of the GGUF the base model came from, if its vocabulary fits."""
    reader = gguf.GGUFReader(str(source))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    if tokens is None or len(tokens.data) != vocab_size:
        return False
    for key, f in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        main = f.types[0]
        sub = f.types[1] if main == gguf.GGUFValueType.ARRAY and len(f.types) > 1 else None
        w.add_key_value(key, f.contents(), main, sub_type=sub)
    return True


def write_bpe_tokenizer(w: gguf.GGUFWriter, tokenizer, vocab_size: int) -> None:
    """GPT-2 style byte-level BPE, as convert_hf_to_gguf's ``get_vocab_base`` writes it."""
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError("tokenizer", "GGUF export needs a fast (tokenizer.json) byte-level BPE tokenizer")
    import json

    model_type = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["type"]
    if model_type != "BPE":
        raise ConfigError("tokenizer", f"GGUF export supports byte-level BPE tokenizers; this one is {model_type}")
    reverse = {i: t for t, i in tokenizer.get_vocab().items()}
    added = set(tokenizer.get_added_vocab())
    special = set(tokenizer.all_special_ids)
    tokens, types = [], []
    for i in range(vocab_size):
        token = reverse.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            types.append(
                gguf.TokenType.CONTROL
                if i in special
                else gguf.TokenType.USER_DEFINED
                if token in added
                else gguf.TokenType.NORMAL
            )
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list(tokens)
    w.add_token_types(types)
    with tempfile.TemporaryDirectory() as folder:
        tokenizer.save_pretrained(folder)
        gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size).add_to_gguf(w, quiet=True)
