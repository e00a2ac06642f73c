"""A cross-process lock per job, held while a worker reserves its next trial.

Several workers of one job take trials one reservation at a time, so together they start exactly
the job's count. PostgreSQL: a transaction-scoped advisory lock keyed by the job name (works across
machines). SQLite: an exclusive ``flock`` on a file beside the database (works for the processes of
one machine, which is all SQLite supports anyway). Other databases get no lock: several workers may
then finish one or two trials more than asked.
"""

from __future__ import annotations

import fcntl
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.pool import NullPool

from autocompress.errors import ConfigError

STORAGE_WIDE = "*"  # a lock name no job can have (job names start with a letter or digit)


def lock_key(name: str) -> int:
    """A stable signed 64-bit key for ``pg_advisory_xact_lock``."""
    return int.from_bytes(hashlib.sha256(f"autocompress-job:{name}".encode()).digest()[:8], "big", signed=True)


@lru_cache(maxsize=16)
def _engine(url: str) -> Engine:
    return create_engine(url, poolclass=NullPool)  # the lock's connection lives only while it is held


@contextmanager
def job_lock(storage_url: str, name: str) -> Iterator[None]:
    url = make_url(storage_url)
    backend = url.get_backend_name()
    if backend == "postgresql":
        try:
            connection = _engine(storage_url).connect()
        except Exception as exc:  # server down, bad credentials: the same one-line error as open_storage
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                "storage", f"cannot open {url.render_as_string(hide_password=True)!r}: {reason}"
            ) from None
        with connection as conn, conn.begin():
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key(name)})
            yield
    elif backend == "sqlite" and url.database not in (None, "", ":memory:"):
        path = Path(url.database).expanduser()
        with open(path.with_name(path.name + f".{'all' if name == STORAGE_WIDE else name}.lock"), "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    else:
        yield
