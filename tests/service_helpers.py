"""Shared pieces of the service tests: a tiny job spec and bounded subprocess/wait helpers."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).parent


def tiny_spec(model: Path, name: str = "svc", trials: int = 4, **overrides: Any) -> dict[str, Any]:
    spec = {
        "name": name,
        "model": str(model),
        "space": str(TESTS / "data" / "tiny-space.yaml"),
        "targets": ["raspberry-pi-5"],
        "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
        "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
        "search": {"trials": trials, "sampler": "random", "seed": 0, "heartbeat_seconds": 1},
        "export": False,
    }
    spec.update(overrides)
    return spec


def launch(args: list[str], log: Path, plugins: bool = False) -> subprocess.Popen:
    """``autocompress ARGS`` in its own session (so a kill takes its children too), stderr to ``log``."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    if plugins:
        env["AUTOCOMPRESS_PLUGINS"] = "plugins_slow"
    with open(log, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-m", "autocompress", *args],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=handle,
            start_new_session=True,
        )
    proc.log = log  # type: ignore[attr-defined]
    return proc


def start_worker(database: str, workdir: Path, plugins: bool = False) -> subprocess.Popen:
    log = workdir.parent / f"worker-{time.monotonic_ns()}.log"
    return launch(
        ["worker", "--database", database, "--workdir", str(workdir), "--heartbeat", "1", "--poll", "0.5"], log, plugins
    )


def kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL, timeout: float = 30) -> None:
    """Signal the process group of ``proc`` (started in its own session), reap it; SIGKILL if it lingers."""
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
    """Kill an ``autocompress`` process started by ``launch``; return what it wrote to stderr."""
    if proc.poll() is None:
        kill_group(proc, sig)
    return Path(proc.log).read_text(errors="replace")  # type: ignore[attr-defined]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
