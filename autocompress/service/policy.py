"""What a server accepts: a submitted spec becomes a Job confined to the server's workdir."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from autocompress.errors import ConfigError
from autocompress.search.job import Job


@dataclass(frozen=True)
class ServerSettings:
    workdir: Path  # every file a job writes lies under it
    database: str  # the queue's SQLAlchemy URL; also the default Optuna storage when it is PostgreSQL
    allow_remote_code: bool = False


def _inside(path: Path, root: Path, field: str) -> Path:
    resolved = (root / path).expanduser().resolve()
    if not resolved.is_relative_to(root):
        raise ConfigError(field, f"{str(path)!r} is outside the server's workdir {str(root)!r}")
    return resolved


def _sqlite_inside(url: str, root: Path, field: str) -> str:
    """A SQLite URL whose file lies under ``root`` (relative paths are taken from ``root``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return url
    if parsed.database in (None, "", ":memory:"):
        raise ConfigError(field, "an in-memory database would lose the job; give a file or a server URL")
    return str(parsed.set(database=str(_inside(Path(parsed.database), root, field))))


def prepare_job(spec: Any, settings: ServerSettings) -> Job:
    """Validate a submitted spec like the CLI does, then confine its paths; raises ConfigError."""
    job = Job.from_dict(spec)
    root = settings.workdir.resolve()
    workdir = _inside(Path(job.workdir), root, "workdir") if "workdir" in job.model_fields_set else root
    update: dict[str, Any] = {"workdir": str(workdir)}
    if job.storage is not None:
        update["storage"] = _sqlite_inside(job.storage, root, "storage")
    elif make_url(settings.database).get_backend_name() == "postgresql":
        update["storage"] = settings.database  # workers on other machines share it
    if job.tracking not in (None, "none"):
        tracking = job.tracking.removeprefix("file://")
        if "://" not in tracking:  # a local folder
            update["tracking"] = str(_inside(Path(tracking), root, "tracking"))
        elif tracking.startswith("sqlite:"):
            update["tracking"] = _sqlite_inside(tracking, root, "tracking")
    if job.trust_remote_code and not settings.allow_remote_code:
        raise ConfigError(
            "trust_remote_code",
            "this server refuses models that run remote code (start it with --allow-remote-code to permit them)",
        )
    return job.model_copy(update=update)
