"""autocompress.ggml.grid: llama.cpp's packed grids read back, re-rounded and re-encoded exactly."""

import importlib.util

import pytest
import torch
from gguf.quants import IQ4_NL

from autocompress.errors import ConfigError
from autocompress.ggml import native
from autocompress.ggml.grid import Grid
from autocompress.ggml.layouts import LAYOUTS

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="the [llamacpp] extra is not installed (CI installs it)"
)
COLS = 512
GRID_TYPES = list(LAYOUTS)


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def problem(rows=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, COLS, generator=g) * torch.rand(rows, 1, generator=g)
    return w, torch.rand(COLS, generator=g) ** 2 + 0.05


def test_grids_cover_the_legacy_types_and_the_k_quants():
    assert set(GRID_TYPES) == {"Q8_0", "Q5_0", "Q5_1", "Q4_0", "Q4_1", "IQ4_NL", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K"}


@pytest.mark.parametrize("name", GRID_TYPES)
@pytest.mark.parametrize("with_importance", [False, True])
def test_codes_of_llama_cpp_re_encode_to_the_same_bytes(name, with_importance):
    w, importance = problem()
    packed = native.quantize(w, name, importance if with_importance else None)
    grid = Grid(packed, name, COLS)
    assert grid.codes.dtype == torch.uint8 and grid.codes.shape == w.shape
    assert torch.equal(grid.encode(grid.codes), packed)  # byte for byte
    assert torch.equal(bits(grid.values()), bits(native.dequantize(packed, name, COLS)))  # bit for bit


@pytest.mark.parametrize("name", GRID_TYPES)
def test_any_codes_dequantize_in_llama_cpp_to_the_grid_values(name):
    w, _ = problem()
    grid = Grid.quantize(w, name)
    codes = torch.randint(0, grid.n_codes, w.shape, generator=torch.Generator().manual_seed(2))
    packed = grid.encode(codes)
    assert torch.equal(bits(native.dequantize(packed, name, COLS)), bits(grid.values(codes)))
    assert torch.equal(Grid(packed, name, COLS).codes, codes.to(torch.uint8))
    assert torch.equal(Grid(packed, name, COLS).scale, grid.scale)  # the scales held fixed


@pytest.mark.parametrize("name", GRID_TYPES)
def test_nearest_is_the_exact_nearest_representable_value(name):
    w, _ = problem(rows=8)
    grid = Grid.quantize(w, name)
    target = w + 0.05 * torch.randn(w.shape, generator=torch.Generator().manual_seed(3))  # as after GPTQ updates
    codes, values = grid.nearest(target)
    assert codes.dtype == torch.uint8 and torch.equal(bits(values), bits(grid.values(codes)))
    for j in range(0, COLS, 37):
        options = grid.representable(j)
        assert options.shape == (8, grid.n_codes)
        assert torch.equal((values[:, j] - target[:, j]).abs(), (options - target[:, j : j + 1]).abs().min(1).values)
        col_codes, col_values = grid.nearest(target[:, j], column=j)
        assert torch.equal(col_codes, codes[:, j]) and torch.equal(col_values, values[:, j])
    assert torch.equal(grid.nearest(grid.values())[1], grid.values())  # the grid's own values are fixed points


def test_iq4_nl_offers_its_codebook_times_the_block_scale():
    w, _ = problem(rows=4)
    grid = Grid.quantize(w, "IQ4_NL")
    d = grid.scale[:, 0:1]
    assert torch.equal(grid.representable(5), torch.tensor(IQ4_NL.kvalues, dtype=torch.float32) * d)


def test_q8_0_offers_the_full_int8_range():
    w, _ = problem(rows=2)
    grid = Grid.quantize(w, "Q8_0")
    codes = torch.zeros(w.shape, dtype=torch.uint8)  # level -128
    assert torch.equal(native.dequantize(grid.encode(codes), "Q8_0", COLS), grid.scale.repeat_interleave(32, 1) * -128)


def test_grid_errors_are_one_line():
    w, _ = problem(rows=2)
    with pytest.raises(ConfigError, match="^type: F16 has no fixed grid; grids exist for Q8_0"):
        Grid(native.quantize(w, "F16"), "F16", COLS)
    grid = Grid.quantize(w, "Q4_0")
    with pytest.raises(ConfigError, match=r"^codes: must lie in 0\.\.15 for Q4_0$"):
        grid.encode(torch.full(w.shape, 16))
    with pytest.raises(ConfigError, match=r"^codes: must be an integer tensor of shape \[2, 512\]$"):
        grid.encode(torch.zeros(2, 500, dtype=torch.long))
    with pytest.raises(ConfigError, match=r"^values: must have shape \[2\]"):
        grid.nearest(w, column=3)
    with pytest.raises(ConfigError, match=r"^column: 512 is outside 0\.\.511$"):
        grid.nearest(w[:, 0], column=512)
    with pytest.raises(ConfigError, match="^packed: rows of 288 bytes; 512 columns of Q4_1 take 320$"):
        Grid(native.quantize(w, "Q4_0"), "Q4_1", COLS)
