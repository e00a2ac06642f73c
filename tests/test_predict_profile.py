"""Cost predicted from a recipe (no weights touched) equals the cost of the applied recipe."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY
from transformers import Phi3Config, Phi3ForCausalLM

from autocompress.hardware import Workload, list_targets, load_target
from autocompress.hardware.profile import profile_model
from autocompress.hardware.target import HardwareTarget
from autocompress.pipeline import (
    Session,
    apply_recipe,
    open_session,
    predict_cost,
    predict_profile,
    predict_recipe_cost,
)
from autocompress.recipe import Recipe, TextSpec
from autocompress.techniques.prune_depth import PruneDepthParams, predict_depth

CALIBRATION = {"seq_len": 32, "calibration_samples": 4, "eval_samples": 2}
WORKLOAD = Workload(prompt_tokens=64, context_tokens=128)
TARGETS = [load_target(name) for name in list_targets()]
Q = "quantize"

RECIPES: dict[str, list[tuple[str, dict]]] = {
    "base": [],
    "rtn4": [(Q, {"bits": 4, "group_size": 32})],
    "gptq3-overrides": [
        (
            Q,
            {
                "method": "gptq",
                "bits": 3,
                "group_size": 16,
                "overrides": [
                    {"match": "mlp.*", "layers": "late", "bits": 8},
                    {"match": "attn.v", "bits": 2, "method": "rtn", "group_size": 0},
                ],
            },
        )
    ],
    "awq-asym-emb-kv8": [
        (Q, {"method": "awq", "bits": 4, "group_size": 32, "symmetric": False, "embeddings": True, "kv_bits": 8})
    ],
    "rotate-per-channel": [(Q, {"bits": 4, "group_size": 0, "rotate": "hadamard"})],
    "gguf-a8": [(Q, {"bits": 4, "group_size": 32, "grid": "gguf", "act_bits": 8, "smoothquant_alpha": 0.5})],
    "depth-late": [
        ("prune_depth", {"drop_layers": 1}),
        (Q, {"bits": 4, "group_size": 32, "overrides": [{"match": "*", "layers": "late", "bits": 2}]}),
    ],
    "width-wanda-q": [
        ("prune_width", {"ffn_ratio": 0.25, "heads_ratio": 0.5, "kv_groups_ratio": 0.5}),
        ("sparsify", {"method": "wanda", "sparsity": 0.5}),
        (Q, {"bits": 4, "group_size": 16}),
    ],
    "magnitude": [("sparsify", {"method": "magnitude", "sparsity": 0.3})],
    "sparsegpt-2:4": [("sparsify", {"method": "sparsegpt", "pattern": "2:4"}), (Q, {"bits": 8, "group_size": 32})],
    "pattern-overrides": [
        (
            "sparsify",
            {
                "sparsity": 0.6,
                "overrides": [{"match": "mlp.*", "pattern": "1:2"}, {"match": "attn.o", "pattern": "4:8"}],
            },
        )
    ],
    "distill": [
        ("sparsify", {"pattern": "2:4"}),
        (Q, {"bits": 4, "group_size": 32}),
        ("distill", {"steps": 2, "batch_size": 2, "checkpoint_every": 0}),
    ],
    "exit-never": [(Q, {"bits": 8, "group_size": 32}), ("early_exit", {"threshold": 1.0})],
}


def _recipe(session: Session, steps: list[tuple[str, dict]]) -> Recipe:
    return Recipe.parse_obj(
        {
            "model": session.model_ref,
            "calibration": CALIBRATION,
            "seed": 0,
            "steps": [{"technique": t, "params": p} for t, p in steps],
        }
    )


def _phi3(folder: Path, tokenizer) -> Path:
    """A tiny Phi-3: fused qkv_proj and gate_up_proj linears."""
    config = {k: v for k, v in TINY.items() if k != "tie_word_embeddings"}
    Phi3ForCausalLM(Phi3Config(vocab_size=320, pad_token_id=0, **config)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "qwen2", "phi3"])
def session(request, tiny_checkpoints, tokenizer, tmp_path_factory) -> Session:
    arch = request.param
    path = _phi3(tmp_path_factory.mktemp("phi3"), tokenizer) if arch == "phi3" else tiny_checkpoints[arch]
    return open_session(str(path), TextSpec(**CALIBRATION), 0)


def _fused(session: Session) -> bool:
    return any(lin.role in ("attn.qkv", "mlp.gate_up") for lin in session.base_profile.linears)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_predicted_cost_equals_the_applied_recipes_cost(session, name):
    steps = RECIPES[name]
    if _fused(session) and any(t == "prune_width" for t, _ in steps):
        steps = [s for s in steps if s[0] != "prune_width"]  # fused linears cannot be narrowed
    recipe = _recipe(session, steps)
    predicted = predict_recipe_cost(session, recipe, TARGETS, WORKLOAD)
    assert predicted is not None
    model = apply_recipe(session, recipe)
    measured = predict_cost(model, TARGETS, WORKLOAD)
    assert predicted.keys() == measured.keys()
    for metric, value in measured.items():
        assert predicted[metric] == pytest.approx(value, rel=1e-9), metric
    profile, actual = predict_profile(session, recipe), profile_model(model)
    shape = lambda p: [
        (
            lin.name,
            lin.role,
            lin.layer,
            lin.in_features,
            lin.out_features,
            lin.bits,  # noqa: E731
            lin.group_size,
            lin.sparse_2_4,
        )
        for lin in p.linears
    ]
    assert shape(profile) == shape(actual)
    assert (
        profile.num_layers,
        profile.num_heads,
        profile.num_kv_heads,
        profile.intermediate_size,
        profile.kv_bits,
        profile.tied_embeddings,
        profile.embedding_bits,
    ) == (
        actual.num_layers,
        actual.num_heads,
        actual.num_kv_heads,
        actual.intermediate_size,
        actual.kv_bits,
        actual.tied_embeddings,
        actual.embedding_bits,
    )
    if not any(t == Q for t, _ in steps):  # rounding adds zeros the recipe does not declare
        assert [lin.sparsity for lin in profile.linears] == pytest.approx([lin.sparsity for lin in actual.linears])


def test_sensitivity_allocation_is_predicted_once_its_table_is_cached(session):
    recipe = _recipe(
        session,
        [
            ("prune_depth", {"drop_layers": 1}),
            (
                Q,
                {
                    "allocation": "sensitivity",
                    "avg_bits": 4,
                    "bit_choices": [2, 4, 8],
                    "group_size": 32,
                    "latency_budget": {"target": "raspberry-pi-5", "decode_ms_per_token": 1.0},
                },
            ),
        ],
    )
    assert predict_recipe_cost(session, recipe, TARGETS, WORKLOAD) is None  # the table needs the model
    measured = predict_cost(apply_recipe(session, recipe), TARGETS, WORKLOAD)
    predicted = predict_recipe_cost(session, recipe, TARGETS, WORKLOAD)
    assert predicted == pytest.approx(measured, rel=1e-9)
    assert [lin.bits for lin in predict_profile(session, recipe).block_linears] == [
        lin.bits for lin in profile_model(apply_recipe(session, recipe)).block_linears
    ]


def test_what_only_applying_tells_is_not_predicted(session):
    exits = _recipe(
        session,
        [
            ("prune_depth", {"drop_layers": 1}),
            (Q, {"bits": 4, "group_size": 32}),
            ("early_exit", {"threshold": 0.2, "exit_layers": [1, 2]}),
        ],
    )
    predicted = predict_recipe_cost(session, exits, TARGETS, WORKLOAD)  # the exit depth is measured on text:
    measured = predict_cost(apply_recipe(session, exits), TARGETS, WORKLOAD)  # decode costs are unknown before
    unknown = {m for m in measured if m.endswith(("decode_ms_per_token", "energy_mj_per_token", "avg_exit_layer"))}
    assert predicted.keys() == measured.keys() - unknown and len(predicted) == 2 * len(TARGETS)
    assert predicted == pytest.approx({m: measured[m] for m in predicted}, rel=1e-9)  # memory and prefill
    sparse_kernels = HardwareTarget.model_validate(
        load_target("raspberry-pi-5").model_dump() | {"name": "sparse", "features": ["sparse_unstructured"]}
    )
    quantized = _recipe(session, [(Q, {"bits": 2, "group_size": 32})])
    assert predict_profile(session, quantized) is not None
    assert predict_recipe_cost(session, quantized, [sparse_kernels], WORKLOAD) is None  # reads every zero


def test_prediction_raises_what_applying_raises(session):
    from autocompress.errors import ConfigError

    for steps, match in [
        ([("prune_depth", {"drop_layers": 4})], "drop_layers: 4 must be less"),
        ([(Q, {"bits": 4, "group_size": 48})], "48 does not divide the input width 64"),
        ([("sparsify", {"pattern": "2:3"})], "M=3 does not divide"),
        ([("distill", {"steps": 1, "seq_len": 64})], "longer than the calibration blocks"),
        ([("early_exit", {"exit_layers": [4]})], r"\[4\] out of range"),
    ]:
        recipe = _recipe(session, steps)
        with pytest.raises(ConfigError, match=match):
            predict_profile(session, recipe)
        with pytest.raises(ConfigError, match=match):
            apply_recipe(session, recipe)


def test_depth_pruning_of_unlike_blocks_is_left_to_applying(tiny_checkpoints):
    session = open_session(str(tiny_checkpoints["llama"]), TextSpec(**CALIBRATION), 0)
    mixed = _recipe(
        session, [(Q, {"bits": 4, "group_size": 32, "overrides": [{"match": "*", "layers": "0", "bits": 8}]})]
    )
    profile = predict_profile(session, mixed)  # block 0 at 8 bits, the others at 4
    assert predict_depth(profile, PruneDepthParams(drop_layers=1)) is None
    assert predict_depth(session.base_profile, PruneDepthParams(drop_layers=1)).num_layers == 3
