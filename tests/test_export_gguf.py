"""GGUF export: llama.cpp's block formats, the gguf grid, lossless round trips, names and errors."""

import copy

import gguf
import numpy as np
import pytest
import torch
from conftest import build_model, make_context
from test_quant import layer_problem, quantize
from test_quant_grid import assert_exact_codes

from autocompress.errors import ConfigError
from autocompress.export.gguf_blocks import QUANTIZERS, pack
from autocompress.export.gguf_export import BLOCK_TYPES, _qk_rows, choose_type, dequantized_tensors, write_gguf
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.quantize.awq import awq
from autocompress.techniques.quantize.gptq import gptq
from autocompress.techniques.quantize.grid import QuantFormat, rtn_grid


@pytest.mark.parametrize("kind", sorted(QUANTIZERS))
def test_block_formats_pack_to_the_bytes_gguf_reads(kind):
    torch.manual_seed(0)
    w = torch.randn(16, 128) * 0.02
    w[0, :32] = 0  # an all-zero block
    q = QUANTIZERS[kind](w)
    raw = pack(q)
    assert raw.dtype == np.uint8 and raw.shape == (16, 4 * gguf.GGML_QUANT_SIZES[BLOCK_TYPES[kind]][1])
    assert np.array_equal(gguf.quants.dequantize(raw, BLOCK_TYPES[kind]).reshape(w.shape), q.dequantize().numpy())
    # the same format as llama.cpp's own quantizer (codes rounded against fp16 scales: rare ties differ)
    assert np.mean(raw == gguf.quants.quantize(w.numpy(), BLOCK_TYPES[kind])) > 0.98
    assert np.all(q.dequantize().numpy()[0, :32] == 0)


@pytest.mark.parametrize("bits,symmetric", [(8, True), (4, True), (4, False)])
def test_every_method_on_the_gguf_grid_lies_on_exact_codes(bits, symmetric):
    w, stats = layer_problem()
    fmt = QuantFormat(bits, 32, symmetric, "gguf")
    (awq_result,), _ = awq([w], [fmt], stats)
    for result in (rtn_grid(w, fmt), gptq(w, stats.hessian, fmt), awq_result):
        assert_exact_codes(result.weight, result.grid, bits)
        scale = result.grid.scale
        assert torch.equal(scale.half().float(), scale)  # fp16 scales, as a GGUF block stores them
        if not symmetric:
            m = -result.grid.zero * scale
            assert torch.equal(m.half().float(), m)  # Q4_1's offset is an exact fp16 number


def test_q4_0_grid_uses_sixteen_levels_like_llama_cpp():
    w, _ = layer_problem()
    result = rtn_grid(w, QuantFormat(4, 32, True, "gguf"))
    codes = result.grid.codes(result.weight)
    assert int(codes.min()) == -8  # the value of largest magnitude maps to -8, as in ggml's quantize_row_q4_0
    ref = QUANTIZERS["Q4_0"](w)
    assert torch.equal(ref.dequantize(), result.weight)  # our quantizer and the grid agree bit for bit


def _gguf_weights(path):
    return {k: torch.from_numpy(v) for k, v in dequantized_tensors(path).items()}


@pytest.mark.parametrize("method", ["rtn", "gptq", "awq"])
def test_gguf_grid_export_is_lossless(tiny_model, tokenizer, tmp_path, method, arch):
    params = dict(
        method=method,
        bits=4,
        group_size=32,
        grid="gguf",
        embeddings=True,
        overrides=[{"match": "mlp.down", "bits": 8}, {"match": "attn.o", "symmetric": False}],
    )
    quantize(tiny_model, make_context(tiny_model, tokenizer), **params)
    report = write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf")
    assert report.lossless, report.summary()
    tensors = _gguf_weights(tmp_path / "m.gguf")
    adapter = ModelAdapter(tiny_model)
    types = {t.name: t.type for t in report.tensors}
    heads = {"attn.q": adapter.num_heads, "attn.k": adapter.num_kv_heads}
    for site in adapter.linear_sites():
        name = (
            f"blk.{site.layer}."
            + {
                "attn.q": "attn_q",
                "attn.k": "attn_k",
                "attn.v": "attn_v",
                "attn.o": "attn_output",
                "mlp.gate": "ffn_gate",
                "mlp.up": "ffn_up",
                "mlp.down": "ffn_down",
            }[site.role]
            + ".weight"
        )
        assert types[name] == {"mlp.down": "Q8_0", "attn.o": "Q4_1"}.get(site.role, "Q4_0")
        expected = site.module.weight.detach()
        grid = site.module._autocompress_weight_grid
        if grid.input_scale is not None:  # AWQ: the file holds Q(W s); 1/s went into the norm
            expected = expected * grid.input_scale
        if arch == "llama" and site.role in heads:
            expected = expected[_qk_rows(expected.shape[0], heads[site.role])]
        if grid.input_scale is None:
            assert torch.equal(tensors[name], expected), name  # bit for bit
        else:
            assert torch.allclose(tensors[name], expected, rtol=1e-6, atol=0), name
    assert torch.equal(tensors["token_embd.weight"], adapter.input_embedding.weight.detach())
    assert "output.weight" not in tensors  # tied head: llama.cpp reuses token_embd


