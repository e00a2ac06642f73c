"""Per-tensor levels from the compressed-layer store: exact weights, exact bytes, a consistent store."""

from __future__ import annotations

import errno
import multiprocessing as mp
from pathlib import Path

import pytest
import torch

from autocompress.errors import AutocompressError, ConfigError
from autocompress.ggml import ggml_type, native
from autocompress.hardware import Workload, load_target
from autocompress.hardware.profile import profile_model
from autocompress.models.annotations import packed_weight
from autocompress.pipeline import apply_recipe, open_session, predict_profile
from autocompress.recipe import Recipe
from autocompress.techniques.tensor_levels import store as store_module
from autocompress.techniques.tensor_levels.keys import tensor_modules
from autocompress.techniques.tensor_levels.levels import parse_level
from autocompress.techniques.tensor_levels.store import LevelStore, StoreFullError

CALIBRATION = {"seq_len": 32, "calibration_samples": 4, "eval_samples": 2}
MIXED = {
    "default": "imatrix/Q4_0",
    "embedding": "rtn/Q8_0",
    "tensors": {"0.attn.v": "gptq/Q5_0", "1.mlp.down": "gptq/IQ4_NL", "3.attn.q": "F16", "2.mlp.up": "rtn/Q5_1"},
}


def recipe(session, *steps) -> Recipe:
    return Recipe.parse_obj(
        {
            "model": session.model_ref,
            "calibration": CALIBRATION,
            "seed": 0,
            "steps": [{"technique": t, "params": p} for t, p in steps],
        }
    )


@pytest.fixture(scope="module")
def session(tiny_checkpoints):
    return open_session(
        str(tiny_checkpoints["llama"]), Recipe.model_validate({"model": "x", "calibration": CALIBRATION}).calibration, 0
    )


def test_levels_parse_and_errors():
    assert parse_level("imatrix/q4_k").name == "imatrix/Q4_K"
    assert parse_level("Q8_0").name == "rtn/Q8_0"
    assert parse_level("F16").name == "F16"
    for bad, field_text in (
        ("awq2/Q4_0", "unknown level method"),
        ("gptq/Q9_9", "Q9_9"),
        ("gptq/F16", "not quantized"),
        ("a/b/c", "not a level"),
    ):
        with pytest.raises(ConfigError, match=field_text):
            parse_level(bad)


def test_weights_are_the_stored_bytes_dequantized(session):
    model = apply_recipe(session, recipe(session, ("tensor_levels", MIXED)))
    modules = tensor_modules(model)
    want = {
        "0.attn.v": "Q5_0",
        "1.mlp.down": "IQ4_NL",
        "3.attn.q": "F16",
        "2.mlp.up": "Q5_1",
        "embedding": "Q8_0",
        "0.attn.q": "Q4_0",
    }
    for key, type_name in want.items():
        packed = packed_weight(modules[key])
        assert packed is not None and packed.type == type_name, key
        weight = modules[key].weight
        assert torch.equal(native.dequantize(packed.packed, type_name, weight.shape[1]), weight), key
        assert packed.packed.numel() == ggml_type(type_name).tensor_bytes(*weight.shape)
    base = dict(session.base.model.named_parameters())
    assert not torch.equal(base["model.layers.0.self_attn.q_proj.weight"], modules["0.attn.q"].weight)


def test_predicted_profile_equals_applied_and_prices_bytes(session):
    for steps in ([("tensor_levels", MIXED)], [("prune_depth", {"drop_layers": 1}), ("tensor_levels", MIXED)]):
        r = recipe(session, *steps)
        applied, predicted = profile_model(apply_recipe(session, r)), predict_profile(session, r)
        assert predicted == applied
    profile = predicted
    expected = sum(
        ggml_type(lin.ggml_type).tensor_bytes(lin.out_features, lin.in_features)
        for lin in profile.linears
        if lin.layer is not None
    )
    assert profile.weight_bytes() == expected + ggml_type("Q8_0").tensor_bytes(320, 64)
    assert len(profile.layer_origin) == 3 and sorted(profile.layer_origin) == list(profile.layer_origin)


def test_pruned_blocks_keep_their_keys_and_levels(session):
    r = recipe(session, ("prune_depth", {"drop_layers": 1}), ("tensor_levels", MIXED))
    model = apply_recipe(session, r)
    modules = tensor_modules(model)
    assert len([k for k in modules if k.endswith(".attn.q")]) == 3
    if "1.mlp.down" in modules:
        assert packed_weight(modules["1.mlp.down"]).type == "IQ4_NL"


