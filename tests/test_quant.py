"""Invariants of the weight quantization methods, the per-module cache and determinism."""

import copy

import pytest
import torch
from conftest import make_context

from autocompress.errors import ConfigError
from autocompress.inputs import InputStats
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import weight_format
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.quantize.awq import awq, awq_scales
from autocompress.techniques.quantize.gptq import gptq
from autocompress.techniques.quantize.grid import QuantFormat, output_error, rtn


def layer_problem(seed: int = 0, cols: int = 128) -> tuple[torch.Tensor, InputStats]:
    """A weight and the statistics of correlated inputs with a few outlier channels (as in LLMs)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4096, cols, generator=gen) @ torch.randn(cols, cols, generator=gen) * 0.3
    x[:, :4] *= 20
    w = torch.randn(48, cols, generator=gen)
    return w, InputStats(x.T @ x / x.shape[0], x.pow(2).sum(0), x.abs().amax(0), x.abs().mean(0), x.shape[0])


def max_distinct_per_group(weight: torch.Tensor, group: int, tol: float = 0.0) -> int:
    """Most distinct values in one group; values closer than ``tol`` (relative) count as one."""
    rows, cols = weight.shape
    groups = weight.reshape(rows * (cols // group), group).sort(dim=1).values
    gaps = groups.diff(dim=1) > tol * groups.abs().amax(dim=1, keepdim=True)
    return int(gaps.sum(dim=1).max()) + 1


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 0])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_method_stores_at_most_2_to_the_bits_values_per_group(bits, group, symmetric):
    w, stats = layer_problem()
    fmt = QuantFormat(bits, group, symmetric)
    width = group or w.shape[1]
    assert max_distinct_per_group(gptq(w, stats.hessian, fmt).weight, width) <= 2**bits
    (effective,), alpha = awq([w], [fmt], stats)
    stored = effective.weight * awq_scales(stats.absmean, alpha)  # AWQ stores Q(W s); 1/s folds into the op before
    assert max_distinct_per_group(stored, width, tol=1e-5) <= 2**bits
    assert max_distinct_per_group(rtn(w, fmt), width) <= 2**bits


@pytest.mark.parametrize("bits,group", [(3, 32), (4, 32), (4, 0), (2, 64)])
def test_gptq_reconstructs_the_layer_output_better_than_rtn(bits, group):
    w, stats = layer_problem(seed=bits)
    fmt = QuantFormat(bits, group, symmetric=False)
    err_rtn = output_error(w, rtn(w, fmt), stats.hessian)
    err_gptq = output_error(w, gptq(w, stats.hessian, fmt).weight, stats.hessian)
    assert err_gptq < 0.6 * err_rtn


def test_gptq_with_an_identity_hessian_is_rtn():
    # Uncorrelated unit inputs leave nothing to compensate: GPTQ reduces to round to nearest.
    w, _ = layer_problem()
    fmt = QuantFormat(4, 32)
    assert torch.allclose(gptq(w, torch.eye(w.shape[1]), fmt, damp=0.0).weight, rtn(w, fmt), atol=1e-5)


def test_gptq_zeroes_weights_of_dead_inputs():
    w, stats = layer_problem()
    h = stats.hessian.clone()
    h[5, :] = h[:, 5] = 0
    assert torch.all(gptq(w, h, QuantFormat(4, 32)).weight[:, 5] == 0)


def test_awq_beats_rtn_on_outlier_channels_and_never_loses():
    w, stats = layer_problem()
    for bits in (3, 4):
        fmt = QuantFormat(bits, 32)
        (effective,), alpha = awq([w], [fmt], stats)
        err_rtn, err_awq = (output_error(w, a, stats.hessian) for a in (rtn(w, fmt), effective.weight))
        assert alpha > 0 and err_awq < 0.8 * err_rtn


def test_awq_scaled_model_equals_the_unscaled_one_before_quantization(tiny_model, tokenizer):
    """Fold 1/s into each RMSNorm and multiply the linears after it by s: same outputs in float."""
    ctx = make_context(tiny_model, tokenizer)
    ids = ctx.evaluation
    with torch.no_grad():
        before = tiny_model(input_ids=ids).logits
        adapter = ModelAdapter(tiny_model)
        for group, sites in adapter.input_groups():
            if group not in ("attn.in", "mlp.in"):
                continue
            s = 0.5 + 1.5 * torch.rand(sites[0].module.in_features, generator=torch.Generator().manual_seed(0))
            norm = adapter.input_norm(sites[0].layer, group)
            norm.weight.div_(s)
            for site in sites:
                site.module.weight.mul_(s)
        after = tiny_model(input_ids=ids).logits
    assert torch.allclose(before, after, atol=1e-4, rtol=1e-4)


def quantize(model, ctx, **params):
    cls = TECHNIQUES["quantize"]
    return cls().apply(model, cls.parse_params(params, "params"), ctx)


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_methods_quantize_the_model_and_record_formats(tiny_model, tokenizer, method):
    ctx = make_context(tiny_model, tokenizer)
    quantize(tiny_model, ctx, method=method, bits=3, group_size=32, overrides=[{"match": "mlp.down", "bits": 8}])
    for site in ModelAdapter(tiny_model).linear_sites():
        bits = 8 if site.role == "mlp.down" else 3
        fmt = weight_format(site.module)
        assert fmt.bits == bits and fmt.group_size == 32
        if method != "awq":  # AWQ's effective weight carries the folded 1/s per column
            assert max_distinct_per_group(site.module.weight, 32) <= 2**bits


def test_override_can_change_the_method(tiny_model, tokenizer):
    ctx = make_context(tiny_model, tokenizer)
    rtn_model, mixed = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    quantize(rtn_model, ctx, method="rtn", bits=3, group_size=32)
    quantize(mixed, ctx, method="rtn", bits=3, group_size=32, overrides=[{"match": "mlp.*", "method": "gptq"}])
    for a, b in zip(ModelAdapter(rtn_model).linear_sites(), ModelAdapter(mixed).linear_sites()):
        same = torch.equal(a.module.weight, b.module.weight)
        assert same == (not a.role.startswith("mlp."))


def cached_context(model, tokenizer, tmp_path, data="data-a"):
    ctx = make_context(model, tokenizer)
    ctx.cache_dir, ctx.model_digest, ctx.data_digest = tmp_path, "model-a", data
    return ctx


def test_weight_cache_hits_give_identical_weights_and_skip_statistics(tiny_model, tokenizer, tmp_path, monkeypatch):
    from autocompress.techniques.quantize import linears as qmod

    base = copy.deepcopy(tiny_model)
    cold = qmod.quantize_linears(
        tiny_model,
        qmod.plan(ModelAdapter(tiny_model), qmod.QuantizeParams(method="gptq", bits=4, group_size=32)),
        cached_context(base, tokenizer, tmp_path),
    )
    n = len(ModelAdapter(tiny_model).linear_sites())
    assert (cold.hits, cold.misses) == (0, n)
    assert len(list((tmp_path / "quant-weights").rglob("*.safetensors"))) == n

    def no_stats(*args, **kwargs):
        raise AssertionError("a warm cache must not recompute calibration statistics")

    monkeypatch.setattr(qmod, "input_stats", no_stats)
    warm_model = copy.deepcopy(base)
    warm = qmod.quantize_linears(
        warm_model,
        qmod.plan(ModelAdapter(warm_model), qmod.QuantizeParams(method="gptq", bits=4, group_size=32)),
        cached_context(base, tokenizer, tmp_path),
    )
    assert (warm.hits, warm.misses) == (n, 0)
    for a, b in zip(tiny_model.parameters(), warm_model.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("change", ["data", "model", "bits", "method"])
def test_weight_cache_is_invalidated_by_model_data_and_choices(tiny_model, tokenizer, tmp_path, change):
    from autocompress.techniques.quantize import linears as qmod

    params = dict(method="gptq", bits=4, group_size=32)
    first = copy.deepcopy(tiny_model)
    quantize(first, cached_context(tiny_model, tokenizer, tmp_path), **params)
    ctx = cached_context(tiny_model, tokenizer, tmp_path, data="data-b" if change == "data" else "data-a")
    if change == "model":
        ctx.model_digest = "model-b"
    params |= {"bits": 3} if change == "bits" else {"method": "awq"} if change == "method" else {}
    model = copy.deepcopy(tiny_model)
    cache = qmod.quantize_linears(model, qmod.plan(ModelAdapter(model), qmod.QuantizeParams(**params)), ctx)
    assert cache.hits == 0 and cache.misses == len(ModelAdapter(model).linear_sites())


def test_awq_cache_key_depends_on_the_sibling_formats(tiny_model, tokenizer, tmp_path):
    from autocompress.techniques.quantize import linears as qmod

    ctx = cached_context(tiny_model, tokenizer, tmp_path)
    quantize(copy.deepcopy(tiny_model), ctx, method="awq", bits=4, group_size=32)
    model = copy.deepcopy(tiny_model)
    params = qmod.QuantizeParams(method="awq", bits=4, group_size=32, overrides=[{"match": "attn.k", "bits": 8}])
    cache = qmod.quantize_linears(model, qmod.plan(ModelAdapter(model), params), ctx)
    layers = ModelAdapter(model).num_layers
    assert cache.misses == 3 * layers  # q, k, v share AWQ's scale; o, gate/up and down hit
    assert cache.hits == 4 * layers


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_same_recipe_gives_bit_identical_weights(tiny_model, tokenizer, method):
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    quantize(a, make_context(a, tokenizer), method=method, bits=3, group_size=32)
    quantize(b, make_context(b, tokenizer), method=method, bits=3, group_size=32)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


def test_unsupported_combinations_fail_with_one_line(tiny_model, tokenizer):
    ctx = make_context(tiny_model, tokenizer)
    with pytest.raises(ConfigError, match=r"overrides\[0\]\.bits"):
        TECHNIQUES["quantize"].parse_params({"overrides": [{"match": "mlp.*", "bits": 5}]}, "params")
    with pytest.raises(ConfigError, match="48 does not divide the input width 64"):
        quantize(tiny_model, ctx, method="gptq", bits=4, group_size=48)
    with pytest.raises(ConfigError, match="does not divide the input width 128 of .*down_proj"):
        quantize(tiny_model, ctx, method="awq", bits=4, overrides=[{"match": "mlp.down", "group_size": 96}])
    quantize(tiny_model, ctx, bits=16, group_size=48, kv_bits=8)  # 16 bits is fp16: no groups to divide


def test_allocation_spends_the_budget_on_the_most_sensitive_layers():
    from autocompress.techniques.quantize.sensitivity import allocate_bits, bits_budget

    sizes = {"a": 100, "b": 100, "c": 200, "d": 100}
    errors = {"a": [9.0, 1.0], "b": [2.0, 1.5], "c": [30.0, 2.0], "d": [0.5, 0.4]}  # at 3 and 4 bits
    bits = allocate_bits(errors, [3, 4], [bits_budget(sizes, [3, 4], 3.6)])  # 300 extra bits x params: c + a
    assert bits == {"a": 4, "b": 3, "c": 4, "d": 3}
    assert sum(bits[n] * sizes[n] for n in sizes) / sum(sizes.values()) <= 3.6
    assert allocate_bits(errors, [3, 4], [bits_budget(sizes, [3, 4], 3.0)]) == dict.fromkeys(sizes, 3)
    # A second budget that makes "c" expensive: the error per unit of the first cost decides, both must hold.
    latency = {"a": [0.0, 1.0], "b": [0.0, 1.0], "c": [0.0, 5.0], "d": [0.0, 1.0]}
    budgets = [(latency, 2.0), bits_budget(sizes, [3, 4], 4.0)]
    assert allocate_bits(errors, [3, 4], budgets) == {"a": 4, "b": 4, "c": 3, "d": 3}
    flip = lambda table: {n: v[::-1] for n, v in table.items()}  # noqa: E731  (choices in any order)
    budgets = [(flip(latency), 2.0), bits_budget(sizes, [4, 3], 4.0)]
    assert allocate_bits(flip(errors), [4, 3], budgets) == {"a": 4, "b": 4, "c": 3, "d": 3}


@pytest.mark.parametrize("proxy", ["gptq", "fisher"])
def test_sensitivity_allocation_meets_the_average_and_is_cached(tiny_model, tokenizer, tmp_path, monkeypatch, proxy):
    from autocompress.techniques.quantize import linears as qmod
    from autocompress.techniques.quantize import sensitivity

    base = copy.deepcopy(tiny_model)
    quantize(
        tiny_model,
        cached_context(base, tokenizer, tmp_path),
        method="gptq",
        group_size=32,
        allocation="sensitivity",
        avg_bits=3.5,
        bit_choices=[3, 4],
        sensitivity_proxy=proxy,
    )
    sites = ModelAdapter(tiny_model).linear_sites()
    bits = [weight_format(s.module).bits for s in sites]
    sizes = [s.module.weight.numel() for s in sites]
    avg = sum(b * n for b, n in zip(bits, sizes)) / sum(sizes)
    assert 3.5 - max(sizes) / sum(sizes) <= avg <= 3.5 and set(bits) == {3, 4}
    assert len(list((tmp_path / "calibration").glob("sensitivity-*.safetensors"))) == 1
    monkeypatch.setattr(sensitivity, "input_stats", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    monkeypatch.setattr(sensitivity, "fisher_diagonal", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    monkeypatch.setattr(qmod, "input_stats", lambda *a: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = copy.deepcopy(base)
    quantize(
        again,
        cached_context(base, tokenizer, tmp_path),
        method="gptq",
        group_size=32,
        allocation="sensitivity",
        avg_bits=3.5,
        bit_choices=[3, 4],
        sensitivity_proxy=proxy,
    )
    assert [weight_format(s.module).bits for s in ModelAdapter(again).linear_sites()] == bits


def test_fisher_proxy_sees_what_the_loss_sees(tiny_model, tokenizer):
    """A linear whose output cannot reach the loss (its block's o_proj is zero) costs nothing by the loss-aware
    proxy, whatever its own output error; the layer-output proxy still charges it."""
    from autocompress.techniques.quantize.sensitivity import fisher_diagonal, layer_sensitivity

    adapter = ModelAdapter(tiny_model)
    with torch.no_grad():
        adapter.block_linears(0)["attn.o"].module.weight.zero_()
    flags = [p.requires_grad for p in tiny_model.parameters()]
    before = [p.detach().clone() for p in tiny_model.parameters()]
    ctx = make_context(tiny_model, tokenizer)
    fisher = layer_sensitivity(tiny_model, ctx, [3, 4], 32, True, "fisher")
    gptq_table = layer_sensitivity(tiny_model, ctx, [3, 4], 32, True, "gptq")
    v = adapter.block_linears(0)["attn.v"].name
    assert fisher[v] == [0.0, 0.0] and min(gptq_table[v]) > 0
    others = [n for n in fisher if ".0." not in n]
    assert all(fisher[n][0] > fisher[n][1] > 0 for n in others)  # fewer bits, larger predicted loss rise
    assert [p.requires_grad for p in tiny_model.parameters()] == flags  # restored, weights untouched
    assert all(torch.equal(a, b) for a, b in zip(before, tiny_model.parameters()))
    diag = fisher_diagonal(tiny_model, ctx.batches(ctx.calibration))
    assert all(
        diag[s.name].shape == s.module.weight.shape and (diag[s.name] >= 0).all() for s in adapter.linear_sites()
    )
    with pytest.raises(
        ConfigError, match=r"sensitivity_proxy: .*unknown sensitivity proxy 'hutch'; allowed: fisher, gptq"
    ):
        TECHNIQUES["quantize"].parse_params({"allocation": "sensitivity", "sensitivity_proxy": "hutch"}, "params")


def test_sensitivity_allocation_needs_a_reachable_budget():
    with pytest.raises(ConfigError, match=r"^params\.avg_bits: 5 cannot be met .*allowed: 3 to 4$"):
        TECHNIQUES["quantize"].parse_params(
            {"allocation": "sensitivity", "avg_bits": 5, "bit_choices": [3, 4]}, "params"
        )
    with pytest.raises(ConfigError, match=r"^params\.avg_bits: 8 cannot be met"):  # the default budget is bits
        TECHNIQUES["quantize"].parse_params({"allocation": "sensitivity", "bits": 8, "bit_choices": [3, 4]}, "params")


def attention_outputs(model, ids):
    """The input of every o_proj: the attention heads' output before the projection."""
    outs = []
    hooks = [
        s.module.register_forward_hook(lambda m, a, o: outs.append(a[0].detach()))
        for s in ModelAdapter(model).linear_sites()
        if s.role == "attn.o"
    ]
    with torch.no_grad():
        model(input_ids=ids)
    for h in hooks:
        h.remove()
    return torch.cat([o.flatten() for o in outs])


def test_kv_bits_change_attention_outputs_by_a_bounded_amount(tiny_model, tokenizer):
    from autocompress.hardware.profile import profile_model

    ctx = make_context(tiny_model, tokenizer)
    ref = attention_outputs(tiny_model, ctx.evaluation)
    rel = {}
    for bits in (8, 4):
        model = copy.deepcopy(tiny_model)
        quantize(model, make_context(model, tokenizer), bits=16, kv_bits=bits)
        rel[bits] = ((attention_outputs(model, ctx.evaluation) - ref).norm() / ref.norm()).item()
        profile = profile_model(model)
        assert profile.kv_bits == bits
        assert profile.kv_cache_bytes(100) == profile_model(tiny_model).kv_cache_bytes(100) * bits / 16
    assert 0 < rel[8] < 0.01 and rel[8] < rel[4] < 0.2


def test_activation_quant_and_smoothing(tiny_model, tokenizer):
    """W8A8: per-token activation rounding changes the outputs a little; SmoothQuant's folded
    scales leave the float model unchanged."""
    from autocompress.inputs import collect_input_stats
    from autocompress.techniques.quantize.activations import smooth

    ctx = make_context(tiny_model, tokenizer)
    with torch.no_grad():
        ref = tiny_model(input_ids=ctx.evaluation).logits
        smoothed = copy.deepcopy(tiny_model)
        scales = smooth(smoothed, collect_input_stats(smoothed, ctx.batches(ctx.calibration)), 0.5)
        assert len(scales) == 5 * ModelAdapter(tiny_model).num_layers  # q, k, v, gate, up
        assert torch.allclose(smoothed(input_ids=ctx.evaluation).logits, ref, atol=1e-4, rtol=1e-4)
        a8 = copy.deepcopy(tiny_model)
        quantize(a8, make_context(a8, tokenizer), bits=16, act_bits=8)
        err = (a8(input_ids=ctx.evaluation).logits - ref).norm() / ref.norm()
    assert 0 < err < 0.05
    with pytest.raises(ConfigError, match="smoothquant_alpha: .*set act_bits: 8"):
        TECHNIQUES["quantize"].parse_params({"smoothquant_alpha": 0.5}, "params")


def test_smoothquant_weights_are_cached_apart_from_unsmoothed_ones(tiny_model, tokenizer, tmp_path):
    from autocompress.techniques.quantize import linears as qmod

    quantize(
        copy.deepcopy(tiny_model),
        cached_context(tiny_model, tokenizer, tmp_path),
        method="gptq",
        bits=8,
        group_size=32,
        act_bits=8,
    )
    model = copy.deepcopy(tiny_model)
    params = qmod.QuantizeParams(method="gptq", bits=8, group_size=32, act_bits=8, smoothquant_alpha=0.5)
    from autocompress.techniques.quantize.activations import smooth

    ctx = cached_context(tiny_model, tokenizer, tmp_path)
    scales = smooth(model, qmod.input_stats(model, ctx), 0.5)
    cache = qmod.quantize_linears(model, qmod.plan(ModelAdapter(model), params), ctx, prescale=scales, tag="sq0.5")
    assert cache.misses == len(ModelAdapter(model).linear_sites())


@pytest.mark.parametrize("n", [64, 48, 576])
def test_hadamard_is_orthogonal(n):
    from autocompress.techniques.quantize.rotation import hadamard

    q = hadamard(n)
    assert torch.allclose(q @ q.T, torch.eye(n, dtype=q.dtype), atol=1e-10)


def test_rotation_leaves_float_outputs_unchanged_and_unties_the_head(tiny_model, tokenizer):
    from autocompress.techniques.quantize.rotation import rotate

    ctx = make_context(tiny_model, tokenizer)
    rotated = copy.deepcopy(tiny_model)
    rotate(rotated)
    with torch.no_grad():
        ref, out = (m(input_ids=ctx.evaluation).logits for m in (tiny_model, rotated))
    assert (out - ref).abs().max() < 1e-4 * ref.abs().max()
    assert not ModelAdapter(rotated).tied_embeddings and not rotated.config.tie_word_embeddings
    emb = rotated.get_input_embeddings().weight
    assert not torch.allclose(emb, tiny_model.get_input_embeddings().weight, atol=1e-3)  # really rotated


@pytest.mark.parametrize("symmetric", [True, False])  # an asymmetric format also stores zero points
def test_latency_budget_allocation_keeps_the_predicted_decode_within_budget(tiny_model, tokenizer, tmp_path, symmetric):
    from autocompress.hardware import Workload, cost_metrics, load_target, profile_model

    target = load_target("raspberry-pi-5")

    def decode_ms(model):
        return cost_metrics(profile_model(model), [target], Workload())["raspberry-pi-5.decode_ms_per_token"]

    uniform = {}
    for bits in (3, 8):
        uniform[bits] = copy.deepcopy(tiny_model)
        quantize(uniform[bits], make_context(tiny_model, tokenizer), bits=bits, group_size=32, symmetric=symmetric)
    chosen = []
    for fraction in (0.0, 0.5, 1.0):
        budget = decode_ms(uniform[3]) + fraction * (decode_ms(uniform[8]) - decode_ms(uniform[3]))
        model = copy.deepcopy(tiny_model)
        quantize(
            model,
            cached_context(tiny_model, tokenizer, tmp_path),
            group_size=32,
            allocation="sensitivity",
            symmetric=symmetric,
            bit_choices=[3, 8],
            latency_budget={"target": "raspberry-pi-5", "decode_ms_per_token": budget},
        )
        assert decode_ms(model) <= budget * (1 + 1e-9)
        chosen.append(sum(weight_format(s.module).bits == 8 for s in ModelAdapter(model).linear_sites()))
    assert chosen[0] == 0 and chosen[0] < chosen[1] < chosen[2] == len(ModelAdapter(tiny_model).linear_sites())
    with pytest.raises(
        ConfigError,
        match=r"quantize.latency_budget.decode_ms_per_token: .* cannot be met on "
        r"raspberry-pi-5: every linear at 3 bits",
    ):
        quantize(
            copy.deepcopy(tiny_model),
            make_context(tiny_model, tokenizer),
            group_size=32,
            allocation="sensitivity",
            bit_choices=[3, 8],
            latency_budget={"target": "raspberry-pi-5", "decode_ms_per_token": decode_ms(uniform[3]) * 0.99},
        )
    with pytest.raises(ConfigError, match="latency_budget: allocating bits under a latency budget needs allocation"):
        TECHNIQUES["quantize"].parse_params(
            {"latency_budget": {"target": "raspberry-pi-5", "decode_ms_per_token": 5}}, "params"
        )


# ---- sequential quantization ---------------------------------------------------------------------


def assert_same_stats(a, b):
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].tokens == b[name].tokens
        assert torch.allclose(a[name].hessian, b[name].hessian, rtol=1e-4, atol=1e-5), name
        assert torch.allclose(a[name].absmean, b[name].absmean, rtol=1e-4, atol=1e-6), name


