"""Slow: the real SmolLM2-135M-Instruct, end to end (CI runs these too)."""

from __future__ import annotations

import pytest
import torch
from mlflow import MlflowClient
from transformers import AutoModelForCausalLM

from autocompress.backends import run_job
from autocompress.search.job import Job

pytestmark = pytest.mark.slow


def test_short_search_on_smollm2_end_to_end(tmp_path):
    job = Job.from_dict(
        {
            "name": "smollm2-slow",
            "model": "smollm2-135m",
            "space": "demo",
            "targets": ["raspberry-pi-5", "apple-m2-cpu"],
            "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
            "budgets": {"kl": {"max": 2.0}},
            "search": {"trials": 4, "sampler": "random", "seed": 0},
            "calibration": {"seq_len": 64, "calibration_samples": 8, "eval_samples": 4},
            "workdir": str(tmp_path / "runs"),
        }
    )
    result = run_job(job, progress=False)
    assert len(result.records) == 4 and result.front
    complete = [r for r in result.records if r.state == "COMPLETE"]
    assert complete
    for r in complete:
        assert 0 <= r.metrics["kl"] < 10 and r.metrics["perplexity"] > 1
        assert 0 < r.metrics["raspberry-pi-5.decode_ms_per_token"] < 200
        # The Pi has 6x less bandwidth than the M2: every config must predict slower there.
        assert r.metrics["raspberry-pi-5.decode_ms_per_token"] > r.metrics["apple-m2-cpu.decode_ms_per_token"]
    best = result.front[0]
    folder = job.job_dir / "pareto" / f"trial-{best.number}"
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    expected_layers = 30 - best.recipe["steps"][0]["params"]["drop_layers"]
    assert model.config.num_hidden_layers == expected_layers
    runs = MlflowClient(job.tracking_uri).search_runs(
        [MlflowClient(job.tracking_uri).get_experiment_by_name(job.name).experiment_id],
        "tags.`autocompress.pareto` = 'true'",
    )
    assert {int(r.data.tags["autocompress.trial"]) for r in runs} == {r.number for r in result.front}
