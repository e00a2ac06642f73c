"""Artifacts to deployable files: export CLI, deploy.json, packed safetensors, and llama.cpp on the host."""

import importlib.util
import json

import pytest
import torch
from conftest import CORPUS
from typer.testing import CliRunner

from autocompress.cli import app
from autocompress.errors import ConfigError
from autocompress.export.checkpoint import write_artifact
from autocompress.export.deploy import export_gguf
from autocompress.export.packed import export_packed, load_packed, pack_bits, unpack_bits
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import weight_grid
from autocompress.pipeline import apply_recipe, open_session
from autocompress.recipe import Recipe, TextSpec

HAS_LLAMA = importlib.util.find_spec("llama_cpp") is not None
needs_llama = pytest.mark.skipif(not HAS_LLAMA, reason="the [llamacpp] extra is not installed (CI installs it)")


def make_artifact(checkpoint, tmp_path, steps, name="art"):
    (tmp_path / "text.txt").write_text(CORPUS * 4)
    spec = TextSpec(source=str(tmp_path / "text.txt"), seq_len=32, calibration_samples=4, eval_samples=4)
    recipe = Recipe(model=str(checkpoint), calibration=spec, steps=steps)
    session = open_session(recipe.model, recipe.calibration, recipe.seed)
    model = apply_recipe(session, recipe)
    write_artifact(model, session.base.tokenizer, recipe, {}, tmp_path / name)
    return model, tmp_path / name


GGUF_Q4 = [
    {
        "technique": "quantize",
        "params": {
            "method": "gptq",
            "bits": 4,
            "group_size": 32,
            "grid": "gguf",
            "overrides": [{"match": "mlp.down", "bits": 8}],
        },
    }
]


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_bit_packing_round_trips(bits):
    values = torch.randint(0, 2**bits, (1000,))
    packed = pack_bits(values, bits)
    assert packed.numel() == (1000 * bits + 7) // 8
    assert torch.equal(unpack_bits(packed, bits, 1000), values.to(torch.int32))


def test_export_cli_writes_a_lossless_gguf_and_deploy_json(tiny_checkpoints, tmp_path):
    _, artifact = make_artifact(tiny_checkpoints["llama"], tmp_path, GGUF_Q4)
    result = CliRunner().invoke(app, ["export", str(artifact), "--format", "gguf", "--out", str(tmp_path / "m.gguf")])
    assert result.exit_code == 0, result.output
    assert "lossless" in result.output and (tmp_path / "m.gguf").is_file()
    deploy = json.loads((artifact / "deploy.json").read_text())["gguf"]
    assert deploy["lossless"] and deploy["tensor_types"] == {"Q4_0": 24, "Q8_0": 4, "F16": 1, "F32": 9}
    assert deploy["runtime"] == "llama.cpp" and deploy["runtime_gets"]
    bad = CliRunner().invoke(app, ["export", str(artifact), "--format", "onnx"])
    assert bad.exit_code != 0 and isinstance(bad.exception, ConfigError) and "--format" in str(bad.exception)


def test_deploy_json_says_what_llama_cpp_does_not_accelerate(tiny_checkpoints, tmp_path):
    _, artifact = make_artifact(
        tiny_checkpoints["llama"],
        tmp_path,
        [
            {"technique": "sparsify", "params": {"method": "magnitude", "pattern": "2:4"}},
            {"technique": "quantize", "params": {"bits": 8, "group_size": 32, "grid": "gguf"}},
            {"technique": "early_exit", "params": {"threshold": 0.2, "exit_layers": [1, 2]}},
        ],
    )
    export_gguf(artifact)
    lacks = " ".join(json.loads((artifact / "deploy.json").read_text())["gguf"]["runtime_does_not_get"])
    assert "2:4 sparsity" in lacks and "early exit" in lacks


def test_packed_artifact_restores_the_model_and_is_near_the_predicted_size(tiny_checkpoints, tmp_path):
    model, artifact = make_artifact(tiny_checkpoints["llama"], tmp_path, GGUF_Q4)
    result = export_packed(artifact)
    restored = load_packed(artifact / "packed")
    for site, twin in zip(ModelAdapter(model).linear_sites(), ModelAdapter(restored).linear_sites()):
        assert torch.equal(site.module.weight, twin.module.weight), site.name  # bit for bit
        assert weight_grid(twin.module).bits == weight_grid(site.module).bits
    ids = torch.randint(0, 320, (1, 16))
    with torch.no_grad():
        assert torch.allclose(model(ids).logits, restored(ids).logits, atol=1e-2)  # embeddings/norms in fp16
    assert abs(result["file_bytes"] / result["predicted_bytes"] - 1) < 0.15
    assert result["file_bytes"] < 0.45 * result["dense_checkpoint_bytes"]