def test_layer_inputs_give_each_blocks_statistics_of_the_model_as_it_is(tiny_model, tokenizer):
    from autocompress.inputs import LayerInputs, collect_input_stats

    batches = make_context(tiny_model, tokenizer).batches(make_context(tiny_model, tokenizer).calibration)
    adapter = ModelAdapter(tiny_model)
    inputs = LayerInputs(tiny_model, batches)
    with torch.no_grad():
        for layer in range(adapter.num_layers):
            # Change the blocks before this one, as sequential quantization does; the block-by-block
            # statistics must follow the model as it is now, not as it was.
            if layer > 0:
                for site in adapter.linear_sites():
                    if site.layer == layer - 1:
                        site.module.weight.copy_(rtn(site.module.weight, QuantFormat(2, 32, False)))
            whole = collect_input_stats(tiny_model, batches)
            assert_same_stats(
                inputs.stats(layer), {s.name: whole[s.name] for s in adapter.linear_sites() if s.layer == layer}
            )
    with pytest.raises(ValueError, match="walk blocks in order"):
        inputs.stats(0)


def test_sequential_changes_nothing_for_a_method_without_statistics(tiny_model, tokenizer):
    a, b = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    quantize(a, make_context(a, tokenizer), method="rtn", bits=3, group_size=32)
    quantize(b, make_context(b, tokenizer), method="rtn", bits=3, group_size=32, sequential=True)
    for x, y in zip(a.parameters(), b.parameters()):
        assert torch.equal(x, y)


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_sequential_statistics_differ_from_the_base_models_and_are_deterministic(tiny_model, tokenizer, method):
    once, again, plain = (copy.deepcopy(tiny_model) for _ in range(3))
    for model, sequential in ((once, True), (again, True), (plain, False)):
        quantize(model, make_context(model, tokenizer), method=method, bits=3, group_size=32, sequential=sequential)
    changed: dict[int, bool] = {}
    for a, b, c in zip(*(ModelAdapter(m).linear_sites() for m in (once, again, plain))):
        assert torch.equal(a.module.weight, b.module.weight)
        changed[a.layer] = changed.get(a.layer, False) or not torch.equal(a.module.weight, c.module.weight)
    # Block 0 sees the same inputs either way; later blocks see the quantized blocks' outputs.
    assert changed == {layer: layer > 0 for layer in changed}


def test_sequential_cache_keys_follow_the_blocks_before(tiny_model, tokenizer, tmp_path):
    from autocompress.techniques.quantize import linears as qmod

    layers = ModelAdapter(tiny_model).num_layers
    per_layer = len(ModelAdapter(tiny_model).linear_sites()) // layers

    def run(**overrides):
        model = copy.deepcopy(tiny_model)
        params = qmod.QuantizeParams(method="gptq", bits=4, group_size=32, sequential=True, **overrides)
        return qmod.quantize_linears(
            model,
            qmod.plan(ModelAdapter(model), params),
            cached_context(tiny_model, tokenizer, tmp_path),
            sequential=True,
        )

    assert run().misses == layers * per_layer
    last = run(overrides=[{"match": "*", "layers": f"{layers - 1}-", "bits": 8}])
    assert (last.hits, last.misses) == ((layers - 1) * per_layer, per_layer)  # only the last block changed
    first = run(overrides=[{"match": "*", "layers": "0-0", "bits": 8}])
    assert first.hits == 0  # every later block's inputs changed with block 0
