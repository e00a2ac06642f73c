"""The llama.cpp host target: the runtime registry, profiles that price what a GGUF file holds, and
calibrate/validate through llama.cpp on tiny models (skipped without the [llamacpp] extra)."""

from __future__ import annotations

import importlib.util
import json

import gguf
import pytest
import yaml
from conftest import build_model
from typer.testing import CliRunner

from autocompress.cli import app
from autocompress.errors import ConfigError
from autocompress.export.gguf_export import write_gguf
from autocompress.hardware.profile import profile_model
from autocompress.hardware.roofline import RooflineModel, Workload
from autocompress.hardware.target import load_target
from autocompress.hosts import HOST_RUNTIMES, host_runtime, runtime_for_target, suites
from autocompress.hosts.calibrate import Shape
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="the [llamacpp] extra is not installed (CI installs it)")


def test_runtimes_are_registered_with_their_targets():
    assert HOST_RUNTIMES.names() == ["llamacpp", "torch"]
    assert {n: HOST_RUNTIMES[n].target_name for n in HOST_RUNTIMES} == {"llamacpp": "host-llamacpp", "torch": "host"}
    assert runtime_for_target(load_target("host")) is HOST_RUNTIMES["torch"]
    with pytest.raises(ConfigError, match=r"^--runtime: unknown host runtime 'onnx'; allowed: llamacpp, torch$"):
        host_runtime("onnx")
    with pytest.raises(
        ConfigError,
        match=r"^--target: 'raspberry-pi-5' is not a host target; allowed: host, "
        r"host-llamacpp",
    ):
        runtime_for_target(load_target("raspberry-pi-5"))


