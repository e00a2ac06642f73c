"""Wanda, SparseGPT and N:M sparsity on tiny models of two architectures."""

import pytest
import torch
from conftest import make_context

from autocompress.errors import ConfigError
from autocompress.inputs import InputStats, collect_input_stats
from autocompress.models.adapter import ModelAdapter
from autocompress.recipe import Recipe
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.sparsify.masks import SparsityTarget
from autocompress.techniques.sparsify.methods import wanda_prune
from autocompress.techniques.sparsify.sparsegpt import sparsegpt_prune

METHODS = ["magnitude", "wanda", "sparsegpt"]


def apply(model, tokenizer, **params):
    cls = TECHNIQUES["sparsify"]
    ctx = make_context(model, tokenizer)
    return cls().apply(model, cls.parse_params(params, "params"), ctx), ctx


def zero_fraction(w):
    return (w == 0).float().mean().item()


@pytest.mark.parametrize("method", METHODS)
def test_unstructured_sparsity_is_exact_per_linear(tiny_model, tokenizer, method):
    apply(tiny_model, tokenizer, method=method, sparsity=0.5)
    for site in ModelAdapter(tiny_model).linear_sites():
        w = site.module.weight
        assert zero_fraction(w) == pytest.approx(0.5, abs=1e-9), site.name
        if method == "wanda":  # Wanda compares within each output row: every row is exactly half zeros
            assert ((w == 0).sum(1) == w.shape[1] // 2).all()


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_n_m_pattern_holds_in_every_group(tiny_model, tokenizer, method, pattern):
    n, m = map(int, pattern.split(":"))
    apply(tiny_model, tokenizer, method=method, pattern=pattern)
    for site in ModelAdapter(tiny_model).linear_sites():
        w = site.module.weight
        nonzero = (w.reshape(w.shape[0], -1, m) != 0).sum(-1)
        assert (nonzero == n).all(), site.name  # exactly N kept (random weights are never exactly 0)


def test_per_group_overrides_mix_patterns_and_fractions(tiny_model, tokenizer):
    apply(
        tiny_model,
        tokenizer,
        method="wanda",
        sparsity=0.25,
        overrides=[{"match": "mlp.*", "pattern": "2:4"}, {"match": "attn.*", "layers": "late", "sparsity": 0.75}],
    )
    adapter = ModelAdapter(tiny_model)
    for site in adapter.linear_sites():
        w = site.module.weight
        if site.role.startswith("mlp."):
            assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) == 2).all()
        elif site.layer >= adapter.num_layers // 2:
            assert zero_fraction(w) == pytest.approx(0.75)
        else:
            assert zero_fraction(w) == pytest.approx(0.25)


def _layer_error(w_pruned, w, hessian):
    d = (w_pruned - w).double()
    return torch.einsum("ri,ij,rj->", d, hessian.double(), d).item()  # ||(W' - W) X||^2 / n


@pytest.mark.parametrize("target", [SparsityTarget(0.5), SparsityTarget(0.5, 2, 4)])
def test_calibrated_methods_beat_magnitude_on_outlier_inputs(target):
    """On inputs with a few large channels (as in LLMs), Wanda and SparseGPT lose less output than |W|."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2048, 64, generator=gen) * (1 + 20 * (torch.rand(64, generator=gen) < 0.1))
    w = torch.randn(32, 64, generator=gen)
    stats = InputStats(x.T @ x / len(x), x.pow(2).sum(0), x.abs().amax(0), x.abs().mean(0), len(x))
    from autocompress.techniques.sparsify.methods import magnitude_prune

    errors = {
        name: _layer_error(fn(w, stats, target), w, stats.hessian)
        for name, fn in [("magnitude", magnitude_prune), ("wanda", wanda_prune), ("sparsegpt", sparsegpt_prune)]
    }
    assert errors["wanda"] < 0.7 * errors["magnitude"]
    assert errors["sparsegpt"] < errors["wanda"]


def test_sparsegpt_without_pruning_keeps_the_weights():
    x = torch.randn(256, 32)
    w = torch.randn(8, 32)
    stats = InputStats(x.T @ x / 256, x.pow(2).sum(0), x.abs().amax(0), x.abs().mean(0), 256)
    assert torch.allclose(sparsegpt_prune(w, stats, SparsityTarget(0.0)), w, atol=1e-5)


def test_wanda_uses_the_calibration_statistics(tiny_model, tokenizer):
    """The mask follows ||X_j||: scaling one input channel's activations up keeps its weights."""
    _, ctx = apply(tiny_model, tokenizer, method="wanda", sparsity=0.5)
    stats = collect_input_stats(ctx.base_model, ctx.batches(ctx.calibration))
    site = ModelAdapter(tiny_model).linear_sites()[0]
    assert "input_stats" in ctx._memo[""]
    expected = wanda_prune(site.module.weight, stats[site.name], SparsityTarget(0.5))
    assert torch.equal(site.module.weight == 0, expected == 0)


@pytest.mark.parametrize("pattern, problem", [("4:4", "0 < N < M"), ("5:4", "0 < N < M"), ("2-4", "'N:M'")])
def test_bad_patterns_are_clear_errors(pattern, problem):
    with pytest.raises(ConfigError, match=f"steps\\[0\\].params.pattern: .*{problem}"):
        Recipe(model="m", steps=[{"technique": "sparsify", "params": {"pattern": pattern}}])


def test_pattern_must_divide_the_width(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match="sparsify.pattern: M=48 does not divide the input width 64"):
        apply(tiny_model, tokenizer, pattern="2:48")
