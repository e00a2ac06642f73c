"""The REST API and the SQL job queue on SQLite: validation, idempotency, states, claims, security."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest
import yaml
from fastapi.testclient import TestClient
from service_helpers import tiny_spec

from autocompress.service.app import create_app
from autocompress.service.policy import ServerSettings
from autocompress.service.queue import InvalidTransition, JobQueue
from autocompress.service.worker import Worker


@pytest.fixture
def settings(tmp_path):
    workdir = tmp_path / "wd"
    workdir.mkdir()
    return ServerSettings(workdir=workdir, database=f"sqlite:///{workdir / 'queue.db'}")


@pytest.fixture
def queue(settings):
    return JobQueue(settings.database, claim_timeout=2)


@pytest.fixture
def client(queue, settings):
    with TestClient(create_app(queue, settings, embedded_worker=False)) as c:
        yield c


@pytest.fixture
def spec(tiny_checkpoints):
    return tiny_spec(tiny_checkpoints["llama"])


def test_submit_returns_a_queued_job_and_is_idempotent(client, spec, queue):
    first = client.post("/jobs", json=spec)
    assert first.status_code == 201
    job = first.json()
    assert job["state"] == "queued" and job["name"] == "svc" and len(job["id"]) == 32
    assert job["progress"] == {"trials_requested": 4, "trials_done": 0, "trials_failed": 0, "trials_running": 0}
    again = client.post("/jobs", content=yaml.safe_dump(spec), headers={"content-type": "application/yaml"})
    assert again.status_code == 200 and again.json()["id"] == job["id"]
    changed = client.post("/jobs", json={**spec, "search": {**spec["search"], "trials": 9}})
    assert changed.status_code == 409 and changed.json()["detail"]["field"] == "name"
    assert [j["id"] for j in client.get("/jobs").json()] == [job["id"]]
    assert client.get(f"/jobs/{job['id']}").json()["spec"] == spec
    assert len(queue.list()) == 1


def test_idempotency_key_header(client, spec):
    first = client.post("/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
    same = client.post("/jobs", json=spec, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 201 and same.status_code == 200 and same.json()["id"] == first.json()["id"]
    other = client.post("/jobs", json={**spec, "name": "other"}, headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 409 and other.json()["detail"]["field"] == "Idempotency-Key"
    assert client.post("/jobs", json={**spec, "name": "other"}, headers={"Idempotency-Key": "k-2"}).status_code == 201


def _remote_code_model(tmp_path, tiny_checkpoints):
    import shutil

    folder = tmp_path / "remote"
    shutil.copytree(tiny_checkpoints["llama"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))
    return str(folder)


# (what is wrong, body or mutation of the valid spec, the field the 4xx must name)
MALFORMED = [
    ("a list", [1, 2], "job"),
    ("a string", "just text", "job"),
    ("null", None, "job"),
    ("broken JSON", b'{"name": ', "job"),
    ("broken YAML", b"name: [", "job"),
    ("YAML alias", b"a: &x [1]\nb: *x\n", "job"),
    ("no name", {"name": None}, "name"),
    ("name with a slash", {"name": "a/b"}, "name"),
    ("name with ..", {"name": "a..b"}, "name"),
    ("name too long", {"name": "x" * 65}, "name"),
    ("unknown key", {"colour": "red"}, "colour"),
    ("no targets", {"targets": []}, "targets"),
    ("unknown target", {"targets": ["toaster"], "objectives": [{"metric": "kl"}]}, "targets[0]"),
    ("no objectives", {"objectives": []}, "objectives"),
    ("unknown metric", {"objectives": [{"metric": "accuracy"}]}, "objectives[0].metric"),
    ("bad direction", {"objectives": [{"metric": "kl", "direction": "up"}]}, "objectives[0].direction"),
    ("repeated objective", {"objectives": [{"metric": "kl"}, {"metric": "kl"}]}, "objectives"),
    ("budget on unknown metric", {"budgets": {"speed": {"max": 1}}}, "budgets.speed"),
    ("impossible budget", {"budgets": {"kl": {"max": -1}}}, "budgets.kl"),
    ("min above max", {"budgets": {"kl": {"min": 2, "max": 1}}}, "budgets.kl"),
    ("empty bound", {"budgets": {"kl": {}}}, "budgets.kl"),
    ("zero trials", {"search": {"trials": 0}}, "search.trials"),
    ("trials as words", {"search": {"trials": "many"}}, "search.trials"),
    ("unknown sampler", {"search": {"sampler": "grid"}}, "search.sampler"),
    ("unknown search key", {"search": {"budget": 3}}, "search.budget"),
    ("population of one", {"search": {"population_size": 1}}, "search.population_size"),
    ("storage not a URL", {"storage": "not a url"}, "storage"),
    ("storage outside workdir", {"storage": "sqlite:////tmp/evil.db"}, "storage"),
    ("in-memory storage", {"storage": "sqlite:///:memory:"}, "storage"),
    ("workdir escapes", {"workdir": "../escape"}, "workdir"),
    ("absolute workdir elsewhere", {"workdir": "/etc"}, "workdir"),
    ("tracking db elsewhere", {"tracking": "sqlite:////tmp/mlflow.db"}, "tracking"),
    ("tracking folder escapes", {"tracking": "../../mlruns"}, "tracking"),
    ("unknown space", {"space": "no-such-space"}, "space"),
    ("missing model", {"model": "/no/such/model"}, "model"),
    ("remote-code model", "remote-code", "model"),
    ("trust_remote_code refused", {"trust_remote_code": True}, "trust_remote_code"),
    ("unknown backend", {"backend": "spark"}, "backend"),
    ("zero workers", {"workers": 0}, "workers"),
    ("negative prompt", {"workload": {"prompt_tokens": -1}}, "workload.prompt_tokens"),
    ("export maybe", {"export": "maybe"}, "export"),
]


@pytest.mark.parametrize("what,body,field", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_specs_get_a_4xx_naming_the_field_and_create_nothing(
    client, spec, queue, settings, tmp_path, tiny_checkpoints, what, body, field
):
    if body == "remote-code":
        body = {"model": _remote_code_model(tmp_path, tiny_checkpoints)}
    if isinstance(body, bytes):
        response = client.post(
            "/jobs",
            content=body,
            headers={"content-type": "application/json" if body.startswith(b"{") else "text/yaml"},
        )
    elif isinstance(body, dict):
        merged = {
            **spec,
            **{
                k: ({**spec[k], **v} if isinstance(v, dict) and isinstance(spec.get(k), dict) else v)
                for k, v in body.items()
            },
        }
        response = client.post("/jobs", json={k: v for k, v in merged.items() if v is not None})
    else:
        response = client.post("/jobs", json=body)
    assert 400 <= response.status_code < 500, response.text
    detail = response.json()["detail"]
    assert detail["field"] == field, detail
    assert len(detail["reason"]) > 5
    assert queue.list() == []
    assert sorted(p.name for p in settings.workdir.iterdir()) == ["queue.db"]  # nothing else was created


def test_state_machine_and_cancel(client, spec, queue):
    job_id = client.post("/jobs", json=spec).json()["id"]
    with pytest.raises(InvalidTransition):
        queue.transition(job_id, "succeeded")  # queued -> succeeded skips running
    cancelled = client.post(f"/jobs/{job_id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    assert client.post(f"/jobs/{job_id}/cancel").status_code == 409
    assert queue.claim("w1") is None  # a cancelled job is never claimed
    assert client.get("/jobs/nope").status_code == 404
    assert client.post("/jobs/nope/cancel").status_code == 404
    assert [j["id"] for j in client.get("/jobs", params={"state": "cancelled"}).json()] == [job_id]
    assert client.get("/jobs", params={"state": "queued"}).json() == []


def test_claims_take_one_slot_each_and_dead_claims_are_reaped(client, spec, queue):
    one = client.post("/jobs", json=spec).json()["id"]
    two = client.post("/jobs", json={**spec, "name": "pair", "workers": 2}).json()["id"]
    a = queue.claim("a")
    assert (a.job_id, a.slot) == (one, 0)
    assert queue.get(one)["state"] == "running"
    b = queue.claim("b")
    assert (b.job_id, b.slot) == (two, 0)  # job one has no free slot
    assert queue.claim("b") is None  # one claim per job per worker; job one is full
    c = queue.claim("c")
    assert (c.job_id, c.slot) == (two, 1)
    assert queue.claim("d") is None  # all three slots taken
    assert queue.beat(a) == "running"
    time.sleep(2.5)  # claim_timeout = 2 s: b and c stop beating
    queue.beat(a)
    assert queue.reap() == 2  # b's and c's claims died; a kept beating
    assert queue.beat(b) is None  # b learns it lost its claim
    d = queue.claim("d")
    assert (d.job_id, d.slot) == (two, 0)


def test_many_concurrent_claims_never_share_a_slot(client, spec, queue):
    for i in range(3):
        client.post("/jobs", json={**spec, "name": f"j{i}", "workers": 2})
    got, lock = [], threading.Lock()

    def grab(worker: str) -> None:
        other = JobQueue(queue.url, claim_timeout=60)
        while (claim := other.claim(worker)) is not None:
            with lock:
                got.append((claim.job_id, claim.slot, worker))

    threads = [threading.Thread(target=grab, args=(f"w{i}",)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 6 and len({(j, s) for j, s, _ in got}) == 6  # 3 jobs x 2 slots, each once
    assert all(len({w for j2, _, w in got if j2 == j}) == 2 for j, _, _ in got)


def test_a_worker_runs_a_job_to_its_front(client, spec, queue, settings):
    job_id = client.post("/jobs", json={**spec, "search": {**spec["search"], "trials": 3}}).json()["id"]
    Worker(queue, settings, heartbeat=0.5, poll=0.1).run(threading.Event(), max_jobs=1)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "succeeded"
    assert job["progress"]["trials_done"] == 3 and job["progress"]["trials_running"] == 0
    trials = client.get(f"/jobs/{job_id}/trials").json()
    assert [t["trial"] for t in trials] == [0, 1, 2]
    front = client.get(f"/jobs/{job_id}/pareto").json()
    assert front and front == job["front"] and {t["trial"] for t in front} <= {0, 1, 2}
    assert all(t["pareto"] == (t["trial"] in {f["trial"] for f in front}) for t in trials)
    assert (settings.workdir / "optuna.db").is_file()  # the job's files stay under the workdir


def test_cancelling_a_running_job_stops_its_worker(client, spec, queue, settings):
    import plugins_slow  # noqa: F401  (the 'wait' technique)

    space = yaml.safe_load(open(spec["space"]).read())
    space["steps"].insert(0, {"technique": "wait", "params": {"seconds": 1.0}})
    (settings.workdir / "slow.yaml").write_text(yaml.safe_dump(space))
    job_id = client.post(
        "/jobs", json={**spec, "space": str(settings.workdir / "slow.yaml"), "search": {**spec["search"], "trials": 50}}
    ).json()["id"]
    worker = threading.Thread(target=Worker(queue, settings, heartbeat=0.3, poll=0.1).run, args=(threading.Event(), 1))
    worker.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text  # also while the worker creates the study
        if response.json()["progress"]["trials_done"] >= 1:
            break
        time.sleep(0.3)
    assert client.get(f"/jobs/{job_id}").json()["state"] == "running", client.get(f"/jobs/{job_id}").json()["error"]
    assert client.post(f"/jobs/{job_id}/cancel").json()["state"] == "cancelled"
    worker.join(30)
    assert not worker.is_alive()
    job = client.get(f"/jobs/{job_id}").json()
    assert job["state"] == "cancelled" and job["progress"]["trials_running"] == 0
    assert job["progress"]["trials_done"] < 50


def test_token_guards_every_route_but_health(queue, settings, spec):
    with TestClient(create_app(queue, settings, token="s3cret", embedded_worker=False)) as c:
        assert c.get("/health").status_code == 200
        assert c.get("/jobs").status_code == 401
        assert c.post("/jobs", json=spec).status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/jobs", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/jobs", json=spec, headers={"Authorization": "Bearer s3cret"}).status_code == 201


def test_serve_refuses_a_public_address_without_a_token(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "autocompress", "serve", "--host", "0.0.0.0", "--port", "1", "--workdir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in __import__("os").environ.items() if k != "AUTOCOMPRESS_TOKEN"},
    )
    assert proc.returncode == 2
    assert "--host" in proc.stderr and "AUTOCOMPRESS_TOKEN" in proc.stderr


def test_server_allowing_remote_code_accepts_the_flag(queue, settings, spec):
    allowing = ServerSettings(settings.workdir, settings.database, allow_remote_code=True)
    with TestClient(create_app(queue, allowing, embedded_worker=False)) as c:
        assert c.post("/jobs", json={**spec, "trust_remote_code": True}).status_code == 201


def test_openapi_spec_lists_the_routes_and_the_job_schema(client):
    spec = client.get("/openapi.json").json()
    assert {
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/pareto",
        "/jobs/{job_id}/trials",
        "/jobs/{job_id}/cancel",
        "/health",
    } <= set(spec["paths"])
    assert "targets" in spec["components"]["schemas"]["Job"]["properties"]
    assert spec["paths"]["/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Job"
    }
