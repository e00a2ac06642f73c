"""autocompress.ggml: llama.cpp's type table and its own quantizers through ctypes."""

import ctypes
import importlib.util

import gguf
import numpy as np
import pytest
import torch

from autocompress.errors import ConfigError
from autocompress.ggml import TYPES, WEIGHT_TYPES, ggml_type, native, vec_dot_type

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="the [llamacpp] extra is not installed (CI installs it)"
)
COLS = 512  # a multiple of 256: every type fits


def weights(rows=16, cols=COLS, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def test_block_sizes_come_from_gguf():
    names = ["F32", "F16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"]
    assert list(WEIGHT_TYPES) == names
    for name, spec in WEIGHT_TYPES.items():
        assert spec.id == int(gguf.GGMLQuantizationType[name])
        assert (spec.block, spec.block_bytes) == gguf.GGML_QUANT_SIZES[spec.gguf]
    assert ggml_type("q4_0").bits_per_weight == 4.5 and ggml_type("Q8_0").bits_per_weight == 8.5
    assert ggml_type("Q4_K").bits_per_weight == 4.5 and ggml_type("Q6_K").bits_per_weight == 6.5625
    assert ggml_type("Q4_0").tensor_bytes(576, 576) == 576 * 18 * 18


def test_k_quants_fit_only_rows_that_are_multiples_of_256():
    for name in ("Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"):
        assert ggml_type(name).fits(1536) and not ggml_type(name).fits(576)
        with pytest.raises(ConfigError, match="576 columns are not a multiple of .*256"):
            ggml_type(name).row_bytes(576)
    for name in ("F16", "Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "IQ4_NL"):
        assert ggml_type(name).fits(576) and ggml_type(name).fits(1536)


def test_vec_dot_types_follow_ggml_cpu():
    expect = {
        "Q8_0": "Q8_0",
        "Q5_0": "Q8_0",
        "Q4_0": "Q8_0",
        "IQ4_NL": "Q8_0",
        "Q4_1": "Q8_1",
        "Q5_1": "Q8_1",
        "F16": "F16",
        "F32": "F32",
        **{f"Q{b}_K": "Q8_K" for b in range(2, 7)},
    }
    assert {name: vec_dot_type(name).name for name in WEIGHT_TYPES} == expect


def test_unknown_type_names_the_allowed_ones():
    with pytest.raises(ConfigError, match=r"^levels\.q3: unknown ggml type 'q3_1'; allowed: F32, F16, Q8_0"):
        ggml_type("q3_1", "levels.q3")
    with pytest.raises(ConfigError, match="unknown ggml type 'Q8_K'"):
        ggml_type("Q8_K")  # an activation type, not a weight type
    assert ggml_type("Q8_K", weights_only=False).block == 256


@needs_llama
def test_sizes_agree_with_the_library():
    lib = native.library()
    lib.ggml_type_size.restype, lib.ggml_type_size.argtypes = ctypes.c_size_t, [ctypes.c_int]
    for spec in TYPES.values():
        assert (lib.ggml_blck_size(spec.id), lib.ggml_type_size(spec.id)) == (spec.block, spec.block_bytes), spec.name


@needs_llama
@pytest.mark.parametrize("name", list(WEIGHT_TYPES))
def test_native_dequantize_equals_gguf_bit_for_bit(name):
    spec = ggml_type(name)
    w = weights()
    for importance in (None, torch.rand(COLS) + 0.1):
        packed = native.quantize(w, name, importance)
        assert packed.dtype == torch.uint8 and packed.shape == (16, spec.row_bytes(COLS))
        ours = native.dequantize(packed, name, COLS)
        theirs = torch.from_numpy(gguf.quants.dequantize(packed.numpy(), spec.gguf).astype(np.float32))
        assert torch.equal(bits(ours), bits(theirs))


@needs_llama
def test_quantization_error_is_small_and_ordered_by_bits():
    w = weights(64)
    err = {n: float(((native.dequantize(native.quantize(w, n), n, COLS) - w) ** 2).mean()) for n in WEIGHT_TYPES}
    assert err["F32"] == 0 and err["F16"] < 1e-7 and err["Q8_0"] < 1e-4 and err["Q4_0"] < 0.01
    chain = ["F16", "Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K"]
    assert [err[n] for n in chain] == sorted(err[n] for n in chain)
    five, four = ("Q5_0", "Q5_1", "Q5_K"), ("Q4_0", "Q4_1", "IQ4_NL", "Q4_K")
    assert max(err[n] for n in five) < min(err[n] for n in four) and max(err[n] for n in four) < err["Q3_K"]
    assert err["Q5_1"] < err["Q5_0"] and err["Q4_1"] < err["Q4_0"] and err["IQ4_NL"] < err["Q4_0"]


@needs_llama
@pytest.mark.parametrize("name", ["Q5_0", "Q5_1", "Q4_0", "Q4_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"])
def test_importance_changes_the_result_and_lowers_the_weighted_error(name):
    w = weights(64)
    importance = torch.rand(COLS, generator=torch.Generator().manual_seed(1)) ** 4 * 100 + 0.01

    def weighted_error(imp):
        q = native.dequantize(native.quantize(w, name, imp), name, COLS)
        return float((importance * (q - w) ** 2).sum())

    assert not torch.equal(native.quantize(w, name, importance), native.quantize(w, name))
    assert weighted_error(importance) < weighted_error(None)


@needs_llama
def test_types_whose_quantizer_ignores_importance_accept_it():
    w = weights()
    for name in ("Q8_0", "F16", "F32"):
        assert torch.equal(native.quantize(w, name, torch.rand(COLS) + 0.1), native.quantize(w, name))


@needs_llama
def test_row_chunks_on_threads_give_the_same_bytes(monkeypatch):
    w, importance = weights(100), torch.rand(COLS) + 0.1
    cases = [("Q4_0", None), ("Q4_K", importance)]
    whole = [native.quantize(w, name, imp, threads=1) for name, imp in cases]
    monkeypatch.setattr(native, "_CHUNK_WEIGHTS", 7 * COLS)  # 15 chunks of 7 rows, the last of 2
    for (name, imp), packed in zip(cases, whole):
        assert torch.equal(native.quantize(w, name, imp, threads=2), packed)
        one = native.dequantize(packed, name, COLS, threads=1)
        assert torch.equal(native.dequantize(packed, name, COLS, threads=2), one)


@needs_llama
def test_f16_is_ggml_s_own_rounding():
    edges = torch.tensor([65519.0, 65520.0, -1e-8])  # largest finite, first overflow, below the subnormals
    x = torch.cat([torch.randn(4096), torch.randn(4096) * 1e-6, torch.randn(4096) * 3e4, edges])
    ours = native.quantize(x.reshape(1, -1), "F16").view(torch.float16).numpy()
    assert np.array_equal(ours.reshape(-1).view(np.uint16), native.fp32_to_fp16_row(x.numpy()).view(np.uint16))


@needs_llama
def test_bad_input_gives_one_line_errors():
    w = weights()
    with pytest.raises(ConfigError, match="^weight: 500 columns are not a multiple of Q4_0's block of 32$"):
        native.quantize(w[:, :500], "Q4_0")
    with pytest.raises(ConfigError, match=r"^importance: must have shape \[512\]"):
        native.quantize(w, "Q4_0", torch.ones(511))
    with pytest.raises(ConfigError, match="^importance: must be finite, non-negative and not all zero"):
        native.quantize(w, "Q4_0", torch.zeros(COLS))
    with pytest.raises(ConfigError, match="^weight: has NaN"):
        native.quantize(torch.full((2, 32), float("nan")), "Q4_0")
    with pytest.raises(ConfigError, match="^packed: rows of 288 bytes; 512 columns of Q4_1 take 320$"):
        native.dequantize(native.quantize(w, "Q4_0"), "Q4_1", COLS)


EXTRA = r"pip install 'autocompress\[llamacpp\]'$"


@pytest.fixture
def fresh_library():
    native.library.cache_clear()
    native.cpu_library.cache_clear()
    yield
    native.library.cache_clear()
    native.cpu_library.cache_clear()


def test_missing_llama_cpp_names_the_extra(monkeypatch, fresh_library):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(ConfigError, match="^llama_cpp: llama-cpp-python is not installed; " + EXTRA):
        native.quantize(weights(), "Q4_0")
    assert torch.equal(native.dequantize(native.quantize(weights(), "F16"), "F16", COLS), weights().half().float())


def test_missing_library_file_names_the_extra(monkeypatch, fresh_library, tmp_path):
    (tmp_path / "llama_cpp").mkdir()
    spec = importlib.machinery.ModuleSpec("llama_cpp", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "llama_cpp")]
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: spec)
    with pytest.raises(ConfigError, match=r"^llama_cpp: libggml-base\.\w+ is missing from .*; " + EXTRA):
        native.dequantize(torch.zeros(1, 18, dtype=torch.uint8), "Q4_0", 32)
