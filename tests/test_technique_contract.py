"""One contract over every registered technique (as optuna's sampler tests run one suite over every sampler).

For each name in ``TECHNIQUES``: its params round-trip (defaults validate; a dump parses back to the same
params, also through a recipe's YAML); ``describe`` and ``runtime_support`` answer; on tiny Llama and Qwen2
models, ``apply`` leaves a model that still runs with consistent shapes, and ``predict_profile`` (when it
returns a profile) equals the profile of the applied model, except the figures it declares unknown (NaN).
A technique registered later is checked with its default params unless ``EXAMPLES`` gives others.
"""

from __future__ import annotations

import copy
import math
from dataclasses import fields, replace

import pytest
import torch
from conftest import build_model, make_context

from autocompress.hardware.profile import ModelProfile, profile_model
from autocompress.models.adapter import ModelAdapter
from autocompress.recipe import Recipe
from autocompress.techniques import TECHNIQUES, RuntimeSupport
from autocompress.techniques.early_exit import exit_policy

# Params that fit the tiny models (hidden 64, MLP 128, 4 blocks) and do visible work; others: defaults.
EXAMPLES: dict[str, dict] = {
    "prune_depth": {"drop_layers": 1},
    "prune_width": {"ffn_ratio": 0.25, "heads_ratio": 0.5},
    "sparsify": {"method": "wanda", "sparsity": 0.5},
    "quantize": {"bits": 4, "group_size": 32, "kv_bits": 8},
    "distill": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 0},
    "early_exit": {"threshold": 0.5, "exit_layers": [2]},
}


def example(name: str) -> dict:
    return EXAMPLES.get(name, {})


@pytest.fixture(params=TECHNIQUES.names())
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_params_round_trip(name: str) -> None:
    technique = TECHNIQUES[name]
    defaults = technique.Params()
    assert technique.parse_params(defaults.model_dump(mode="json"), "params") == defaults
    params = technique.parse_params(example(name), "params")
    assert technique.parse_params(params.model_dump(mode="json"), "params") == params
    recipe = Recipe.parse_obj({"model": "m", "steps": [{"technique": name, "params": example(name)}]})
    assert recipe.steps[0].params == params.model_dump(mode="json")
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe


def test_describe_and_runtime_support_answer(name: str) -> None:
    technique = TECHNIQUES[name]
    params = technique.parse_params(example(name), "params").model_dump(mode="json")
    assert isinstance(technique.describe(params), str) and technique.describe(params)
    support = technique.runtime_support(params)
    assert isinstance(support, RuntimeSupport) and support.gets + support.lacks
    assert all(isinstance(line, str) and line for line in support.gets + support.lacks)


def differences(predicted: ModelProfile, actual: ModelProfile) -> list[str]:
    """Fields where the prediction differs from the applied model's profile. NaN means 'unknown before the
    model exists'. A linear's sparsity is the zeros the params ask for: rounding to a quantization grid may
    add zeros of its own, so on a quantized linear the prediction may only be lower."""
    out = []
    for f in fields(ModelProfile):
        want, got = getattr(predicted, f.name), getattr(actual, f.name)
        if isinstance(want, float) and math.isnan(want):
            continue
        if f.name != "linears":
            out += [] if want == got else [f"{f.name}: {want} != {got}"]
            continue
        if len(want) != len(got):
            out.append(f"linears: {len(want)} != {len(got)}")
        for p, a in zip(want, got):
            if replace(p, sparsity=0.0) != replace(a, sparsity=0.0):
                out.append(f"{p.name}: {p} != {a}")
            elif not (p.sparsity <= a.sparsity + 1e-9 if a.bits < 16 else math.isclose(p.sparsity, a.sparsity)):
                out.append(f"{p.name}: sparsity {p.sparsity} vs {a.sparsity}")
    return out


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_apply_keeps_the_model_runnable_and_predict_profile_matches(name: str, arch: str, tokenizer) -> None:
    technique = TECHNIQUES[name]
    params = technique.parse_params(example(name), "params")
    base = build_model(arch)
    ctx = make_context(base, tokenizer)
    predicted = technique().predict_profile(profile_model(base), params, ctx)

    model = technique().apply(copy.deepcopy(base), params, ctx).eval()
    with torch.no_grad():
        logits = model(input_ids=ctx.evaluation[:2]).logits
    assert logits.shape == (2, ctx.evaluation.shape[1], base.config.vocab_size)
    assert torch.isfinite(logits).all()
    adapter = ModelAdapter(model)
    assert len(adapter.layers) == adapter.num_layers
    for site in adapter.linear_sites(include_lm_head=True):
        assert tuple(site.module.weight.shape) == (site.module.out_features, site.module.in_features), site.name

    if predicted is not None:
        policy = exit_policy(model)
        depth = (
            {}
            if policy is None
            else {"avg_exit_layer": policy.expected_depth, "exit_head_reads": policy.expected_head_reads}
        )
        assert differences(predicted, profile_model(model, **depth)) == []
