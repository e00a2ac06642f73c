"""Distillation on tiny models: the loss falls, constraints hold exactly, runs are deterministic and resumable."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import build_model, make_context

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter
from autocompress.recipe import Recipe
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.distill.loss import kd_loss, matched_layers
from autocompress.techniques.distill.train import Interrupted
from autocompress.threads import one_thread


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: waking a thread pool per op costs far more than the op on a busy CPU."""
    with one_thread():
        yield


FAST = {"steps": 12, "lr": 1e-3, "batch_size": 2, "seq_len": 16, "warmup_steps": 0}


def apply(technique: str, model, ctx, **params):
    cls = TECHNIQUES[technique]
    return cls().apply(model, cls.Params(**params), ctx)


def compressed(arch: str, tokenizer, technique: str = "prune_width", **params):
    """A compressed copy of a tiny base model and a context whose teacher is the base."""
    base = build_model(arch)
    ctx = make_context(base, tokenizer)
    model = apply(technique, copy.deepcopy(base), ctx, **(params or {"ffn_ratio": 0.5, "heads_ratio": 0.5}))
    return model, ctx


def linear_weights(model) -> dict[str, torch.Tensor]:
    return {s.name: s.module.weight.detach().clone() for s in ModelAdapter(model).linear_sites()}


def test_kd_loss_is_zero_for_equal_logits_and_positive_otherwise():
    logits = torch.randn(2, 5, 11)
    assert float(kd_loss(logits, logits, 2.0)) == pytest.approx(0.0, abs=1e-6)
    assert float(kd_loss(logits + torch.randn_like(logits), logits, 2.0)) > 0.01


def test_matched_layers_are_block_for_block_at_equal_depth_and_proportional_otherwise():
    assert matched_layers(4, 4) == [(1, 1), (2, 2), (3, 3), (4, 4)]
    assert matched_layers(2, 4) == [(1, 2), (2, 4)]


def test_loss_decreases_on_a_fixed_batch(arch, tokenizer):
    model, ctx = compressed(arch, tokenizer)
    ctx.calibration = ctx.calibration[:1]  # one block, one window: every step sees the same batch
    model = apply("distill", model, ctx, **(FAST | {"batch_size": 1, "seq_len": 32, "steps": 20}))
    report = model.distill_report
    assert report["steps"] == 20 and report["last_loss"] < 0.5 * report["first_loss"]


def test_width_pruned_shapes_stay_and_nothing_stays_parametrized(arch, tokenizer):
    model, ctx = compressed(arch, tokenizer)
    before = {name: tuple(w.shape) for name, w in linear_weights(model).items()}
    after_model = apply("distill", model, ctx, **FAST)
    assert {name: tuple(w.shape) for name, w in linear_weights(after_model).items()} == before
    assert not any(hasattr(s.module, "parametrizations") for s in ModelAdapter(after_model).linear_sites())
    assert after_model.config.intermediate_size == 64


@pytest.mark.parametrize("sparsity", [{"sparsity": 0.5}, {"pattern": "2:4"}])
@pytest.mark.parametrize("train", ["all", "lora"])
def test_sparsity_masks_stay_exact(tokenizer, sparsity, train):
    model, ctx = compressed("llama", tokenizer, "sparsify", method="magnitude", **sparsity)
    before = linear_weights(model)
    model = apply("distill", model, ctx, **(FAST | {"train": train}))
    after = linear_weights(model)
    for name in before:
        assert torch.equal(after[name] == 0, before[name] == 0), name
        assert not torch.equal(after[name], before[name]), f"{name} did not train"


def test_norms_mode_trains_only_norms_and_leaves_linears_bit_identical(tokenizer):
    model, ctx = compressed("qwen2", tokenizer)
    before = linear_weights(model)
    norm_before = ModelAdapter(model).final_norm.weight.detach().clone()
    model = apply("distill", model, ctx, **(FAST | {"train": "norms"}))
    assert all(torch.equal(w, before[name]) for name, w in linear_weights(model).items())
    assert not torch.equal(ModelAdapter(model).final_norm.weight, norm_before)