def test_awq_on_the_gguf_grid_folds_its_scale_into_the_norms(tokenizer, tmp_path):
    tiny_model = build_model("llama")
    quantize(tiny_model, make_context(tiny_model, tokenizer), method="awq", bits=4, group_size=32, grid="gguf")
    write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf")
    tensors = _gguf_weights(tmp_path / "m.gguf")
    adapter = ModelAdapter(tiny_model)
    folded = 0
    for i, block in enumerate(adapter.layers):
        for group, norm, gguf_norm in (
            ("attn.in", block.input_layernorm, "attn_norm"),
            ("mlp.in", block.post_attention_layernorm, "ffn_norm"),
        ):
            site = next(s for g, sites in adapter.input_groups() if g == group for s in sites if s.layer == i)
            s = site.module._autocompress_weight_grid.input_scale
            expected = norm.weight.detach() / s if s is not None else norm.weight.detach()
            folded += s is not None
            assert torch.allclose(tensors[f"blk.{i}.{gguf_norm}.weight"], expected)
        for role in ("attn.o", "mlp.down"):  # on the gguf grid these are never AWQ-scaled
            assert adapter.block_linears(i)[role].module._autocompress_weight_grid.input_scale is None
    assert folded > 0


def test_default_grid_is_requantized_with_the_error_reported(tiny_model, tokenizer, tmp_path):
    quantize(tiny_model, make_context(tiny_model, tokenizer), method="rtn", bits=3, group_size=64)
    report = write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf")
    summary = report.summary()
    assert not report.lossless and summary["tensor_types"]["Q4_0"] == 4 * 7
    assert 0 < summary["max_rel_rms_error"] < 0.2
    assert any("w3g64 has no GGUF counterpart" in n for n in summary["notes"])


def test_choose_type_maps_formats_to_the_nearest_block_type():
    assert choose_type(8, 32, True, 64) == ("Q8_0", "")
    assert choose_type(4, 32, True, 64) == ("Q4_0", "")
    assert choose_type(4, 32, False, 64) == ("Q4_1", "")
    assert choose_type(16, None, True, 64) == ("F16", "")
    assert choose_type(8, 64, True, 64)[0] == "Q8_0" and "w8g64" in choose_type(8, 64, True, 64)[1]
    assert choose_type(2, 32, True, 64)[0] == "Q4_0"
    assert choose_type(4, 32, True, 48)[0] == "F16"  # 48 inputs do not tile into blocks of 32


def test_gguf_metadata_and_names_follow_llama_cpp(tiny_model, tokenizer, tmp_path):
    write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf", float_type="F32")
    reader = gguf.GGUFReader(str(tmp_path / "m.gguf"))
    arch = tiny_model.config.model_type
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == arch
    assert fields[f"{arch}.block_count"] == 4 and fields[f"{arch}.embedding_length"] == 64
    assert fields[f"{arch}.attention.head_count_kv"] == 2 and fields[f"{arch}.feed_forward_length"] == 128
    assert fields["tokenizer.ggml.model"] == "gpt2" and len(fields["tokenizer.ggml.tokens"]) == 320
    assert fields["tokenizer.ggml.tokens"][tokenizer.eos_token_id] == "<eos>"
    assert fields["tokenizer.ggml.eos_token_id"] == tokenizer.eos_token_id and fields["tokenizer.ggml.merges"]
    names = {t.name for t in reader.tensors}
    assert {"token_embd.weight", "output_norm.weight", "blk.3.ffn_down.weight", "blk.0.attn_q.weight"} <= names
    tensors = _gguf_weights(tmp_path / "m.gguf")
    assert torch.equal(tensors["blk.2.ffn_down.weight"], tiny_model.model.layers[2].mlp.down_proj.weight.detach())


def test_unsupported_models_and_options_fail_with_one_line(tiny_model, tokenizer, tmp_path):
    with pytest.raises(ConfigError, match="float-type"):
        write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf", float_type="BF8")
    other = copy.deepcopy(tiny_model)
    other.config.model_type = "gpt_neox"
    with pytest.raises(ConfigError, match="supports the llama, qwen2 architectures"):
        write_gguf(other, tokenizer, tmp_path / "m.gguf")
    assert not (tmp_path / "m.gguf").exists() and not list(tmp_path.iterdir())
    ctx = make_context(tiny_model, tokenizer)
    for params, match in (
        (dict(grid="gguf", group_size=64), "group_size 32"),
        (dict(grid="gguf", bits=3, group_size=32), "4-bit"),
        (dict(grid="gguf", bits=8, group_size=32, symmetric=False), "symmetric 8-bit"),
        (dict(grid="gguf", group_size=32, overrides=[{"match": "mlp.down", "bits": 2}]), r"overrides\[0\]"),
    ):
        with pytest.raises(ConfigError, match=match):
            quantize(copy.deepcopy(tiny_model), ctx, **params)


def test_an_unquantized_embedding_can_be_stored_as_a_block_type(tiny_model, tokenizer, tmp_path):
    quantize(tiny_model, make_context(tiny_model, tokenizer), bits=4, group_size=32, grid="gguf")
    report = write_gguf(tiny_model, tokenizer, tmp_path / "m.gguf", embedding_type="Q8_0")
    embd = next(t for t in report.tensors if t.name == "token_embd.weight")
    assert embd.type == "Q8_0" and embd.source == "requested" and 0 < embd.rel_rms_error < 0.01
    assert report.lossless  # the recipe's own quantization still reached the file unchanged
    with pytest.raises(ConfigError, match="--embedding-type"):
        write_gguf(tiny_model, tokenizer, tmp_path / "x.gguf", embedding_type="Q5_K")
