"""Multi-fidelity: costly metrics near the front and for the final front; the proxy's rank correlation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import optuna
import pytest
from mlflow import MlflowClient
from test_evaluators import write_piqa
from test_search import make_job, trial_runs

from autocompress.backends import run_job
from autocompress.errors import ConfigError
from autocompress.search.fidelity import near_front, spearman
from autocompress.search.runner import JobRunner


def test_spearman_is_rank_correlation_with_average_ties() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 35, 90]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(spearman([1, 2], [2, 1])) and math.isnan(spearman([1, 1, 1], [1, 2, 3]))


def test_near_front_uses_a_margin_in_normalised_objectives() -> None:
    front = [[0.0, 1.0], [1.0, 0.0], [0.5, 0.5]]
    assert near_front([0.25, 0.75], front, 0.0)  # non-dominated
    assert not near_front([1.0, 1.0], front, 0.0)
    assert not near_front([1.0, 1.0], front, 0.3)  # (0.5, 0.5) + 0.3 still dominates it
    assert near_front([1.0, 1.0], front, 0.6)
    wide = [[0.0, 10.0], [10.0, 0.0], [5.0, 5.0]]  # (5.3, 5.3) is 3 % of the range 0..10 behind (5, 5)
    assert near_front([5.3, 5.3], wide, 0.05) and not near_front([5.3, 5.3], wide, 0.01)


def test_costly_metrics_run_near_the_front_and_for_the_final_front(tmp_path: Path, tiny_checkpoints) -> None:
    data = write_piqa(tmp_path / "data")
    settings = {"data": str(data), "limit": 6, "costly": ["lm_eval:piqa"], "margin": 0.0}
    search = {"sampler": "random", "seed": 3, "heartbeat_seconds": 1}
    first = make_job(
        tmp_path, tiny_checkpoints["llama"], name="fidelity", search=search | {"trials": 1}, evaluation=settings
    )
    run_job(first, progress=False)
    # Then a dense 16-bit model and the same model made 50 % sparse: the Pi has no sparse kernel, so the
    # sparse one is as slow with a higher KL: dominated when it arrives, it gets no costly evaluation.
    study = optuna.load_study(study_name="fidelity", storage=first.storage_url)
    dense = {"prune_depth.drop_layers": 0, "sparsify.sparsity": 0.0, "quantize.bits": 16, "quantize.mlp.bits": 4}
    study.enqueue_trial(dense)
    study.enqueue_trial(dense | {"sparsify.sparsity": 0.5})
    job = first.model_copy(update={"search": first.search.model_copy(update={"trials": 3})})
    result = run_job(job, progress=False)

    a, b = result.records[1], result.records[2]
    speed = "raspberry-pi-5.decode_ms_per_token"
    assert b.metrics["kl"] > a.metrics["kl"] and b.metrics[speed] >= a.metrics[speed]
    assert "lm_eval:piqa" in a.metrics and "lm_eval:piqa" not in b.metrics
    assert result.front and all("lm_eval:piqa" in r.metrics for r in result.front)
    runs = trial_runs(job)
    scored = [r for r in result.records if "lm_eval:piqa" in r.metrics]
    for record in scored:
        assert runs[record.number].data.metrics["lm_eval:piqa"] == pytest.approx(record.metrics["lm_eval:piqa"])
    assert "lm_eval:piqa" not in runs[b.number].data.metrics
    report = json.loads((job.job_dir / "proxy_correlation.json").read_text())
    assert report["lm_eval:piqa"]["n"] == len(scored)
    rho = result.proxy_correlation["lm_eval:piqa"]["rho"]
    parent = MlflowClient(job.tracking_uri).get_run(runs[0].data.tags["mlflow.parentRunId"])
    if math.isfinite(rho):
        assert parent.data.metrics["spearman.kl.lm_eval:piqa"] == pytest.approx(rho)


def test_missing_task_data_fails_before_anything_is_created(tmp_path: Path, tiny_checkpoints) -> None:
    job = make_job(
        tmp_path, tiny_checkpoints["llama"], evaluation={"data": str(tmp_path / "no-data"), "costly": ["lm_eval:piqa"]}
    )
    with pytest.raises(ConfigError, match=r"^lm_eval:piqa: data file .*no-data/piqa/valid.jsonl is missing"):
        JobRunner(job)
    assert not (tmp_path / "runs").exists()
