"""The ray backend on a loopback cluster (a head and a second node started with ``ray start``).

Skipped without ray (the ``[ray]`` extra). Both nodes run in their own sessions and are killed at
the end; the cluster uses Ray's token authentication with a fresh token.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml
from service_helpers import TESTS, free_port, kill_group, tiny_spec, wait_for

from autocompress.backends import run_job
from autocompress.search.finish import load_result
from autocompress.search.job import Job

ray = pytest.importorskip("ray")
pytestmark = [pytest.mark.slow, pytest.mark.ray]  # a two-node cluster: minutes
RAY = str(Path(sys.executable).parent / "ray")


def _start(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as handle:
        return subprocess.Popen(
            [RAY, "start", *args, "--node-ip-address=127.0.0.1", "--num-cpus=1", "--block"],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _kill(node: subprocess.Popen) -> None:
    """SIGTERM the node's process group (a graceful stop), then SIGKILL whatever of it remains."""
    kill_group(node, signal.SIGTERM, timeout=15)
    time.sleep(2)
    kill_group(node, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster():
    tmp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    port = free_port()
    token = secrets.token_hex(32)
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PYTHONPATH": str(TESTS),
        "AUTOCOMPRESS_PLUGINS": "plugins_slow",
    }
    head = _start(["--head", f"--port={port}", "--include-dashboard=false", f"--temp-dir={tmp}"], env, tmp / "head.log")
    node = None
    try:
        wait_for(
            lambda: "Ray runtime started" in (tmp / "head.log").read_text() or head.poll() is not None, 120, "the head"
        )
        node = _start([f"--address=127.0.0.1:{port}"], env, tmp / "node.log")
        wait_for(
            lambda: "Ray runtime started" in (tmp / "node.log").read_text() or node.poll() is not None,
            120,
            "the second node",
        )
        assert head.poll() is None and node.poll() is None, (tmp / "node.log").read_text()[-2000:]
        yield f"127.0.0.1:{port}", env
    finally:
        for proc in (node, head):
            if proc is not None:
                _kill(proc)
        shutil.rmtree(tmp, ignore_errors=True)


def test_two_node_cluster_runs_two_trials_at_once_and_finds_the_local_front(cluster, tmp_path, tiny_checkpoints):
    import plugins_slow  # noqa: F401  (the 'wait' technique in this process too)

    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    space["steps"].insert(0, {"technique": "wait", "params": {"seconds": 1.0}})
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(space))
    address, env = cluster
    specs = {
        backend: tiny_spec(
            tiny_checkpoints["llama"],
            name=f"on-{backend}",
            trials=6,
            space=str(tmp_path / "slow.yaml"),
            backend=backend,
            ray={"address": address, "concurrency": 2},
            tracking="none",
            workdir=str(tmp_path / backend),
        )
        for backend in ("local", "ray")
    }
    (tmp_path / "ray-job.yaml").write_text(yaml.safe_dump(specs["ray"]))
    # The driver runs in its own process: Ray reads its auth settings once, at import.
    proc = subprocess.run(
        [sys.executable, "-m", "autocompress", "search", str(tmp_path / "ray-job.yaml"), "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {
        "local": run_job(Job.from_dict(specs["local"]), progress=False),
        "ray": load_result(Job.from_dict(specs["ray"])),
    }
    local, remote = results["local"], results["ray"]
    assert [r.state for r in remote.records] == ["COMPLETE"] * 6
    assert [(r.recipe, r.pareto) for r in remote.records] == [(r.recipe, r.pareto) for r in local.records]
    for a, b in zip(local.records, remote.records):
        assert b.metrics == pytest.approx(a.metrics, rel=1e-5)

    import optuna

    trials = optuna.load_study(study_name="on-ray", storage=remote.job.storage_url).get_trials()
    assert len({t.user_attrs["ray_node"] for t in trials}) == 2  # both nodes ran trials
    spans = sorted((t.datetime_start, t.datetime_complete) for t in trials)
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:]))  # two trials overlapped


def test_a_local_ray_runs_the_job_through_tune_with_the_local_front(tmp_path, tiny_checkpoints):
    specs = {
        backend: tiny_spec(
            tiny_checkpoints["qwen2"],
            name=f"tune-{backend}",
            trials=4,
            backend=backend,
            ray={"concurrency": 2},
            tracking="none",
            workdir=str(tmp_path / backend),
        )
        for backend in ("local", "ray")
    }
    (tmp_path / "ray-job.yaml").write_text(yaml.safe_dump(specs["ray"]))
    proc = subprocess.run(
        [sys.executable, "-m", "autocompress", "search", str(tmp_path / "ray-job.yaml"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    local = run_job(Job.from_dict(specs["local"]), progress=False)
    remote = load_result(Job.from_dict(specs["ray"]))
    assert [r.state for r in remote.records] == ["COMPLETE"] * 4  # exactly the job's trials, all scored
    assert [(r.recipe, r.pareto) for r in remote.records] == [(r.recipe, r.pareto) for r in local.records]
    assert any((tmp_path / "ray" / "ray").iterdir())  # Tune's experiment folder, under the job's workdir
