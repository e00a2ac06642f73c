"""Hardware cost models: profiles of tiny in-process models, the roofline's invariants, the targets."""

from __future__ import annotations

import re
from dataclasses import replace

import pytest
import torch
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from autocompress import catalog
from autocompress.errors import ConfigError
from autocompress.hardware import (
    HARDWARE_MODELS,
    HardwareTarget,
    LinearProfile,
    ModelProfile,
    RooflineModel,
    Workload,
    cost_metrics,
    list_targets,
    load_target,
    profile_model,
)
from autocompress.metrics import COST_METRICS, metric_name
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format

SHIPPED = (
    "apple-m2-cpu",
    "apple-m2-gpu",
    "intel-core-ultra-cpu",
    "jetson-orin-nano",
    "raspberry-pi-5",
    "snapdragon-8-gen3-cpu",
    "snapdragon-8-gen3-gpu",
    "snapdragon-8-gen3-npu",
)
GEOMETRY = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=4,
    num_attention_heads=4,
    num_key_value_heads=2,
    vocab_size=256,
)


def tiny(arch: str, tied: bool = True) -> nn.Module:
    torch.manual_seed(0)
    if arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**GEOMETRY, tie_word_embeddings=tied)).eval()
    return Qwen2ForCausalLM(Qwen2Config(**GEOMETRY, tie_word_embeddings=tied)).eval()


def quantize_formats(model: nn.Module, bits: int, group_size: int | None = 32, symmetric: bool = True) -> nn.Module:
    """Record a storage format on every linear (the LM head too) and the embedding."""
    adapter = ModelAdapter(model)
    for site in adapter.linear_sites(include_lm_head=True):
        set_weight_format(site.module, WeightFormat(bits, group_size, symmetric))
    set_weight_format(adapter.input_embedding, WeightFormat(bits, group_size, symmetric))
    return model


def smollm_like(bits: int = 16, group_size: int | None = None) -> ModelProfile:
    """A SmolLM2-135M-shaped profile, written by hand (no model needed)."""
    layers, h, inter, heads, kv, d, vocab = 30, 576, 1536, 9, 3, 64, 49152
    shapes = [
        ("attn.q", h, heads * d),
        ("attn.k", h, kv * d),
        ("attn.v", h, kv * d),
        ("attn.o", heads * d, h),
        ("mlp.gate", h, inter),
        ("mlp.up", h, inter),
        ("mlp.down", inter, h),
    ]
    linears = [
        LinearProfile(f"layers.{i}.{role}", role, i, n_in, n_out, bits, group_size)
        for i in range(layers)
        for role, n_in, n_out in shapes
    ]
    linears.append(LinearProfile("lm_head", "lm_head", None, h, vocab, bits, group_size))
    return ModelProfile(
        layers,
        h,
        heads,
        kv,
        d,
        inter,
        vocab,
        tuple(linears),
        embedding_bits=bits,
        tied_embeddings=True,
        embedding_group_size=group_size,
    )


@pytest.fixture(scope="module")
def targets() -> dict[str, HardwareTarget]:
    return {name: load_target(name) for name in SHIPPED}


@pytest.fixture(scope="module")
def pi(targets: dict[str, HardwareTarget]) -> RooflineModel:
    return RooflineModel(targets["raspberry-pi-5"])


# ---- profiles ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch,tied", [("llama", True), ("qwen2", False)])
def test_profile_matches_model(arch: str, tied: bool) -> None:
    model = tiny(arch, tied)
    prof = profile_model(model)
    assert (prof.num_layers, prof.hidden_size, prof.num_heads, prof.num_kv_heads, prof.head_dim) == (4, 64, 4, 2, 16)
    assert (prof.intermediate_size, prof.vocab_size, prof.tied_embeddings) == (128, 256, tied)
    assert len(prof.linears) == 4 * 7 + 1
    by_name = dict(model.named_modules())
    for lin in prof.block_linears:
        weight = by_name[lin.name].weight
        assert (lin.out_features, lin.in_features) == tuple(weight.shape)
        assert lin.bits == 16 and lin.sparsity == 0.0
    assert [lin.role for lin in prof.linears[:7]] == [
        "attn.q",
        "attn.k",
        "attn.v",
        "attn.o",
        "mlp.gate",
        "mlp.up",
        "mlp.down",
    ]
    head = prof.lm_head
    assert head is not None and (head.in_features, head.out_features) == (64, 256)
    # parameter count = every linear and embedding weight, a tied one once (norms/biases excluded)
    weights = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))}
    assert prof.num_parameters == sum(weights.values())
    assert prof.weight_bytes() == 2 * prof.num_parameters  # fp16 by default


