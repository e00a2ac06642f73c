"""All structural techniques and quantization in one recipe, through the shared pipeline."""

import json

import torch
from conftest import CORPUS
from transformers import AutoModelForCausalLM

from autocompress.export.checkpoint import write_artifact
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import load_target
from autocompress.models.adapter import ModelAdapter
from autocompress.pipeline import apply_recipe, evaluate_model, open_session
from autocompress.recipe import Recipe, TextSpec
from autocompress.techniques.early_exit import attach_early_exit


def test_depth_width_sparsity_quantization_and_exit_compose(tiny_checkpoints, tmp_path, arch):
    (tmp_path / "text.txt").write_text(CORPUS * 4)
    spec = TextSpec(source=str(tmp_path / "text.txt"), seq_len=32, calibration_samples=4, eval_samples=4)
    recipe = Recipe(
        model=str(tiny_checkpoints[arch]),
        calibration=spec,
        steps=[
            {"technique": "prune_depth", "params": {"drop_layers": 1}},
            {"technique": "prune_width", "params": {"ffn_ratio": 0.5, "heads_ratio": 0.5}},
            {"technique": "sparsify", "params": {"method": "sparsegpt", "pattern": "2:4"}},
            {"technique": "quantize", "params": {"bits": 8, "group_size": 32}},
            {"technique": "early_exit", "params": {"threshold": 0.2, "exit_layers": [1, 2]}},
        ],
    )
    session = open_session(recipe.model, recipe.calibration, recipe.seed)
    model = apply_recipe(session, recipe)
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.intermediate_size, cfg.num_attention_heads) == (3, 64, 2)
    for site in ModelAdapter(model).linear_sites():  # 2:4 survives 8-bit RTN: zeros stay zero
        w = site.module.weight
        assert ((w.reshape(w.shape[0], -1, 4) != 0).sum(-1) <= 2).all(), site.name
    metrics = evaluate_model(model, session, ["kl"], [load_target("raspberry-pi-5")], Workload())
    assert 1.0 <= metrics["avg_exit_layer"] <= 3.0 and metrics["kl"] > 0
    write_artifact(model, session.base.tokenizer, recipe, metrics, tmp_path / "out")
    record = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert record["avg_exit_layer"] == metrics["avg_exit_layer"]
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "out", dtype=torch.float32).eval()
    attach_early_exit(reloaded)
    ids = session.ctx.evaluation[:2]
    with torch.no_grad():
        assert torch.allclose(reloaded(ids).logits, model(ids).logits, atol=1e-5)
