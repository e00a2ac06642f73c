import torch
from conftest import make_context
from safetensors import safe_open

from autocompress.inputs import collect_input_stats, input_stats
from autocompress.models.adapter import ModelAdapter


def test_stats_match_a_direct_computation(tiny_model, tokenizer):
    ctx = make_context(tiny_model, tokenizer)
    stats = collect_input_stats(tiny_model, ctx.batches(ctx.calibration))
    sites = ModelAdapter(tiny_model).linear_sites()
    assert set(stats) == {s.name for s in sites}
    down = next(s for s in sites if s.role == "mlp.down" and s.layer == 1)
    captured = []
    handle = down.module.register_forward_hook(lambda m, a, o: captured.append(a[0].reshape(-1, a[0].shape[-1])))
    with torch.no_grad():
        tiny_model(input_ids=ctx.calibration)
    handle.remove()
    x = torch.cat(captured).double()
    s = stats[down.name]
    assert s.tokens == x.shape[0]
    assert torch.allclose(s.hessian.double(), x.T @ x / x.shape[0], rtol=1e-4, atol=1e-6)
    assert torch.allclose(s.absmax.double(), x.abs().amax(0), rtol=1e-5)
    assert torch.allclose(s.sq_norm.double(), x.pow(2).sum(0), rtol=1e-4)


def test_linears_reading_the_same_input_share_statistics(tiny_model, tokenizer):
    ctx = make_context(tiny_model, tokenizer)
    stats = collect_input_stats(tiny_model, ctx.batches(ctx.calibration))
    layer = ModelAdapter(tiny_model).layers_path + ".0"
    assert stats[f"{layer}.self_attn.q_proj"] is stats[f"{layer}.self_attn.k_proj"]
    assert stats[f"{layer}.mlp.gate_proj"] is stats[f"{layer}.mlp.up_proj"]
    assert stats[f"{layer}.mlp.down_proj"] is not stats[f"{layer}.mlp.up_proj"]


def test_disk_cache_hits_and_is_keyed_by_the_data(tiny_model, tokenizer, tmp_path):
    ctx = make_context(tiny_model, tokenizer)
    ctx.cache_dir, ctx.model_digest, ctx.data_digest = tmp_path, "model-a", "data-a"
    first = input_stats(tiny_model, ctx)
    files = list((tmp_path / "calibration").glob("*.safetensors"))
    assert len(files) == 1
    ctx._memo.clear()
    again = input_stats(tiny_model, ctx)  # read back from disk
    assert again.keys() == first.keys()
    for name in first:
        assert torch.equal(first[name].hessian, again[name].hessian) and first[name].tokens == again[name].tokens
    # linears that read one input share one entry, on disk (stored once) as in memory
    q, k = (next(n for n in first if n.endswith(suffix)) for suffix in ("0.self_attn.q_proj", "0.self_attn.k_proj"))
    assert first[q] is first[k] and again[q] is again[k]
    with safe_open(str(files[0]), framework="pt") as f:
        assert not any(key.startswith(k + "/") for key in f.keys())
    ctx._memo.clear()
    ctx.data_digest = "data-b"
    input_stats(tiny_model, ctx)
    assert len(list((tmp_path / "calibration").glob("*.safetensors"))) == 2


def test_every_linear_gets_statistics_of_its_own_input_width(tiny_model, tokenizer):
    """Input tensors freed during the forward must not be mistaken for shared ones (id reuse)."""
    from conftest import make_context

    from autocompress.inputs import collect_input_stats
    from autocompress.models.adapter import ModelAdapter

    ctx = make_context(tiny_model, tokenizer)
    stats = collect_input_stats(tiny_model, ctx.batches(ctx.calibration))
    for site in ModelAdapter(tiny_model).linear_sites():
        assert stats[site.name].sq_norm.shape == (site.module.in_features,), site.name
