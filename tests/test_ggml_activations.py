"""autocompress.ggml.activations: the activation operand as llama.cpp's CPU backend quantizes it."""

import importlib.util

import numpy as np
import pytest
import torch

from autocompress.errors import ConfigError
from autocompress.ggml import activations, native

needs_llama = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="the [llamacpp] extra is not installed (CI installs it)"
)
COLS = 1536  # SmolLM2's down_proj input: 6 blocks of 256


def tokens(rows=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, COLS, generator=g) * torch.rand(rows, COLS, generator=g) * 4
    x[1, :256] = 0  # an all-zero block
    x[2, :32] = -x[2, :32].abs()  # a block whose largest magnitude is negative
    return x


def ties():
    """One Q8_0 block whose scale is exactly 1: every x * id lands on a .5 tie."""
    return torch.tensor([[127.0] + [0.5, 1.5, 2.5, -0.5, -2.5] * 6 + [3.5]])


def decoded(packed: torch.Tensor, name: str, cols: int) -> torch.Tensor:
    """ggml's dequantizer; Q8_1 has none, so its blocks (fp16 d, fp16 s, 32 int8) are read here."""
    if name != "Q8_1":
        return native.dequantize(packed, name, cols)
    blocks = packed.numpy().reshape(-1, 36)
    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)
    return torch.from_numpy((blocks[:, 4:].view(np.int8) * d).reshape(packed.shape[0], cols))


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


@needs_llama
@pytest.mark.parametrize("name", ["Q8_0", "Q8_1", "Q8_K"])
def test_reference_variant_equals_ggml_reference_quantizer(name):
    x = tokens()
    reference = decoded(native.quantize_rows(x, name, "ref"), name, COLS)
    assert torch.equal(bits(activations.emulate(x, name, "ref")), bits(reference))


@needs_llama
@pytest.mark.skipif(activations.host_variant() != "x86", reason="checks the x86 SIMD quantizer")
@pytest.mark.parametrize("name", ["Q8_0", "Q8_1", "Q8_K"])
def test_host_variant_equals_the_host_simd_quantizer(name):
    x = torch.cat([tokens(), torch.nn.functional.pad(ties(), (0, COLS - 32))])
    host = decoded(native.quantize_rows(x, name, "cpu"), name, COLS)
    assert torch.equal(bits(activations.emulate(x, name)), bits(host))


@needs_llama
def test_variants_differ_on_ties_as_the_implementations_do():
    ref = decoded(native.quantize_rows(ties(), "Q8_0", "ref"), "Q8_0", 32)
    assert ref[0, 1:6].tolist() == [1.0, 2.0, 3.0, -1.0, -3.0]  # roundf: away from zero
    assert torch.equal(activations.emulate(ties(), "Q8_0", "ref"), ref)
    assert activations.emulate(ties(), "Q8_0", "x86")[0, 1:6].tolist() == [0.0, 2.0, 2.0, -0.0, -2.0]
    assert torch.equal(activations.emulate(ties(), "Q8_0", "arm"), activations.emulate(ties(), "Q8_0", "x86"))


def test_q8_0_values_lie_on_fp16_scaled_int8():
    x = tokens(rows=4)
    y = activations.emulate(x, "Q8_0", "ref").reshape(4, -1, 32)
    d = x.reshape(4, -1, 32).abs().amax(-1, keepdim=True).div(127).half().float()
    q = torch.where(d != 0, y / torch.where(d != 0, d, 1), 0)
    assert torch.equal(q, q.round()) and q.abs().max() <= 127


def test_for_weight_uses_the_vec_dot_type():
    x = tokens(rows=4)
    assert torch.equal(activations.for_weight(x, "Q4_1", "ref"), activations.emulate(x, "Q8_1", "ref"))
    assert torch.equal(activations.for_weight(x, "Q6_K"), activations.emulate(x, "Q8_K"))
    assert torch.equal(activations.for_weight(x, "F16"), x.half().float())
    assert torch.equal(activations.for_weight(x, "F32"), x)


def test_activation_errors_are_one_line():
    with pytest.raises(ConfigError, match="^activations: last dimension 576 is not a multiple of Q8_K's block of 256$"):
        activations.for_weight(torch.zeros(1, 576), "Q4_K")
    with pytest.raises(ConfigError, match="^variant: unknown 'avx'; allowed: ref, x86, arm$"):
        activations.emulate(torch.zeros(1, 32), "Q8_0", "avx")
    with pytest.raises(ConfigError, match="^activation type: Q4_0 is no activation type"):
        activations.emulate(torch.zeros(1, 32), "Q4_0")
