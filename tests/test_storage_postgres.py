"""Several workers share one job through PostgreSQL (127.0.0.1:5432, database `test`)."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
TESTS = Path(__file__).parent


def _postgres_up() -> bool:
    try:
        optuna.storages.RDBStorage(POSTGRES)
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432")


def test_two_workers_share_one_job_without_losing_or_repeating_trials(tmp_path, tiny_checkpoints):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    job = {
        "name": name,
        "model": str(tiny_checkpoints["llama"]),
        "space": str(TESTS / "data" / "tiny-space.yaml"),
        "targets": ["raspberry-pi-5"],
        "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
        "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
        "search": {"trials": 8, "sampler": "random", "seed": 0},
        "storage": POSTGRES,
        "tracking": "none",
        "export": False,
        "workdir": str(tmp_path / "runs"),
    }
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    workers = [
        subprocess.Popen(
            [sys.executable, "-m", "autocompress", "search", "job.yaml", "--quiet"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    try:
        for worker in workers:
            _, err = worker.communicate(timeout=300)
            assert worker.returncode == 0, err[-2000:]
        trials = optuna.load_study(study_name=name, storage=POSTGRES).get_trials()
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        # Trials are reserved under a per-job lock: together the workers finish exactly the job's count.
        assert len(complete) == 8
        assert all(t.state != TrialState.RUNNING for t in trials)
    finally:
        optuna.delete_study(study_name=name, storage=POSTGRES)