def test_zero_steps_leaves_the_model_unchanged(tokenizer):
    model, ctx = compressed("llama", tokenizer)
    before = copy.deepcopy(model.state_dict())
    model = apply("distill", model, ctx, **(FAST | {"steps": 0}))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_teacher_is_not_modified(tokenizer):
    model, ctx = compressed("llama", tokenizer)
    teacher = copy.deepcopy(ctx.base_model.state_dict())
    apply("distill", model, ctx, **FAST)
    assert all(torch.equal(teacher[k], v) for k, v in ctx.base_model.state_dict().items())


def test_hidden_state_loss_after_depth_pruning_runs_and_falls(tokenizer):
    model, ctx = compressed("llama", tokenizer, "prune_depth", drop_layers=2)
    ctx.calibration = ctx.calibration[:1]
    model = apply("distill", model, ctx, **(FAST | {"hidden_weight": 1.0, "batch_size": 1, "seq_len": 32}))
    assert model.distill_report["last_loss"] < model.distill_report["first_loss"]


def test_same_seed_same_weights_other_seed_other_weights(tokenizer):
    model, ctx = compressed("llama", tokenizer)
    runs = [apply("distill", copy.deepcopy(model), ctx, **FAST) for _ in range(2)]
    ctx.seed = 1
    other = apply("distill", copy.deepcopy(model), ctx, **FAST)
    a, b, c = (linear_weights(m) for m in (*runs, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("train", ["all", "lora"])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tokenizer, tmp_path, train):
    model, ctx = compressed("llama", tokenizer, "sparsify", pattern="2:4")
    ctx.model_digest, ctx.data_digest = "tiny", "random"
    params = TECHNIQUES["distill"].Params(**(FAST | {"checkpoint_every": 4, "train": train}))
    ctx.cache_dir = tmp_path / "a"
    with pytest.raises(Interrupted):
        TECHNIQUES["distill"]().apply(copy.deepcopy(model), params, ctx, stop_at=7)
    assert len(list((tmp_path / "a" / "distill").glob("*.safetensors"))) == 1
    resumed = TECHNIQUES["distill"]().apply(copy.deepcopy(model), params, ctx)
    assert resumed.distill_report["resumed_from"] == 7
    ctx.cache_dir = tmp_path / "b"
    straight = TECHNIQUES["distill"]().apply(copy.deepcopy(model), params, ctx)
    assert straight.distill_report["resumed_from"] == 0
    a, b = linear_weights(resumed), linear_weights(straight)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # A finished run is reused: no step is trained again.
    again = TECHNIQUES["distill"]().apply(copy.deepcopy(model), params, ctx)
    assert again.distill_report["resumed_from"] == FAST["steps"]
    assert all(torch.equal(v, b[k]) for k, v in linear_weights(again).items())


def test_activation_quantization_passes_gradients_straight_through(tokenizer):
    model, ctx = compressed("llama", tokenizer, "quantize", bits=16, act_bits=8, kv_bits=4, group_size=0)
    ctx.calibration = ctx.calibration[:1]
    model = apply("distill", model, ctx, **(FAST | {"train": "norms", "batch_size": 1, "seq_len": 32}))
    assert model.distill_report["last_loss"] < model.distill_report["first_loss"]


@pytest.mark.parametrize(
    "params, field",
    [
        ({"steps": -1}, "steps[1].params.steps"),
        ({"temperature": 0}, "steps[1].params.temperature"),
        ({"lr": -1e-3}, "steps[1].params.lr"),
        ({"train": "everything"}, "steps[1].params.train"),
    ],
)
def test_invalid_params_are_one_line_errors_naming_the_field(params, field):
    with pytest.raises(ConfigError) as exc:
        steps = [{"technique": "quantize"}, {"technique": "distill", "params": params}]
        Recipe.parse_obj({"model": "m", "steps": steps})
    assert str(exc.value).startswith(field) and "\n" not in str(exc.value)


def test_seq_len_longer_than_the_calibration_blocks_is_an_error(tokenizer):
    model, ctx = compressed("llama", tokenizer)
    with pytest.raises(ConfigError, match=r"distill\.seq_len: 64 is longer .* at most 32"):
        apply("distill", model, ctx, **(FAST | {"seq_len": 64}))


def test_distill_comes_after_quantize_and_before_early_exit():
    steps = [{"technique": "distill"}, {"technique": "quantize"}]
    with pytest.raises(ConfigError, match="'quantize' must come before 'distill'"):
        Recipe.parse_obj({"model": "m", "steps": steps})
    Recipe.parse_obj({"model": "m", "steps": steps[::-1] + [{"technique": "early_exit"}]})


def test_the_shipped_space_searches_distill_steps_and_zero_skips_the_step():
    import optuna

    from autocompress.recipe import TextSpec
    from autocompress.search.space import SearchSpace

    space = SearchSpace.load("distill")
    assert space.distributions()["distill.steps"].choice == [0, 50, 200]
    trial = optuna.trial.FixedTrial(
        {
            "prune_width.ffn_ratio": 0.25,
            "quantize.method": "rtn",
            "quantize.bits": 4,
            "distill.steps": 0,
            "distill.train": "lora",
        }
    )
    recipe = space.sample(trial, "m", 0, TextSpec())
    assert [s.technique for s in recipe.steps] == ["prune_width", "quantize", "distill"]
    assert "no distill" in recipe.summary()


def test_apply_recipe_times_each_step_as_its_own_stage(tiny_checkpoints):
    from autocompress.pipeline import apply_recipe, open_session
    from autocompress.recipe import TextSpec
    from autocompress.search.objective import StageClock

    spec = TextSpec(seq_len=32, calibration_samples=4, eval_samples=2)
    session = open_session(str(tiny_checkpoints["llama"]), spec, seed=0)
    recipe = Recipe(
        model=str(tiny_checkpoints["llama"]),
        calibration=spec,
        steps=[
            {"technique": "sparsify", "params": {"sparsity": 0.5}},
            {"technique": "distill", "params": FAST | {"steps": 2}},
        ],
    )
    clock = StageClock()
    model = apply_recipe(session, recipe, clock)
    seconds = clock.take()
    assert set(seconds) == {"apply.sparsify", "apply.distill"} and seconds["apply.distill"] > 0
    assert model.distill_report["steps"] == 2


def on_grid(model) -> tuple[int, bool]:
    """How many linears have a recorded grid, and whether all their weights lie exactly on it."""
    from autocompress.models import annotations

    grids = [(s.module, annotations.weight_grid(s.module)) for s in ModelAdapter(model).linear_sites()]
    grids = [(m, g) for m, g in grids if g is not None]
    return len(grids), all(torch.equal(g.dequantize(g.codes(m.weight)).to(m.weight.dtype), m.weight) for m, g in grids)


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
@pytest.mark.parametrize("train", ["all", "lora"])
def test_qat_keeps_quantized_weights_exactly_on_their_grid(tokenizer, method, train):
    from autocompress.models import annotations

    if not hasattr(annotations, "weight_grid"):
        pytest.skip("quantization grids are not recorded yet")
    model, ctx = compressed("llama", tokenizer, "sparsify", pattern="2:4")
    model = apply("quantize", model, ctx, method=method, bits=3, group_size=16)
    before = linear_weights(model)
    assert on_grid(model) == (len(before), True)
    model = apply("distill", model, ctx, **(FAST | {"train": train}))
    after = linear_weights(model)
    assert on_grid(model) == (len(before), True)
    assert all(bool((after[k][before[k] == 0] == 0).all()) for k in before)  # the 2:4 masks too
    changed = sum(int((after[k] != before[k]).sum()) for k in before)
    assert changed > 0, "no weight moved to another grid point"