def test_bad_keys_and_types_name_the_tensor(session):
    with pytest.raises(ConfigError, match="tensors.9.attn.q"):
        apply_recipe(session, recipe(session, ("tensor_levels", {"tensors": {"9.attn.q": "Q4_0"}})))
    with pytest.raises(ConfigError, match="0.mlp.down"):  # 64 columns hold no 256-blocks
        apply_recipe(session, recipe(session, ("tensor_levels", {"tensors": {"0.mlp.down": "Q4_K"}})))
    with pytest.raises(ConfigError, match="cannot be combined"):
        recipe(session, ("quantize", {}), ("tensor_levels", {}))


def test_kv_type_is_priced_at_its_bytes_where_the_target_has_it(session):
    from autocompress.hardware import cost_metrics

    target = load_target("raspberry-pi-5").model_copy(update={"kv_types": ("f16", "q8_0", "q4_0")})
    mem = {}
    for kv in ("f16", "q8_0", "q4_0"):
        p = predict_profile(session, recipe(session, ("tensor_levels", {"kv_type": kv})))
        mem[kv] = target_kv = cost_metrics(p, [target], Workload(64, 4096))["raspberry-pi-5.peak_memory_mb"]
        del target_kv
    assert mem["f16"] > mem["q8_0"] > mem["q4_0"]
    kv_f16 = 2 * 4 * 2 * 16 * (64 + 4096) * 2 / 1e6  # layers x kv heads x head_dim x tokens x 2 bytes
    assert mem["f16"] - mem["q4_0"] == pytest.approx(kv_f16 * (1 - 4.5 / 16), rel=1e-6)


def test_runtime_numerics_round_activations(session):
    plain = apply_recipe(session, recipe(session, ("tensor_levels", {"runtime_numerics": "none"})))
    emulated = apply_recipe(session, recipe(session, ("tensor_levels", {})))
    ids = session.ctx.evaluation[:1]
    with torch.no_grad():
        a, b = plain(input_ids=ids).logits, emulated(input_ids=ids).logits
    assert not torch.equal(a, b)
    assert (a - b).abs().max() < 0.05 * a.abs().max()


def _store(tmp_path: Path) -> LevelStore:
    return LevelStore(tmp_path, "m" * 64, "d" * 64)


def test_corrupt_entry_is_rebuilt_never_used(tmp_path):
    store, level, w = _store(tmp_path), parse_level("rtn/Q4_0"), torch.randn(8, 64)
    first = store.get("0.attn.q", level, w, None)
    path = store.path("0.attn.q", level)
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # a flipped bit in the packed bytes
    path.write_bytes(bytes(data))
    assert store.load("0.attn.q", level, 64) is None and not path.exists()
    again = store.get("0.attn.q", level, w, None)
    assert again.built and torch.equal(again.packed, first.packed)
    path.write_bytes(path.read_bytes()[:40])  # truncated
    assert store.get("0.attn.q", level, w, None).built


def _build(root: str, out: str) -> None:
    import autocompress.techniques.tensor_levels.levels as levels

    original = levels.RoundToNearest.compress

    def slow(self, weight, type, inputs):
        import time

        time.sleep(0.5)
        return original(self, weight, type, inputs)

    levels.RoundToNearest.compress = slow
    entry = LevelStore(Path(root), "m" * 64, "d" * 64).get(
        "0.mlp.up", parse_level("Q4_0"), torch.ones(4, 64).cumsum(1), None
    )
    Path(out).write_text("built" if entry.built else "read")


def test_two_workers_build_one_entry_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_build, args=(str(tmp_path), str(tmp_path / f"w{i}"))) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted((tmp_path / f"w{i}").read_text() for i in range(2)) == ["built", "read"]
    assert not list(tmp_path.rglob("*.tmp"))


def test_disk_full_is_a_clear_error_and_leaves_the_store_consistent(tmp_path, monkeypatch):
    store, level, w = _store(tmp_path), parse_level("Q8_0"), torch.randn(4, 64)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_module, "save_file", full)
    with pytest.raises(StoreFullError, match="full") as info:
        store.get("embedding", level, w, None)
    assert isinstance(info.value, AutocompressError)
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    monkeypatch.undo()
    assert store.get("embedding", level, w, None).built
