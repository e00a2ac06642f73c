"""Recorded quantization grids: every method's weights are exactly codes on the grid it records."""

import copy

import pytest
import torch
from conftest import make_context
from test_quant import cached_context, layer_problem, quantize

from autocompress.export.grids import GRID_FILE, load_grids, model_grids, save_grids
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import weight_grid
from autocompress.techniques.quantize.awq import awq
from autocompress.techniques.quantize.gptq import gptq
from autocompress.techniques.quantize.grid import QuantFormat, rtn_grid


def assert_exact_codes(weight: torch.Tensor, grid, bits: int) -> None:
    codes = grid.codes(weight)
    lo, hi = grid.int_range
    assert codes.dtype == torch.int32 and codes.shape == weight.shape
    assert int(codes.min()) >= lo and int(codes.max()) <= hi and hi - lo + 1 == 2**bits
    assert torch.equal(grid.dequantize(codes, weight.dtype), weight)  # bit for bit


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("group", [32, 0])
@pytest.mark.parametrize("symmetric", [True, False])
def test_every_method_records_the_grid_its_weights_lie_on(bits, group, symmetric):
    w, stats = layer_problem()
    fmt = QuantFormat(bits, group, symmetric)
    (awq_result,), alpha = awq([w], [fmt], stats)
    for result in (rtn_grid(w, fmt), gptq(w, stats.hessian, fmt), awq_result):
        assert result.grid.scale.shape == (w.shape[0], w.shape[1] // (group or w.shape[1]))
        assert_exact_codes(result.weight, result.grid, bits)
    assert (awq_result.grid.input_scale is not None) == (alpha > 0)


def test_sixteen_bits_records_no_grid():
    w, stats = layer_problem()
    assert rtn_grid(w, QuantFormat(16, 0)).grid is None and gptq(w, stats.hessian, QuantFormat(16, 0)).grid is None


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_quantized_models_record_grids_that_survive_the_cache_and_the_artifact(tiny_model, tokenizer, tmp_path, method):
    params = dict(method=method, bits=4, group_size=32, overrides=[{"match": "mlp.down", "bits": 8}], embeddings=True)
    cold, warm = copy.deepcopy(tiny_model), copy.deepcopy(tiny_model)
    quantize(cold, cached_context(cold, tokenizer, tmp_path / "cache"), **params)
    quantize(warm, cached_context(warm, tokenizer, tmp_path / "cache"), **params)  # every linear from the cache
    adapter = ModelAdapter(cold)
    for site in adapter.linear_sites():
        grid = weight_grid(site.module)
        assert grid is not None and grid.bits == (8 if site.role == "mlp.down" else 4)
        assert_exact_codes(site.module.weight, grid, grid.bits)
    assert_exact_codes(adapter.input_embedding.weight, weight_grid(adapter.input_embedding), 4)
    save_grids(cold, tmp_path)
    for source in (model_grids(warm), load_grids(tmp_path)):
        assert source.keys() == model_grids(cold).keys()
        for name, module in cold.named_modules():
            if name in source:
                assert torch.equal(source[name].codes(module.weight), weight_grid(module).codes(module.weight))
                assert torch.equal(source[name].dequantize(source[name].codes(module.weight)), module.weight)


def test_an_unquantized_model_writes_no_grid_file(tiny_model, tokenizer, tmp_path):
    assert save_grids(tiny_model, tmp_path) is None and not (tmp_path / GRID_FILE).exists()
    assert load_grids(tmp_path) == {}
    quantize(tiny_model, make_context(tiny_model, tokenizer), bits=16)
    assert save_grids(tiny_model, tmp_path) is None
