"""Worker processes against the durable queue: two workers on one job, SIGKILLs, a server restart.

PostgreSQL at 127.0.0.1:5432 (database ``test``, trust auth): each test gets a fresh database,
dropped afterwards; every process a test starts is killed by the test.
"""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import httpx
import optuna
import plugins_slow  # noqa: F401  (the 'wait' technique, for submissions validated in this process)
import pytest
import yaml
from fastapi.testclient import TestClient
from mlflow import MlflowClient
from optuna.trial import TrialState
from service_helpers import TESTS, free_port, launch, start_worker, stop, tiny_spec, wait_for
from sqlalchemy import create_engine, text

from autocompress.search.runner import counts_as_finished
from autocompress.search.storage import open_storage
from autocompress.service.app import create_app
from autocompress.service.policy import ServerSettings, prepare_job
from autocompress.service.queue import JobQueue

POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"


def _postgres_up() -> bool:
    try:
        with create_engine(POSTGRES).connect():
            return True
    except Exception:
        return False


needs_postgres = pytest.mark.skipif(not _postgres_up(), reason="PostgreSQL is not running on 127.0.0.1:5432")
pytestmark = pytest.mark.slow  # worker and server processes: minutes, not seconds


@pytest.fixture
def pg_url():
    """A fresh PostgreSQL database for one test."""
    name = f"svc_{uuid.uuid4().hex[:12]}"
    admin = create_engine(POSTGRES, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield POSTGRES.rsplit("/", 1)[0] + "/" + name
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def submit(database: str, workdir: Path, spec: dict) -> tuple[str, JobQueue, ServerSettings]:
    settings = ServerSettings(workdir=workdir, database=database)
    queue = JobQueue(database, claim_timeout=3)
    with TestClient(create_app(queue, settings, embedded_worker=False)) as client:
        response = client.post("/jobs", json=spec)
    assert response.status_code == 201, response.text
    return response.json()["id"], queue, settings


def slow_space(folder: Path, seconds: float) -> str:
    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    space["steps"].insert(0, {"technique": "wait", "params": {"seconds": seconds}})
    path = folder / "slow-space.yaml"
    path.write_text(yaml.safe_dump(space))
    return str(path)


def assert_exact_job(trials: list[optuna.trial.FrozenTrial], wanted: int) -> None:
    """Exactly ``wanted`` finished trials, unique numbers, no recipe measured twice, none left running."""
    assert sum(counts_as_finished(t) for t in trials) == wanted
    assert len({t.number for t in trials}) == len(trials)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    measured = [
        t.user_attrs["recipe_digest"]
        for t in trials
        if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs
    ]
    assert len(measured) == len(set(measured))


def two_workers_finish_one_job(database: str, tmp_path: Path, trials: int, **spec_overrides) -> None:
    workdir = tmp_path / "wd"
    workdir.mkdir()
    spec = tiny_spec(Path(spec_overrides.pop("model")), name="shared", trials=trials, workers=2, **spec_overrides)
    job_id, queue, settings = submit(database, workdir, spec)
    workers = [start_worker(database, workdir) for _ in range(2)]
    try:
        wait_for(lambda: queue.get(job_id)["state"] in ("succeeded", "failed"), 600, "the job to end", interval=1)
    finally:
        errors = [stop(w) for w in workers]
    row = queue.get(job_id)
    assert row["state"] == "succeeded", (row["error"], errors[0][-3000:], errors[1][-3000:])
    study = optuna.load_study(study_name="shared", storage=prepare_job(spec, settings).storage_url)
    assert_exact_job(study.get_trials(), trials)
    assert len({t.user_attrs["worker"] for t in study.get_trials()}) == 2  # both workers ran trials
    assert not any("lock" in e.lower() and "error" in e.lower() for e in errors), errors


@needs_postgres
def test_two_workers_share_a_postgres_job_of_20_trials(pg_url, tmp_path, tiny_checkpoints):
    two_workers_finish_one_job(pg_url, tmp_path, 20, model=str(tiny_checkpoints["llama"]), tracking="none")


def test_two_workers_share_a_sqlite_job(tmp_path, tiny_checkpoints):
    """SQLite: the same guarantee for workers on one machine (the lock is a file lock)."""
    two_workers_finish_one_job(
        f"sqlite:///{tmp_path / 'wd' / 'queue.db'}", tmp_path, 10, model=str(tiny_checkpoints["qwen2"]), tracking="none"
    )


def _mlflow_agrees_with_optuna(tracking_uri: str, name: str, trials: list[optuna.trial.FrozenTrial]) -> None:
    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], "tags.`autocompress.role` = 'trial'", max_results=1000)
    by_id = {r.info.run_id: r for r in runs}
    expected = {"COMPLETE": ("COMPLETE", "FINISHED"), "PRUNED": ("PRUNED", "FINISHED"), "FAIL": ("FAIL", "FAILED")}
    for t in trials:
        run = by_id.get(t.user_attrs.get("run_id"))
        if run is None:  # killed between reserving the trial and opening its run
            assert t.state == TrialState.FAIL and "error" not in t.user_attrs
            continue
        killed = t.state == TrialState.FAIL and "error" not in t.user_attrs
        tag, status = ("INTERRUPTED", "KILLED") if killed else expected[t.state.name]
        assert (run.data.tags["autocompress.state"], run.info.status) == (tag, status), t.number
        assert run.data.tags["autocompress.trial"] == str(t.number)
    assert len(runs) == sum(t.user_attrs.get("run_id") in by_id for t in trials)


