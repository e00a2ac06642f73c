"""Width pruning: shapes, config, importance, stock save/load equality, clear errors."""

import copy

import pytest
import torch
from conftest import make_context
from transformers import AutoModelForCausalLM

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques import TECHNIQUES


def apply(model, tokenizer, **params):
    cls = TECHNIQUES["prune_width"]
    return cls().apply(model, cls.parse_params(params, "params"), make_context(model, tokenizer))


def test_pruned_shapes_and_config(tiny_model, tokenizer):
    # tiny: hidden 64, intermediate 128, 4 heads in 2 KV groups, head_dim 16
    apply(tiny_model, tokenizer, ffn_ratio=0.25, heads_ratio=0.5)
    cfg = tiny_model.config
    assert (cfg.intermediate_size, cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim) == (96, 2, 2, 16)
    for i in range(cfg.num_hidden_layers):
        m = {role: site.module for role, site in ModelAdapter(tiny_model).block_linears(i).items()}
        assert m["mlp.gate"].weight.shape == m["mlp.up"].weight.shape == (96, 64)
        assert m["mlp.down"].weight.shape == (64, 96)
        assert m["attn.q"].weight.shape == (32, 64) and m["attn.o"].weight.shape == (64, 32)
        assert m["attn.k"].weight.shape == m["attn.v"].weight.shape == (32, 64)
        if m["attn.q"].bias is not None:  # qwen2 has q/k/v biases: they follow the rows
            assert m["attn.q"].bias.shape == (32,) and m["attn.k"].bias.shape == (32,)
    ids = torch.randint(0, 320, (2, 12))
    assert tiny_model(ids).logits.shape == (2, 12, 320)


def test_kv_groups_are_removed_with_their_heads(tiny_model, tokenizer):
    apply(tiny_model, tokenizer, kv_groups_ratio=0.5)
    assert (tiny_model.config.num_attention_heads, tiny_model.config.num_key_value_heads) == (2, 1)
    assert ModelAdapter(tiny_model).block_linears(0)["attn.k"].module.out_features == 16


def test_saved_model_loads_with_stock_transformers_and_gives_the_same_logits(tiny_model, tokenizer, tmp_path):
    apply(tiny_model, tokenizer, ffn_ratio=0.5, heads_ratio=0.5, kv_groups_ratio=0.5)
    tiny_model.save_pretrained(tmp_path, safe_serialization=True)
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    ids = torch.randint(0, 320, (2, 16))
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, tiny_model(ids).logits, atol=1e-5)
    assert reloaded.config.intermediate_size == 64 and reloaded.config.num_attention_heads == 1
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in tiny_model.parameters())


def test_the_least_active_channels_and_heads_go(tiny_model, tokenizer):
    """Channels whose activation is silenced and the head whose output is zeroed are the ones removed."""
    adapter = ModelAdapter(tiny_model)
    reference = copy.deepcopy(tiny_model)
    silent = torch.arange(0, 128, 4)  # 32 channels = 25 %
    with torch.no_grad():
        for i in range(adapter.num_layers):
            m = adapter.block_linears(i)
            m["mlp.up"].module.weight[silent] = 0  # SwiGLU output 0 for these channels
            m["attn.v"].module.weight[16:32] = 0  # KV head 1 -> query heads 2 and 3 output only their bias
            if m["attn.v"].module.bias is not None:
                m["attn.v"].module.bias[16:32] = 0
    reference.load_state_dict(tiny_model.state_dict())
    apply(tiny_model, tokenizer, ffn_ratio=0.25, kv_groups_ratio=0.5)
    ids = torch.randint(0, 320, (2, 16))
    with torch.no_grad():  # removing exactly-zero contributions changes nothing
        assert torch.allclose(tiny_model(ids).logits, reference(ids).logits, atol=1e-4)
    assert tiny_model.config.num_key_value_heads == 1


def test_zero_ratios_change_nothing(tiny_model, tokenizer):
    reference = copy.deepcopy(tiny_model)
    apply(tiny_model, tokenizer)
    ids = torch.randint(0, 320, (2, 16))
    assert torch.equal(tiny_model(ids).logits, reference(ids).logits)


@pytest.mark.parametrize(
    "params, message",
    [
        ({"heads_ratio": 0.75}, "prune_width.heads_ratio: 0.75 would remove all 2 query heads of a KV group"),
        ({"kv_groups_ratio": 0.8}, "prune_width.kv_groups_ratio: 0.8 would remove all 2 KV groups"),
        ({"ffn_ratio": 0.999}, "prune_width.ffn_ratio: 0.999 would remove all 128 MLP channels"),
    ],
)
def test_impossible_ratios_are_clear_errors(tiny_model, tokenizer, params, message):
    with pytest.raises(ConfigError, match=message):
        apply(tiny_model, tokenizer, **params)
