import json

import pytest
import torch
from conftest import SHARED_DATA, build_model

from autocompress.cache import cache_root
from autocompress.data.text import load_text
from autocompress.errors import ConfigError
from autocompress.recipe import TextSpec

SPEC = dict(seq_len=16, calibration_samples=3, eval_samples=2)


def test_generated_text_is_seeded_cached_and_split(tokenizer):
    model = build_model("llama")
    with torch.no_grad():  # undo the fixture's sharpening so that sampling is diverse
        model.get_input_embeddings().weight.div_(10)
    first = load_text(TextSpec(**SPEC), tokenizer, model, "digest-a", seed=1)
    assert first.calibration.shape == (3, 16) and first.evaluation.shape == (2, 16)
    cached = list((cache_root() / "text").glob("generated-*.safetensors"))
    assert cached
    again = load_text(TextSpec(**SPEC), tokenizer, model, "digest-a", seed=1)
    assert torch.equal(first.calibration, again.calibration) and first.digest == again.digest
    other_seed = load_text(TextSpec(**SPEC), tokenizer, model, "digest-a", seed=2)
    assert not torch.equal(first.calibration, other_seed.calibration)


@pytest.mark.parametrize("kind", ["txt", "jsonl", "folder"])
def test_file_text_gives_disjoint_blocks(tmp_path, tokenizer, kind):
    text = ". ".join(f"sentence {i} says {i * 7 % 13} things" for i in range(400))  # no repeated blocks
    if kind == "jsonl":
        path = tmp_path / "data.jsonl"
        path.write_text("\n".join(json.dumps({"text": line}) for line in text.split(". ")))
    else:
        path = tmp_path / "data.txt"
        path.write_text(text)
    source = tmp_path if kind == "folder" else path
    data = load_text(TextSpec(source=str(source), **SPEC), tokenizer, None, "unused", seed=0)
    rows = {tuple(r.tolist()) for r in torch.cat([data.calibration, data.evaluation])}
    assert data.calibration.shape == (3, 16) and len(rows) == 5  # no block is used twice


def test_too_little_text_names_the_field(tmp_path, tokenizer):
    (tmp_path / "tiny.txt").write_text("just a few words")
    with pytest.raises(ConfigError, match="calibration: the text has 0 blocks"):
        load_text(TextSpec(source=str(tmp_path / "tiny.txt"), **SPEC), tokenizer, None, "unused", seed=0)


@pytest.mark.skipif(not (SHARED_DATA / "wikitext-2-raw").is_dir(), reason="../shared/data not present")
def test_wikitext_folder_from_shared_data(tokenizer):
    spec = TextSpec(source=str(SHARED_DATA / "wikitext-2-raw"), seq_len=64, calibration_samples=4, eval_samples=4)
    data = load_text(spec, tokenizer, None, "unused", seed=0)
    assert data.evaluation.shape == (4, 64)
