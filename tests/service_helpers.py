"""Shared pieces of the service tests: a tiny job spec and bounded subprocess/wait helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

TESTS = Path(__file__).parent


def tiny_spec(model: Path, name: str = "svc", trials: int = 4, **overrides: Any) -> dict[str, Any]:
    spec = {"name": name, "model": str(model), "space": str(TESTS / "data" / "tiny-space.yaml"),
            "targets": ["raspberry-pi-5"],
            "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
            "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
            "search": {"trials": trials, "sampler": "random", "seed": 0, "heartbeat_seconds": 1},
            "export": False}
    spec.update(overrides)
    return spec


def start_worker(database: str, workdir: Path, *extra: str, plugins: bool = False) -> subprocess.Popen:
    """An ``autocompress worker`` process in its own session (so a kill takes its children too)."""
    env = {**os.environ, "PYTHONPATH": str(TESTS)}
    if plugins:
        env["AUTOCOMPRESS_PLUGINS"] = "plugins_slow"
    return subprocess.Popen([sys.executable, "-m", "autocompress", "worker", "--database", database,
                             "--workdir", str(workdir), "--heartbeat", "1", "--poll", "0.5", *extra],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def stop(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> str:
    """Signal the process group, reap it, return its stderr."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        _, err = proc.communicate()
    return err or ""


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
