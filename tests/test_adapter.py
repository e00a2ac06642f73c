import torch
from torch import nn

from autocompress.models.adapter import ModelAdapter


def test_roles_cover_every_decoder_linear(tiny_model):
    adapter = ModelAdapter(tiny_model)
    sites = adapter.linear_sites()
    n_linear = sum(isinstance(m, nn.Linear) for m in adapter.layers.modules())
    assert len(sites) == n_linear == 7 * adapter.num_layers
    assert {s.role for s in sites} == {"attn.q", "attn.k", "attn.v", "attn.o", "mlp.gate", "mlp.up", "mlp.down"}
    assert [s.layer for s in sites[:7]] == [0] * 7


def test_geometry_and_tied_head(tiny_model):
    adapter = ModelAdapter(tiny_model)
    assert (adapter.num_layers, adapter.num_heads, adapter.num_kv_heads, adapter.head_dim) == (4, 4, 2, 16)
    assert adapter.tied_embeddings
    assert adapter.linear_sites(include_lm_head=True)[-1].role == "lm_head"


def test_keep_layers_updates_config_and_cache_indices(tiny_model):
    adapter = ModelAdapter(tiny_model)
    kept = [adapter.layers[1], adapter.layers[3]]
    adapter.keep_layers([3, 1])
    assert list(ModelAdapter(tiny_model).layers) == kept
    assert tiny_model.config.num_hidden_layers == 2
    assert [layer.self_attn.layer_idx for layer in ModelAdapter(tiny_model).layers] == [0, 1]
    ids = torch.randint(0, 320, (1, 8))
    out = tiny_model.generate(ids, max_new_tokens=4, do_sample=False)  # the KV cache follows the new indices
    assert out.shape == (1, 12)
