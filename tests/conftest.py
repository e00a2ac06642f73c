"""Fixtures: tiny randomly initialised decoder-only models of several architectures, built in-process."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=256,
    tie_word_embeddings=True,
)
ARCHITECTURES = {
    "llama": lambda vocab: LlamaForCausalLM(LlamaConfig(vocab_size=vocab, **TINY)),
    "qwen2": lambda vocab: Qwen2ForCausalLM(Qwen2Config(vocab_size=vocab, **TINY)),
}
CORPUS = (
    "the quick brown fox jumps over the lazy dog. " * 20
    + "compression of language models for edge devices. " * 20
    + "0123456789 abcdefghijklmnopqrstuvwxyz ABCDEFGHIJKLMNOPQRSTUVWXYZ .,;:!?'\"()[]{}<>/\\-_=+*&^%$#@~`|\n"
)


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Keep the on-disk cache of tests out of the user's home."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AUTOCOMPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
    mp.setenv("HF_HUB_OFFLINE", "1")
    yield
    mp.undo()


def build_tokenizer() -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["<eos>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([CORPUS], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<eos>")


def build_model(arch: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = ARCHITECTURES[arch](320)
    # Random init gives near-uniform predictions; sharpen them so compression has visible effects.
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    return model.eval()


@pytest.fixture(scope="session")
def tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer()


@pytest.fixture(scope="session", params=sorted(ARCHITECTURES))
def arch(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture(scope="session")
def tiny_checkpoints(tmp_path_factory: pytest.TempPathFactory, tokenizer: PreTrainedTokenizerFast) -> dict[str, Path]:
    """A saved safetensors checkpoint (with tokenizer) per architecture."""
    paths = {}
    for name in ARCHITECTURES:
        folder = tmp_path_factory.mktemp(f"tiny-{name}")
        build_model(name).save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)
        paths[name] = folder
    return paths


@pytest.fixture
def tiny_model(arch: str) -> torch.nn.Module:
    return build_model(arch)


def make_context(model: torch.nn.Module, tokenizer, n_cal: int = 4, n_eval: int = 4, seq_len: int = 32):
    """A CompressionContext over random token blocks (techniques' invariants need no real text)."""
    from autocompress.context import CompressionContext

    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.config.vocab_size, (n_cal + n_eval, seq_len), generator=gen)
    return CompressionContext(
        tokenizer=tokenizer,
        calibration=tokens[:n_cal],
        evaluation=tokens[n_cal:],
        base_model=model,
        cache_dir=Path("."),
        seed=0,
    )
