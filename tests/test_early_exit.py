"""Early exit: threshold 1.0 is the full model, exits copy states, generation with a KV cache is consistent."""

import copy

import pytest
import torch
from conftest import make_context

from autocompress.errors import ConfigError
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.early_exit import attach_early_exit, exit_policy, measure_exit_depth

IDS = torch.randint(0, 320, (2, 24), generator=torch.Generator().manual_seed(1))


def apply(model, tokenizer, **params):
    cls = TECHNIQUES["early_exit"]
    return cls().apply(model, cls.parse_params(params, "params"), make_context(model, tokenizer))


@torch.no_grad()
def exit_confidence(model, ids, after_blocks):
    """Top-token probability of every position read out after ``after_blocks`` blocks (no exits)."""
    adapter = ModelAdapter(model)
    hidden = model(ids, output_hidden_states=True).hidden_states[after_blocks]
    return adapter.lm_head(adapter.final_norm(hidden)).softmax(-1).amax(-1)


def median_threshold(model):
    """A threshold that makes about half of the tokens exit after block 2."""
    return exit_confidence(model, IDS, 2).median().item()


@torch.no_grad()
def test_threshold_one_is_the_full_model(tiny_model, tokenizer):
    reference = copy.deepcopy(tiny_model)
    attach_early_exit(tiny_model, [1, 2, 3], 1.0)
    assert torch.equal(tiny_model(IDS).logits, reference(IDS).logits)
    assert measure_exit_depth(tiny_model, [IDS]) == (4.0, 3.0)  # every token checked at all 3 exits


@torch.no_grad()
def test_exited_tokens_get_the_exit_layers_logits(tiny_model, tokenizer):
    reference = copy.deepcopy(tiny_model)
    threshold = median_threshold(tiny_model)
    confident = exit_confidence(reference, IDS, 2) > threshold
    attach_early_exit(tiny_model, [2], threshold)
    logits = tiny_model(IDS).logits
    adapter = ModelAdapter(reference)
    # The first token of each sequence sees no other token: its block-2 state equals the reference one.
    first = adapter.lm_head(adapter.final_norm(reference(IDS, output_hidden_states=True).hidden_states[2]))[:, 0]
    exited_first = confident[:, 0]
    assert torch.allclose(logits[:, 0][exited_first], first[exited_first], atol=1e-5)
    assert torch.allclose(logits[:, 0][~exited_first], reference(IDS).logits[:, 0][~exited_first], atol=1e-5)
    depth, head_reads = measure_exit_depth(tiny_model, [IDS])
    assert head_reads == 1.0  # one exit, every token checked there
    assert 2.0 < depth < 4.0  # some tokens left after block 2, others ran all 4


@torch.no_grad()
def test_generation_with_exits_matches_a_reference_loop(tiny_model, tokenizer, monkeypatch):
    """Cached generation (skipped blocks only fill K/V) = re-running the whole sequence each step."""
    tiny_model.generation_config.eos_token_id = None
    prompt = IDS[:1, :6]
    full = tiny_model.generate(prompt, max_new_tokens=16, do_sample=False, pad_token_id=0)
    # A threshold that about half of the full model's generated tokens pass after block 1.
    threshold = exit_confidence(tiny_model, full, 1)[0, 6:].median().item()
    policy = attach_early_exit(tiny_model, [1, 2], threshold)
    fills = []
    fill = policy.adapter.fill_kv_cache
    monkeypatch.setattr(policy.adapter, "fill_kv_cache", lambda *a: fills.append(1) or fill(*a))
    out = tiny_model.generate(
        prompt,
        max_new_tokens=16,
        do_sample=False,
        use_cache=True,
        pad_token_id=0,
        return_dict_in_generate=True,
        output_logits=True,
    )
    ids, logits = prompt, []
    for _ in range(16):
        logits.append(tiny_model(ids, use_cache=False).logits[:, -1])
        ids = torch.cat([ids, logits[-1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out.sequences, ids)
    assert torch.allclose(torch.stack(out.logits), torch.stack(logits), atol=1e-4)
    assert fills  # some decode steps skipped blocks and only wrote their K/V
    policy.reset_stats()
    tiny_model(ids)
    assert policy.avg_exit_layer < 4.0  # the check is not vacuous: tokens did exit early


def test_policy_is_recorded_and_reattached_after_a_stock_reload(tiny_model, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    apply(tiny_model, tokenizer, threshold=0.3, exit_layers=[2])
    tiny_model.save_pretrained(tmp_path)
    stock = AutoModelForCausalLM.from_pretrained(tmp_path, dtype=torch.float32).eval()
    assert stock.config.early_exit == {"exit_layers": [2], "threshold": 0.3}
    attach_early_exit(stock)
    with torch.no_grad():
        assert torch.allclose(stock(IDS).logits, tiny_model(IDS).logits, atol=1e-5)


def test_exit_layers_must_be_inside_the_model(tiny_model, tokenizer):
    with pytest.raises(ConfigError, match=r"early_exit.exit_layers: \[4\] out of range: .* block 1 to 3"):
        apply(tiny_model, tokenizer, exit_layers=[2, 4])


def test_expected_exit_depth_reaches_the_cost_model_and_metrics_json(tiny_model, tokenizer, tmp_path):
    from autocompress.export.checkpoint import write_artifact
    from autocompress.hardware.roofline import Workload
    from autocompress.hardware.target import load_target
    from autocompress.pipeline import predict_cost
    from autocompress.recipe import Recipe

    targets, workload = [load_target("raspberry-pi-5")], Workload()
    full = predict_cost(tiny_model, targets, workload)
    threshold = exit_confidence(tiny_model, IDS, 1).min().item() / 2  # every token exits after block 1
    apply(tiny_model, tokenizer, threshold=threshold, exit_layers=[1])
    metrics = predict_cost(tiny_model, targets, workload)
    assert metrics["avg_exit_layer"] == exit_policy(tiny_model).expected_depth == 1.0
    assert metrics["raspberry-pi-5.decode_ms_per_token"] < full["raspberry-pi-5.decode_ms_per_token"]
    assert metrics["raspberry-pi-5.prefill_ms"] == full["raspberry-pi-5.prefill_ms"]
    recipe = Recipe(
        model="m", steps=[{"technique": "early_exit", "params": {"threshold": threshold, "exit_layers": [1]}}]
    )
    record = write_artifact(tiny_model, tokenizer, recipe, metrics, tmp_path / "out")
    assert record["avg_exit_layer"] == 1.0


@pytest.mark.parametrize(
    "first_exit,every,depth,expected", [(0.5, 4, 30, [15, 19, 23, 27]), (0.25, 1, 4, [1, 2, 3]), (0.9, 2, 4, [])]
)
def test_first_exit_and_spacing_place_the_exits_for_any_depth(first_exit, every, depth, expected):
    params = TECHNIQUES["early_exit"].parse_params({"first_exit": first_exit, "exit_every": every}, "params")
    assert params.layers(depth) == expected


def test_scalar_exit_placement_is_applied(tiny_model, tokenizer):
    apply(tiny_model, tokenizer, threshold=0.3, first_exit=0.5, exit_every=1)  # 4 blocks: exits after 2 and 3
    assert tiny_model.config.early_exit == {"exit_layers": [2, 3], "threshold": 0.3}


def test_exit_layers_and_scalar_placement_are_exclusive():
    with pytest.raises(ConfigError, match="exit_layers: give either exit_layers or first_exit/exit_every"):
        TECHNIQUES["early_exit"].parse_params({"exit_layers": [2], "exit_every": 2}, "params")