def test_cli_names_the_runtime_field_and_its_allowed_values():
    bad = CliRunner().invoke(app, ["hardware", "calibrate", "--runtime", "tensorrt"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError)
    assert str(bad.exception) == "--runtime: unknown host runtime 'tensorrt'; allowed: llamacpp, torch"
    device = CliRunner().invoke(app, ["hardware", "validate", "--target", "jetson-orin-nano"])
    assert isinstance(device.exception, ConfigError) and device.exception.field == "--target"


def test_llamacpp_suites_are_disjoint_and_large_enough():
    formats = list(suites.GGUF_FORMATS)
    label = lambda shapes: {f"{s.label} {f}" for s in shapes for f in formats}  # noqa: E731
    calibration, validation = label(suites.LLAMACPP_CALIBRATION_SHAPES), label(suites.LLAMACPP_VALIDATION_SHAPES)
    assert not calibration & validation
    assert len(validation) + len(suites.LLAMACPP_VALIDATION_RECIPES) >= 20
    assert {(f.bits, f.group_size) for f in suites.GGUF_FORMATS.values()} == {(16, None), (8, 32), (4, 32)}


@pytest.mark.parametrize(
    "fmt, gguf_type, bits_per_weight",
    [
        (WeightFormat(16), "F16", 16.0),
        (WeightFormat(8, 32), "Q8_0", 8.5),
        (WeightFormat(4, 32), "Q4_0", 4.5),
        (WeightFormat(4, 32, symmetric=False), "Q4_1", 5.0),
    ],
)
def test_profile_prices_exactly_what_the_gguf_file_holds(tmp_path, tokenizer, fmt, gguf_type, bits_per_weight):
    model = suites.with_block_format(build_model("llama"), fmt)
    write_gguf(model, tokenizer, tmp_path / "m.gguf", float_type="F16")
    tensors = gguf.GGUFReader(str(tmp_path / "m.gguf")).tensors
    blocks = [t for t in tensors if t.name.startswith("blk.") and len(t.shape) == 2]
    assert {t.tensor_type.name for t in blocks} == {gguf_type}
    assert sum(int(t.n_bytes) for t in blocks) * 8 / sum(int(t.n_elements) for t in blocks) == bits_per_weight
    profile = profile_model(model)
    matrices = sum(int(t.n_bytes) for t in tensors if len(t.shape) == 2)  # linears + tied F16 embedding; no norms
    assert profile.weight_bytes() == matrices


def test_a_llamacpp_target_streams_each_weight_at_its_gguf_width():
    from autocompress.hosts.llamacpp import FEATURES

    target = load_target("host").model_copy(
        update={"name": "host-llamacpp", "runtime_bits": None, "features": FEATURES}
    )
    roofline, model = RooflineModel(target), build_model("llama")
    block_params = sum(s.module.weight.numel() for s in ModelAdapter(model).linear_sites())
    decode = {
        name: roofline.phase_cost(profile_model(suites.with_block_format(model, fmt)), Workload(), "decode")
        for name, fmt in suites.GGUF_FORMATS.items()
    }
    for name, bits in (("Q8_0", 8.5), ("Q4_0", 4.5)):  # only the block linears change; the F16 head stays
        assert decode["F16"].bytes - decode[name].bytes == pytest.approx(block_params * (16 - bits) / 8)
    assert decode["Q4_0"].time_s < decode["Q8_0"].time_s < decode["F16"].time_s
    assert roofline.precision(4) == "int4" and roofline.precision(8) == "int8"  # integer kernels, not fp16


@pytest.fixture
def tiny_suites(monkeypatch):
    """Suites of tiny shapes (the tiny checkpoints have 4 layers, hidden 64, 256 positions), timed on one
    thread (llama.cpp's thread barriers make tiny models slow and noisy on a busy machine)."""
    from autocompress.hosts.llamacpp import LlamaCpp

    monkeypatch.setattr(LlamaCpp, "threads", 1)
    monkeypatch.setattr(LlamaCpp, "decode_tokens", 4)
    monkeypatch.setattr(suites, "LLAMACPP_PROBE", Shape("probe", 2, prompt_tokens=64, context_tokens=16))
    monkeypatch.setattr(
        suites,
        "LLAMACPP_CALIBRATION_SHAPES",
        (
            Shape("4 layers", 4, prompt_tokens=32, context_tokens=64),
            Shape("1 layer", 1, prompt_tokens=16, context_tokens=16),
            Shape("3 layers, ffn 256", 3, 256, prompt_tokens=48, context_tokens=96),
        ),
    )
    monkeypatch.setattr(
        suites, "LLAMACPP_VALIDATION_SHAPES", (Shape("2 layers", 2, prompt_tokens=24, context_tokens=48),)
    )
    monkeypatch.setattr(
        suites,
        "LLAMACPP_VALIDATION_RECIPES",
        {"int4 g32": [{"technique": "quantize", "params": {"bits": 4, "group_size": 32}}]},
    )


@needs_llama
def test_a_gguf_sample_is_timed_at_its_prompt_and_context(tiny_checkpoints):
    runtime = host_runtime("llamacpp", str(tiny_checkpoints["llama"]))
    runtime.threads, runtime.decode_tokens = 1, 4
    model = suites.with_block_format(build_model("llama"), WeightFormat(4, 32))
    timing = runtime.time(model, Workload(prompt_tokens=40, context_tokens=120), repeats=2)
    assert 0 < timing.decode_ms_per_token < 1e3 and 0 < timing.prefill_ms < 1e4


@needs_llama
def test_calibrate_and_validate_llamacpp_write_and_check_a_valid_target(tiny_checkpoints, tiny_suites, tmp_path):
    ckpt, path = str(tiny_checkpoints["llama"]), tmp_path / "host-llamacpp.yaml"
    result = CliRunner().invoke(
        app, ["hardware", "calibrate", "--runtime", "llamacpp", "--model", ckpt, "--out", str(path), "--repeats", "3"]
    )
    assert result.exit_code == 0, result.output
    assert "fit on 9 models" in result.output  # 3 shapes x F16, Q8_0, Q4_0
    target = load_target(str(path))
    assert target.name == "host-llamacpp" and target.runtime_bits is None and "llama.cpp" in target.runtime
    assert set(target.features) == {"int8_weights", "int4_weights", "int8_activations"}
    assert 0 < target.sustained_bandwidth_fraction <= 1 and 0 < target.compute_efficiency <= 1
    lines = path.read_text().splitlines()
    for key in (
        "memory_bandwidth_gbps",
        "sustained_bandwidth_fraction",
        "compute_efficiency",
        "per_op_overhead_us",
        "features",
        "uncertainty",
    ):
        assert lines[next(i for i, line in enumerate(lines) if line.startswith(key)) - 1].startswith("#"), key
    assert "runtime_bits" not in yaml.safe_load(path.read_text())

    checked = CliRunner().invoke(
        app, ["hardware", "validate", "--target", str(path), "--model", ckpt, "--repeats", "3", "--json"]
    )
    assert checked.exit_code == 0, checked.output
    report = json.loads(checked.stdout[checked.stdout.index("{") :])
    assert report["summary"]["configurations"] == 4  # 1 shape x 3 formats + 1 recipe
    assert [r["config"] for r in report["rows"]] == ["2 layers F16", "2 layers Q8_0", "2 layers Q4_0", "int4 g32"]
    assert all(r["decode_ms_per_token"]["measured"] > 0 and r["prefill_ms"]["predicted"] > 0 for r in report["rows"])
    assert report["summary"]["decode_mape"] >= 0 and 0 <= report["summary"]["prefill_within_10"] <= 100


@needs_llama
def test_quantized_variants_come_from_llama_cpp_and_hold_the_priced_bytes(tiny_checkpoints, tmp_path):
    from autocompress.hosts.llamacpp import block_type, check_priced_bytes

    runtime = host_runtime("llamacpp", str(tiny_checkpoints["llama"]))
    model = build_model("llama")
    assert block_type(model) == "F16"
    runtime.gguf(model, tmp_path)  # the F16 export, kept for the variants of this model
    for name in ("Q8_0", "Q4_0"):
        path = runtime.gguf(suites.with_block_format(model, suites.GGUF_FORMATS[name]), tmp_path)
        assert path.name == f"{name}.gguf"  # written by llama_model_quantize, not the exporter
        types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(path)).tensors}
        assert types["token_embd.weight"] == "F16" and types["blk.0.ffn_down.weight"] == name
        check_priced_bytes(model, path)
    suites.with_block_format(model, WeightFormat(3, 32))  # no GGUF type: the exporter writes Q4_0
    assert block_type(model) is None
    with pytest.raises(RuntimeError, match="profile prices"):
        check_priced_bytes(model, runtime.gguf(model, tmp_path))
