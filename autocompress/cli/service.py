"""``autocompress serve`` and ``autocompress worker``: the REST service and its workers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from autocompress.cli.common import err
from autocompress.errors import ConfigError

if TYPE_CHECKING:
    from autocompress.service.policy import ServerSettings
    from autocompress.service.queue import JobQueue


def _server_settings(database: str | None, workdir: str, allow_remote_code: bool) -> ServerSettings:
    from autocompress.service.policy import ServerSettings

    root = Path(workdir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return ServerSettings(
        workdir=root, database=database or f"sqlite:///{root / 'queue.db'}", allow_remote_code=allow_remote_code
    )


def _open_queue(url: str, claim_timeout: float) -> JobQueue:
    from autocompress.service.queue import JobQueue

    try:
        return JobQueue(url, claim_timeout)
    except Exception as exc:
        raise ConfigError("--database", f"cannot open {url!r}: {str(exc).splitlines()[0][:200]}") from None


def _is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    host: str = typer.Option("127.0.0.1", help="address to bind; anything but loopback needs AUTOCOMPRESS_TOKEN"),
    port: int = typer.Option(8000),
    database: str | None = typer.Option(None, help="SQLAlchemy URL of the job queue (default sqlite in --workdir)"),
    workdir: str = typer.Option("./runs", help="every job writes under this folder"),
    no_worker: bool = typer.Option(False, "--no-worker", help="do not run an embedded worker"),
    allow_remote_code: bool = typer.Option(False, help="accept jobs with trust_remote_code: true"),
    heartbeat: float = typer.Option(5.0, help="seconds between a worker's beats; 3 missed beats = dead"),
) -> None:
    """Serve the REST API (OpenAPI at /openapi.json) with one embedded worker."""
    import os

    import uvicorn

    from autocompress.service.app import create_app

    token = os.environ.get("AUTOCOMPRESS_TOKEN") or None
    if not _is_loopback(host) and token is None:
        raise ConfigError("--host", f"binding to {host!r} (not loopback) requires a token in AUTOCOMPRESS_TOKEN")
    settings = _server_settings(database, workdir, allow_remote_code)
    queue = _open_queue(settings.database, 3 * heartbeat)
    uvicorn.run(
        create_app(queue, settings, token, embedded_worker=not no_worker, worker_heartbeat=heartbeat),
        host=host,
        port=port,
        log_level="warning",
    )


def worker(
    database: str = typer.Option(..., help="SQLAlchemy URL of the server's job queue"),
    workdir: str = typer.Option("./runs", help="the server's workdir (shared folder when on another machine)"),
    allow_remote_code: bool = typer.Option(False, help="run jobs with trust_remote_code: true"),
    heartbeat: float = typer.Option(5.0, help="seconds between beats; 3 missed beats = dead"),
    poll: float = typer.Option(2.0, help="seconds between looks for work when idle"),
    max_jobs: int | None = typer.Option(None, help="exit after handling this many claims"),
) -> None:
    """Claim queued jobs and run their trials until stopped (SIGINT/SIGTERM end after the current trial)."""
    import signal
    import threading

    from autocompress.service.worker import Worker

    settings = _server_settings(database, workdir, allow_remote_code)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    Worker(_open_queue(database, 3 * heartbeat), settings, heartbeat=heartbeat, poll=poll, console=err).run(
        stop, max_jobs
    )
