import copy

import pytest
import torch
from conftest import make_context
from transformers import AutoModelForCausalLM

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import weight_format
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.prune_depth import block_influence
from autocompress.techniques.quantize.grid import QuantFormat, rtn
from autocompress.techniques.sparsify.masks import magnitude_mask


def apply(model, technique, tokenizer, **params):
    cls = TECHNIQUES[technique]
    return cls().apply(model, cls.parse_params(params, "params"), make_context(model, tokenizer))


def distinct_per_group(weight, group):
    rows, cols = weight.shape
    groups = weight.reshape(rows, cols // group, group)
    return max(len(torch.unique(groups[r, g])) for r in range(rows) for g in range(cols // group))


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("symmetric", [True, False])
def test_rtn_uses_at_most_2_to_the_bits_values_per_group(bits, symmetric):
    w = torch.randn(16, 128)
    q = rtn(w, QuantFormat(bits, 32, symmetric))
    assert distinct_per_group(q, 32) <= 2**bits
    assert distinct_per_group(q, 32) >= min(2**bits, 32) // 2  # it really uses the grid
    assert (q - w).abs().max() < w.abs().max() / (2 ** (bits - 1) - 0.5)


def test_rtn_error_falls_with_more_bits_and_smaller_groups():
    w = torch.randn(64, 256)
    err = {(b, g): (rtn(w, QuantFormat(b, g)) - w).pow(2).mean().item() for b in (3, 4, 8) for g in (32, 0)}
    assert err[(3, 32)] > err[(4, 32)] > err[(8, 32)]
    assert err[(4, 0)] > err[(4, 32)]


def test_rtn_16_bits_is_fp16_rounding():
    w = torch.randn(8, 64)
    assert torch.equal(rtn(w, QuantFormat(16, 128)), w.half().float())


def test_quantize_overrides_per_group_and_records_formats(tiny_model, tokenizer):
    apply(
        tiny_model,
        "quantize",
        tokenizer,
        bits=2,
        group_size=32,
        overrides=[{"match": "mlp.*", "layers": "late", "bits": 8}],
    )
    adapter = ModelAdapter(tiny_model)
    for site in adapter.linear_sites():
        late_mlp = site.role.startswith("mlp.") and site.layer >= adapter.num_layers // 2
        expected = 8 if late_mlp else 2
        assert weight_format(site.module).bits == expected
        assert distinct_per_group(site.module.weight, 32) <= 2**expected
        if not late_mlp:
            assert distinct_per_group(site.module.weight, 32) <= 4


def test_embeddings_are_compressed_only_when_asked(tiny_model, tokenizer):
    before = tiny_model.get_input_embeddings().weight.clone()
    apply(tiny_model, "quantize", tokenizer, bits=4, group_size=32)
    assert torch.equal(tiny_model.get_input_embeddings().weight, before)
    apply(tiny_model, "quantize", tokenizer, bits=4, group_size=32, embeddings=True)
    emb = tiny_model.get_input_embeddings().weight
    assert distinct_per_group(emb, 32) <= 16
    assert tiny_model.get_output_embeddings().weight is emb  # still tied, quantized once
    assert weight_format(tiny_model.get_output_embeddings()).bits == 4


def test_group_size_must_divide_the_width(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="48 does not divide the input width 64"):
        apply(tiny_model, "quantize", tokenizer, bits=4, group_size=48)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.9])
def test_magnitude_sparsity_is_exact_per_linear(tiny_model, tokenizer, sparsity):
    apply(tiny_model, "sparsify", tokenizer, sparsity=sparsity)
    for site in ModelAdapter(tiny_model).linear_sites():
        w = site.module.weight
        assert abs((w == 0).float().mean().item() - sparsity) <= 1 / w.numel()


def test_magnitude_keeps_the_largest_weights():
    w = torch.randn(32, 32)
    mask = magnitude_mask(w, 0.75)
    assert w[mask].abs().min() >= w[~mask].abs().max()


def test_sparsity_override_for_attention(tiny_model, tokenizer):
    apply(tiny_model, "sparsify", tokenizer, sparsity=0.2, overrides=[{"match": "attn.*", "sparsity": 0.6}])
    for site in ModelAdapter(tiny_model).linear_sites():
        expected = 0.6 if site.role.startswith("attn.") else 0.2
        assert abs((site.module.weight == 0).float().mean().item() - expected) < 0.01


def test_depth_pruning_drops_the_least_influential_blocks(tiny_model, tokenizer):
    adapter = ModelAdapter(tiny_model)
    with torch.no_grad():  # make block 2 an identity: its output projections write nothing
        adapter.layers[2].self_attn.o_proj.weight.zero_()
        adapter.layers[2].mlp.down_proj.weight.zero_()
    survivors = [adapter.layers[i] for i in (0, 1, 3)]
    ctx = make_context(tiny_model, tokenizer)
    influence = block_influence(tiny_model, ctx.batches(ctx.calibration))
    assert influence.argmin().item() == 2 and influence[2] < 1e-6
    apply(tiny_model, "prune_depth", tokenizer, drop_layers=1)
    assert list(ModelAdapter(tiny_model).layers) == survivors
    assert tiny_model.config.num_hidden_layers == 3


def test_dropping_zero_layers_changes_nothing(tiny_model, tokenizer):
    reference = copy.deepcopy(tiny_model)
    apply(tiny_model, "prune_depth", tokenizer, drop_layers=0)
    ids = torch.randint(0, 320, (2, 16))
    assert torch.equal(tiny_model(ids).logits, reference(ids).logits)


def test_cannot_drop_every_layer(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="drop_layers: 4 must be less than the model's 4 layers"):
        apply(tiny_model, "prune_depth", tokenizer, drop_layers=4)


def test_compressed_model_saves_and_reloads_with_stock_transformers(tiny_model, tokenizer, tmp_path):
    apply(tiny_model, "prune_depth", tokenizer, drop_layers=2)
    apply(tiny_model, "sparsify", tokenizer, sparsity=0.5)
    apply(tiny_model, "quantize", tokenizer, bits=4, group_size=32, embeddings=True)
    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 320, (2, 16))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, tiny_model(ids).logits, atol=1e-5)
    assert reloaded.config.num_hidden_layers == 2


def test_magnitude_sparsity_is_exact_with_tied_magnitudes():
    w = torch.randint(-8, 8, (96, 64)).float()  # 16 distinct values: ties everywhere
    for sparsity in (0.1, 0.5, 0.9):
        mask = magnitude_mask(w, sparsity)
        assert int((~mask).sum()) == round(sparsity * w.numel())
        assert w[mask].abs().min() >= w[~mask].abs().max()