@needs_postgres
def test_sigkilled_workers_five_times_the_job_still_completes_exactly(pg_url, tmp_path, tiny_checkpoints):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    wanted = 6
    spec = tiny_spec(tiny_checkpoints["llama"], name="killed", trials=wanted, space=slow_space(workdir, 1.5))
    job_id, queue, settings = submit(pg_url, workdir, spec)
    storage = open_storage(pg_url, heartbeat_seconds=1)  # one storage for the polling below (no pool per poll)
    killed: list[int] = []

    def running_trial() -> int | None:
        try:
            trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
        except KeyError:
            return None
        live = [
            t for t in trials if t.state == TrialState.RUNNING and "run_id" in t.user_attrs and t.number not in killed
        ]
        return live[-1].number if live else None

    procs = []
    try:
        for _ in range(5):
            proc = start_worker(pg_url, workdir, plugins=True)
            procs.append(proc)
            number = wait_for(lambda: running_trial() is not None and running_trial(), 180, "a running trial")
            killed.append(number)
            stop(proc)  # SIGKILL mid-trial
        final = start_worker(pg_url, workdir, plugins=True)
        procs.append(final)
        wait_for(lambda: queue.get(job_id)["state"] in ("succeeded", "failed"), 300, "the job to end", interval=1)
    finally:
        errors = [stop(p) for p in procs]
    assert queue.get(job_id)["state"] == "succeeded", (queue.get(job_id)["error"], errors[-1][-3000:])
    trials = optuna.load_study(study_name="killed", storage=storage).get_trials()
    assert_exact_job(trials, wanted)
    by_number = {t.number: t for t in trials}
    for number in killed:
        assert by_number[number].state == TrialState.FAIL and "error" not in by_number[number].user_attrs
        retries = [t for t in trials if t.user_attrs.get("retry_of") == number]
        assert len(retries) == 1 and retries[0].params == by_number[number].params
    assert sum(t.state == TrialState.COMPLETE for t in trials) == wanted  # nothing failed for real
    _mlflow_agrees_with_optuna(f"sqlite:///{workdir / 'mlflow.db'}", "killed", trials)


def _serve(workdir: Path, port: int) -> subprocess.Popen:
    return launch(
        ["serve", "--host", "127.0.0.1", "--port", str(port), "--workdir", str(workdir), "--heartbeat", "1"],
        workdir.parent / f"serve-{uuid.uuid4().hex[:6]}.log",
        plugins=True,
    )


def test_a_killed_server_resumes_its_running_job_after_restart(tmp_path, tiny_checkpoints):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    spec = tiny_spec(tiny_checkpoints["qwen2"], name="restart", trials=4, space=slow_space(workdir, 1.0))

    def get(path: str) -> dict | None:
        try:
            return httpx.get(base + path, timeout=5).json()
        except httpx.HTTPError:
            return None

    server = _serve(workdir, port)
    try:
        wait_for(lambda: get("/health"), 120, "the server")
        job_id = httpx.post(base + "/jobs", json=spec, timeout=60).json()["id"]
        wait_for(
            lambda: (get(f"/jobs/{job_id}") or {}).get("progress", {}).get("trials_running"), 180, "a running trial"
        )
        stop(server)
        server = _serve(workdir, port)
        wait_for(
            lambda: (get(f"/jobs/{job_id}") or {}).get("state") in ("succeeded", "failed"),
            300,
            "the job to end",
            interval=1,
        )
        job = get(f"/jobs/{job_id}")
        assert job["state"] == "succeeded", job.get("error")
        assert job["progress"]["trials_done"] == 4 and job["progress"]["trials_failed"] == 1
        trials = get(f"/jobs/{job_id}/trials")
        assert sum(t["state"] == "COMPLETE" for t in trials) == 4 and len(trials) == 5
    finally:
        stop(server)
