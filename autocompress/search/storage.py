"""Optuna storage from a SQLAlchemy URL, with heartbeats so killed trials are detected."""

from __future__ import annotations

from pathlib import Path

import optuna
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.pool import NullPool

from autocompress.errors import ConfigError

_EXAMPLES = "e.g. sqlite:///runs/optuna.db or postgresql://user@127.0.0.1:5432/db"


def open_storage(url: str, heartbeat_seconds: int) -> optuna.storages.RDBStorage:
    """Connect (creating tables if needed); bad or unreachable URLs raise a ConfigError on ``storage``."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise ConfigError("storage", f"{url!r} is not a SQLAlchemy URL ({_EXAMPLES})") from None
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        folder = Path(parsed.database).expanduser().parent
        if not folder.is_dir():
            raise ConfigError("storage", f"folder {str(folder)!r} of {url!r} does not exist")
    try:
        # A database server has a fixed number of connection slots shared by every worker: connect per
        # operation (NullPool) rather than hold a pool open per storage object. SQLite keeps its pool.
        engine_kwargs = {"pool_pre_ping": True} if parsed.get_backend_name() == "sqlite" else {"poolclass": NullPool}
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=heartbeat_seconds,
            grace_period=2 * heartbeat_seconds + 1,
            engine_kwargs=engine_kwargs,
        )
    except Exception as exc:  # driver missing, server down, bad credentials
        reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError("storage", f"cannot open {parsed.render_as_string(hide_password=True)!r}: {reason}") from None