def test_packed_sparse_weights_store_a_mask_and_the_non_zeros(tiny_checkpoints, tmp_path):
    model, artifact = make_artifact(
        tiny_checkpoints["llama"],
        tmp_path,
        [{"technique": "sparsify", "params": {"method": "magnitude", "pattern": "2:4"}}],
    )
    result = export_packed(artifact)
    restored = load_packed(artifact / "packed")
    for site, twin in zip(ModelAdapter(model).linear_sites(), ModelAdapter(restored).linear_sites()):
        assert torch.equal(site.module.weight.half().float(), twin.module.weight)
    dense_fp16 = sum(p.numel() * 2 for p in model.parameters())
    assert result["file_bytes"] < 0.85 * dense_fp16


@needs_llama
def test_llama_cpp_loads_the_export_and_agrees_with_torch(tiny_checkpoints, tmp_path, arch):
    from autocompress.export.gguf_export import write_gguf
    from autocompress.export.runtime import agreement, gguf_logits, open_gguf, torch_logits

    model, artifact = make_artifact(tiny_checkpoints[arch], tmp_path, GGUF_Q4)
    _, tokenizer = __import__("autocompress.export.deploy", fromlist=["x"]).load_artifact(artifact)
    blocks = torch.randint(0, 320, (2, 32), generator=torch.Generator().manual_seed(0))
    write_gguf(model, tokenizer, tmp_path / "f32.gguf", float_type="F32")
    exact = agreement(torch_logits(model, blocks), gguf_logits(open_gguf(tmp_path / "f32.gguf", 32, True), blocks))
    assert exact.top1_agreement >= 0.95 and exact.kl < 1e-3
    export_gguf(artifact)
    quant = agreement(torch_logits(model, blocks), gguf_logits(open_gguf(artifact / "model.gguf", 32, True), blocks))
    assert quant.top1_agreement >= 0.9 and quant.kl < 0.05  # llama.cpp rounds activations to 8 bits per block


@needs_llama
def test_deploy_measure_records_host_figures(tiny_checkpoints, tmp_path):
    _, artifact = make_artifact(tiny_checkpoints["llama"], tmp_path, GGUF_Q4)
    result = CliRunner().invoke(
        app,
        [
            "deploy",
            "measure",
            str(artifact),
            "--text",
            str(tmp_path / "text.txt"),
            "--samples",
            "2",
            "--seq-len",
            "32",
            "--prompt-tokens",
            "16",
            "--decode-tokens",
            "4",
            "--repeats",
            "2",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.output.strip().splitlines()[-1])
    assert metrics["host.llamacpp.decode_tokens_per_s"] > 0 and metrics["host.llamacpp.prefill_tokens_per_s"] > 0
    assert 0 <= metrics["host.llamacpp.kl"] < 0.05 and metrics["host.llamacpp.top1_agreement"] > 0.9
    assert json.loads((artifact / "deploy.json").read_text())["gguf"]["host"]["repeats"] == 2


def test_job_export_settings_accept_a_flag_or_formats():
    from autocompress.search.job import Job

    base = {"name": "j", "targets": ["raspberry-pi-5"], "objectives": [{"metric": "kl"}]}
    assert Job.from_dict({**base, "export": False}).export.checkpoint is False
    job = Job.from_dict({**base, "export": {"formats": ["gguf", "packed"], "measure": True}})
    assert job.export.checkpoint and job.export.formats == ["gguf", "packed"] and job.export.measure
    with pytest.raises(ConfigError, match="measure"):
        Job.from_dict({**base, "export": {"measure": True}})
    with pytest.raises(ConfigError, match="export"):
        Job.from_dict({**base, "export": {"formats": ["onnx"]}})


@needs_llama
def test_a_job_exports_and_measures_its_pareto_trials_into_their_runs(tmp_path, tiny_checkpoints):
    from test_search import make_job, trial_runs

    from autocompress.backends import run_job

    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        search={"trials": 3, "sampler": "random", "seed": 1},
        export={"formats": ["gguf", "packed"], "measure": True},
    )
    result = run_job(job, progress=False)
    runs = trial_runs(job)
    pareto = [r for r in result.records if r.pareto]
    assert pareto
    for record in pareto:
        folder = job.job_dir / "pareto" / f"trial-{record.number}"
        assert (folder / "model.gguf").is_file() and (folder / "packed" / "model.safetensors").is_file()
        deploy = json.loads((folder / "deploy.json").read_text())
        assert deploy["gguf"]["host"]["decode_tokens_per_s"] > 0 and deploy["packed"]["file_bytes"] > 0
        metrics = runs[record.number].data.metrics
        assert metrics["host.llamacpp.decode_tokens_per_s"] > 0 and "host.llamacpp.kl" in metrics