def test_profile_reads_formats_sparsity_and_removed_layers() -> None:
    model = quantize_formats(tiny("llama"), bits=4, group_size=32)
    down = ModelAdapter(model).layers[1].mlp.down_proj
    with torch.no_grad():
        down.weight[:, ::2] = 0  # zero every other input column: 50% sparse and a 2:4 pattern
    prof = profile_model(model)
    assert {lin.bits for lin in prof.linears} == {4} and prof.embedding_bits == 4
    lin = next(lin for lin in prof.linears if lin.name.endswith("layers.1.mlp.down_proj"))
    assert lin.sparsity == pytest.approx(0.5) and lin.sparse_2_4
    # 4 bits per weight plus one fp16 scale per group of 32 (Q4_0's 4.5 bits); asymmetric adds a zero point
    assert lin.dense_bytes == 128 * 64 / 2 + 64 * (128 // 32) * 2
    asym = profile_model(quantize_formats(tiny("llama"), bits=4, group_size=32, symmetric=False))
    assert next(x for x in asym.linears if x.name == lin.name).dense_bytes == 128 * 64 / 2 + 64 * (128 // 32) * 4

    ModelAdapter(model).keep_layers([0, 3])
    short = profile_model(model)
    assert short.num_layers == 2 and len(short.block_linears) == 14
    assert {lin.layer for lin in short.block_linears} == {0, 1}


# ---- roofline invariants --------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fewer_bits_is_not_slower_and_uses_less_memory(arch: str, targets: dict[str, HardwareTarget]) -> None:
    costs = {
        bits: profile_model(quantize_formats(tiny(arch), bits)) if bits < 16 else profile_model(tiny(arch))
        for bits in (16, 8, 4)
    }
    for target in targets.values():
        pred = {bits: RooflineModel(target).predict(p, Workload()) for bits, p in costs.items()}
        for hi, lo in ((16, 8), (8, 4)):
            assert pred[lo]["decode_ms_per_token"] < pred[hi]["decode_ms_per_token"]
            assert pred[lo]["prefill_ms"] <= pred[hi]["prefill_ms"]
            assert pred[lo]["peak_memory_mb"] < pred[hi]["peak_memory_mb"]


def test_int4_without_kernel_saves_traffic_but_computes_at_fp16(targets: dict[str, HardwareTarget]) -> None:
    pi = targets["raspberry-pi-5"]
    no_int4 = pi.model_copy(update={"features": ("int8_weights", "int8_activations")})
    prof4 = smollm_like(4, 32)
    with_kernel, without = RooflineModel(pi), RooflineModel(no_int4)
    assert with_kernel.precision(4) == "int4" and without.precision(4) == "fp16"
    wl = Workload()
    # same bytes either way; without the kernel the prefill math runs at the (slower) fp16 rate
    assert without.phase_cost(prof4, wl, "decode").bytes == with_kernel.phase_cost(prof4, wl, "decode").bytes
    assert without.predict(prof4)["prefill_ms"] > 1.5 * with_kernel.predict(prof4)["prefill_ms"]
    assert (
        without.predict(prof4)["decode_ms_per_token"]
        < RooflineModel(no_int4).predict(smollm_like())["decode_ms_per_token"]
    )


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_fewer_layers_is_faster(arch: str, pi: RooflineModel) -> None:
    model = tiny(arch)
    full = pi.predict(profile_model(model))
    ModelAdapter(model).keep_layers([0, 2])
    half = pi.predict(profile_model(model))
    assert half["decode_ms_per_token"] < full["decode_ms_per_token"]
    assert half["prefill_ms"] < full["prefill_ms"]
    assert half["peak_memory_mb"] < full["peak_memory_mb"]


def test_decode_is_memory_bound_and_prefill_compute_bound_on_pi(pi: RooflineModel) -> None:
    prof = smollm_like()
    decode = pi.phase_cost(prof, Workload(context_tokens=512), "decode")
    prefill = pi.phase_cost(prof, Workload(prompt_tokens=512), "prefill")
    assert decode.memory_s > 5 * decode.compute_s
    assert prefill.compute_s > 3 * prefill.memory_s
    # decode is close to "stream every weight once at the sustained bandwidth"
    streaming_ms = prof.weight_bytes() / pi.target.sustained_bytes_per_s * 1e3
    assert streaming_ms < pi.predict(prof)["decode_ms_per_token"] < 1.25 * streaming_ms
    # prefill FLOPs: 2 per weight per token (LM head for the last token only) plus causal attention
    p, blocks = 512, sum(lin.params for lin in prof.block_linears)
    attention = 30 * 4 * 9 * 64 * p * (p + 1) / 2
    assert prefill.flops == pytest.approx(2 * blocks * p + 2 * prof.lm_head.params + attention)


def test_kv_memory_grows_linearly_with_context(pi: RooflineModel) -> None:
    prof = smollm_like()
    peak = [pi.predict(prof, Workload(context_tokens=c))["peak_memory_mb"] for c in (512, 1024, 1536)]
    per_512 = 2 * 30 * 3 * 64 * 512 * 2 / 1e6  # K and V, fp16, every layer
    assert peak[1] - peak[0] == pytest.approx(per_512)
    assert peak[2] - peak[1] == pytest.approx(per_512)
    decode = [pi.predict(prof, Workload(context_tokens=c))["decode_ms_per_token"] for c in (512, 4096)]
    assert decode[1] > decode[0]
    # an int8 KV cache halves that growth on a target with kv_int8
    kv8 = replace(prof, kv_bits=8)
    peak8 = [pi.predict(kv8, Workload(context_tokens=c))["peak_memory_mb"] for c in (512, 1024)]
    assert peak8[1] - peak8[0] == pytest.approx(per_512 / 2)


def test_unstructured_sparsity_needs_a_sparse_kernel(targets: dict[str, HardwareTarget]) -> None:
    model = tiny("llama")
    dense = profile_model(model)
    torch.manual_seed(1)
    with torch.no_grad():
        for site in ModelAdapter(model).linear_sites():
            site.module.weight.mul_(torch.rand_like(site.module.weight) > 0.6)  # ~60% zeros
    sparse = profile_model(model)
    assert all(0.5 < lin.sparsity < 0.7 and not lin.sparse_2_4 for lin in sparse.block_linears)
    for target in targets.values():  # none of the shipped CPU targets has a sparse kernel
        assert not target.has("sparse_unstructured")
        assert RooflineModel(target).predict(sparse) == RooflineModel(target).predict(dense)
    pi = targets["raspberry-pi-5"]
    sparse_pi = RooflineModel(pi.model_copy(update={"features": pi.features + ("sparse_unstructured",)}))
    assert sparse_pi.predict(sparse)["decode_ms_per_token"] < sparse_pi.predict(dense)["decode_ms_per_token"]
    assert sparse_pi.predict(sparse)["peak_memory_mb"] < sparse_pi.predict(dense)["peak_memory_mb"]


def test_tied_head_is_stored_once_but_read_every_step(pi: RooflineModel) -> None:
    tied = smollm_like()
    untied = replace(tied, tied_embeddings=False)
    a, b = pi.predict(tied), pi.predict(untied)
    assert b["peak_memory_mb"] - a["peak_memory_mb"] == pytest.approx(49152 * 576 * 2 / 1e6)
    assert a["decode_ms_per_token"] == b["decode_ms_per_token"]
    head_only = replace(tied, linears=tuple(lin for lin in tied.linears if lin.role != "lm_head"))
    assert pi.predict(head_only)["decode_ms_per_token"] < a["decode_ms_per_token"] - 3  # 57 MB at ~7 GB/s


def test_early_exit_shortens_decode_only(pi: RooflineModel) -> None:
    full = smollm_like()
    half = replace(full, avg_exit_layer=15.0)
    a, b = pi.predict(full), pi.predict(half)
    assert b["decode_ms_per_token"] < 0.6 * a["decode_ms_per_token"]
    assert (b["prefill_ms"], b["peak_memory_mb"]) == (a["prefill_ms"], a["peak_memory_mb"])


def test_exit_checks_are_charged_as_lm_head_reads(pi: RooflineModel) -> None:
    """Each early-exit check reads the LM head once more per decoded token."""
    half = replace(smollm_like(), avg_exit_layer=15.0)
    checked = replace(half, exit_head_reads=2.0)
    head_only = replace(half, linears=tuple(lin for lin in half.linears if lin.role == "lm_head"))
    no_head = replace(head_only, linears=())
    head_ms = pi.predict(head_only)["decode_ms_per_token"] - pi.predict(no_head)["decode_ms_per_token"]
    extra = pi.predict(checked)["decode_ms_per_token"] - pi.predict(half)["decode_ms_per_token"]
    assert extra == pytest.approx(2 * head_ms, rel=1e-6)


def test_cost_metrics_names_and_registry(targets: dict[str, HardwareTarget]) -> None:
    prof = profile_model(tiny("qwen2"))
    metrics = cost_metrics(prof, list(targets.values()), Workload())
    assert set(metrics) == {metric_name(t, m) for t in SHIPPED for m in COST_METRICS}
    assert all(v > 0 for v in metrics.values())
    assert HARDWARE_MODELS["roofline"] is RooflineModel
    # the faster memory system decodes faster
    assert metrics["apple-m2-cpu.decode_ms_per_token"] < metrics["raspberry-pi-5.decode_ms_per_token"]


# ---- targets ----------------------------------------------------------------------------
def test_shipped_targets_load_and_are_plausible(targets: dict[str, HardwareTarget]) -> None:
    assert set(SHIPPED) <= set(list_targets())
    for name, t in targets.items():
        assert t.name == name and t.description and t.runtime
        peak = t.peak_gflops
        # fp16 == fp32 where the hardware has no faster half-precision math (Apple GPUs, AVX2 CPUs)
        assert peak.fp32 <= peak.fp16 <= peak.int8 and peak.int4 >= peak.int8
        assert 5 < t.memory_bandwidth_gbps < 200 and 0.2 <= t.sustained_bandwidth_fraction <= 0.8
        assert 0.05 <= t.compute_efficiency <= 0.6 and 1 <= t.memory_capacity_gb <= 64
    # the derivations cited in the YAML comments hold
    pi = targets["raspberry-pi-5"]
    assert pi.memory_bandwidth_gbps == pytest.approx(4.267 * 4, rel=1e-3)  # LPDDR4X-4267, 32-bit
    assert pi.peak_gflops.fp32 == pytest.approx(4 * 2.4 * 2 * 4 * 2)  # cores x GHz x pipes x lanes x FMA
    assert pi.peak_gflops.int8 == pytest.approx(4 * pi.peak_gflops.fp32)  # SDOT: 16 MACs per 128-bit op
    assert targets["apple-m2-cpu"].memory_bandwidth_gbps == pytest.approx(6.4 * 16)  # LPDDR5-6400, 128-bit
    assert targets["snapdragon-8-gen3-cpu"].memory_bandwidth_gbps == pytest.approx(9.6 * 8)  # LPDDR5X-9600, 64-bit
    for name in ("snapdragon-8-gen3-gpu", "snapdragon-8-gen3-npu"):  # the same LPDDR5X-9600 64-bit bus
        assert targets[name].memory_bandwidth_gbps == pytest.approx(9.6 * 8)
    adreno = targets["snapdragon-8-gen3-gpu"].peak_gflops
    assert adreno.fp32 == pytest.approx(1536 * 2 * 0.903)  # ALUs x FMA x GHz (third-party estimate)
    assert adreno.fp16 == pytest.approx(2 * adreno.fp32)  # Adreno double-rate half precision
    hexagon = targets["snapdragon-8-gen3-npu"].peak_gflops
    assert hexagon.int8 == pytest.approx(16384 * 2 * 1.0)  # HMX MACs/cycle x 2 ops x ~1 GHz (estimate)
    m2_gpu = targets["apple-m2-gpu"]
    assert m2_gpu.memory_bandwidth_gbps == pytest.approx(6.4 * 16)  # LPDDR5-6400, 128-bit
    assert m2_gpu.peak_gflops.fp32 == pytest.approx(10 * 128 * 2 * 1.398, rel=1e-4)  # cores x ALUs x FMA x GHz
    assert m2_gpu.peak_gflops.fp16 == m2_gpu.peak_gflops.fp32  # Apple GPUs: F16 at the F32 rate
    jetson = targets["jetson-orin-nano"]
    assert jetson.memory_bandwidth_gbps == pytest.approx(6.4 * 16)  # LPDDR5-6400, 128-bit ("102 GB/s")
    assert jetson.peak_gflops.fp32 == pytest.approx(1024 * 2 * 1.02)  # CUDA cores x FMA x GHz (Super mode)
    assert 2 * jetson.peak_gflops.int8 == pytest.approx(67_000, rel=0.01)  # 2:4 sparse INT8 = NVIDIA's "67 TOPS"
    assert jetson.has("sparse_2_4") and not jetson.has("int8_activations")
    ultra = targets["intel-core-ultra-cpu"]
    assert ultra.memory_bandwidth_gbps == pytest.approx(7.467 * 16)  # LPDDR5X-7467, 128-bit (ARK: 120 GB/s)
    assert ultra.peak_gflops.fp32 == pytest.approx(6 * 2 * 8 * 2 * 3.5)  # P-cores x FMA ports x lanes x FMA x GHz
    assert ultra.peak_gflops.int8 == pytest.approx(4 * ultra.peak_gflops.fp32)  # AVX-VNNI: 4x the fp32 FMA rate


@pytest.mark.parametrize("name", SHIPPED)
def test_every_number_cites_a_source(name: str) -> None:
    lines = catalog.resolve("targets", name, "targets").read_text().splitlines()
    number = re.compile(r"^\s*[A-Za-z0-9_]+:\s*-?[0-9.]+\s*(#.*)?$")
    numeric = [i for i, line in enumerate(lines) if number.match(line)]
    assert len(numeric) >= 10  # at least 6 top-level numbers + 4 peaks
    for i in numeric:
        assert "#" in lines[i] or lines[i - 1].lstrip().startswith("#"), f"{name}.yaml:{i + 1} has no source"


def _write(tmp_path, name: str, text: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return path


def test_bad_field_names_the_file_and_field(tmp_path, monkeypatch) -> None:
    good = catalog.resolve("targets", "raspberry-pi-5", "targets").read_text()
    bad = _write(tmp_path, "x", good.replace("memory_bandwidth_gbps: 17.07", "memory_bandwidth_gbps: 0"))
    with pytest.raises(ConfigError, match=r"x\.yaml: memory_bandwidth_gbps: Input should be greater than 0"):
        load_target(str(bad))
    typo = _write(tmp_path, "y", good.replace("  int4: 614.4", "  int4: 614.4\n  bf16: 307.2"))
    with pytest.raises(ConfigError, match=r"peak_gflops\.bf16: unknown key; allowed: fp16, fp32, int4, int8"):
        load_target(str(typo))
    feature = _write(tmp_path, "z", good.replace("  - kv_int8", "  - kv_int2"))
    with pytest.raises(ConfigError, match=r"features\[3\]"):
        load_target(str(feature))
    # loaded by name, the file lives in the catalog and its name must match the file's stem
    monkeypatch.setattr(catalog, "catalog_dir", lambda _: tmp_path)
    _write(tmp_path, "renamed", good)
    with pytest.raises(ConfigError, match=r"^hardware_models/renamed\.yaml: name: must equal"):
        load_target("renamed")
    _write(tmp_path, "w", good.replace("memory_bandwidth_gbps: 17.07", "memory_bandwidth_gbps: 0"))
    with pytest.raises(ConfigError, match=r"^hardware_models/w\.yaml: memory_bandwidth_gbps: Input should be"):
        load_target("w")


def test_unknown_target_lists_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"^targets: unknown hardware model 'jetson'; allowed: apple-m2"):
        load_target("jetson")
