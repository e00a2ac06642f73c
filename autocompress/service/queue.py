"""The durable job queue: a SQL table of jobs with a state machine, and claims with heartbeats.

States: queued -> running -> succeeded | failed | cancelled (queued -> cancelled too). A job's
trials and results live in its Optuna study; this table only says which jobs exist, who works on
them and how they ended. A worker *claims* one of a job's ``workers`` slots (a row in the claims
table whose primary key is (job, slot), so a slot is held once) and beats on it; a claim whose
beat stops is reaped and the slot (and the job, if it was the last) is free for another worker,
which resumes the job from its Optuna storage. Claiming locks the job rows (``FOR UPDATE SKIP
LOCKED`` on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), so two workers never take the same slot.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    DateTime,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

STATES = ("queued", "running", "succeeded", "failed", "cancelled")
TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
TRANSITIONS = {"queued": {"running", "cancelled"}, "running": {"succeeded", "failed", "cancelled"}}

metadata = MetaData()
jobs = Table(
    "autocompress_jobs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("idempotency_key", String(200), nullable=False, unique=True),
    Column("digest", String(64), nullable=False),  # of the submitted spec: same key + other body = conflict
    Column("spec", JSON, nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("error", Text),
    Column("finalizer", String(64)),  # the worker writing the front, once the trials are done
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
)
claims = Table(
    "autocompress_claims",
    metadata,
    Column("job_id", String(32), ForeignKey("autocompress_jobs.id", ondelete="CASCADE"), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("worker", String(64), nullable=False),
    Column("heartbeat_at", DateTime(timezone=True), nullable=False),
    PrimaryKeyConstraint("job_id", "slot"),
)


class Conflict(Exception):
    """The idempotency key (or name) is taken by a job with a different body."""


class InvalidTransition(Exception):
    def __init__(self, state: str, wanted: str):
        super().__init__(f"a {state} job cannot become {wanted}")
        self.state = state


@dataclass(frozen=True)
class Claim:
    job_id: str
    slot: int
    worker: str
    spec: dict[str, Any]


def now() -> datetime:
    return datetime.now(timezone.utc)


def spec_digest(spec: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()


class JobQueue:
    def __init__(self, url: str, claim_timeout: float = 30.0):
        self.url = url
        self.claim_timeout = claim_timeout  # seconds without a beat after which a claim is dead
        self.is_postgres = make_url(url).get_backend_name() == "postgresql"
        if self.is_postgres:
            # a connection per operation (as the Optuna storages): idle queues hold no server slots
            self.engine = create_engine(url, poolclass=NullPool)
        else:
            self.engine = _sqlite_engine(url)
        metadata.create_all(self.engine)

    # ---- submission --------------------------------------------------------------------
    def submit(self, spec: dict[str, Any], name: str, key: str | None) -> tuple[dict[str, Any], bool]:
        """(job row, created). The same key (default: the name) with the same body returns the same job."""
        key = key or f"name:{name}"
        digest = spec_digest(spec)
        with self.engine.begin() as conn:
            existing = conn.execute(select(jobs).where((jobs.c.idempotency_key == key) | (jobs.c.name == name))).first()
            if existing is None:
                stamp = now()
                row = {
                    "id": uuid.uuid4().hex,
                    "name": name,
                    "idempotency_key": key,
                    "digest": digest,
                    "spec": spec,
                    "state": "queued",
                    "error": None,
                    "finalizer": None,
                    "created_at": stamp,
                    "updated_at": stamp,
                }
                try:
                    conn.execute(insert(jobs).values(**row))
                    return row, True
                except IntegrityError:  # submitted concurrently: fall through to compare
                    pass
        with self.engine.connect() as conn:
            existing = conn.execute(select(jobs).where((jobs.c.idempotency_key == key) | (jobs.c.name == name))).first()
        if existing is None or existing.digest != digest or existing.name != name:
            what = "name" if existing is not None and existing.name == name else "Idempotency-Key"
            raise Conflict(f"a different job with this {what} exists (id {existing.id if existing else '?'})")
        return dict(existing._mapping), False

    # ---- reading -----------------------------------------------------------------------
    def get(self, job_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(jobs).where(jobs.c.id == job_id)).first()
        return dict(row._mapping) if row else None

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        query = select(jobs).order_by(jobs.c.created_at, jobs.c.id).limit(limit).offset(offset)
        if state is not None:
            query = query.where(jobs.c.state == state)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def live_workers(self) -> int:
        with self.engine.connect() as conn:
            return conn.execute(
                select(func.count(func.distinct(claims.c.worker))).where(
                    claims.c.heartbeat_at >= now() - timedelta(seconds=self.claim_timeout)
                )
            ).scalar_one()

    # ---- state machine -----------------------------------------------------------------
    def transition(self, job_id: str, wanted: str, error: str | None = None) -> dict[str, Any]:
        """Move a job along the state machine; raise InvalidTransition otherwise, KeyError if unknown."""
        with self.engine.begin() as conn:
            row = conn.execute(self._locked(select(jobs).where(jobs.c.id == job_id))).first()
            if row is None:
                raise KeyError(job_id)
            if wanted not in TRANSITIONS.get(row.state, ()):
                raise InvalidTransition(row.state, wanted)
            conn.execute(update(jobs).where(jobs.c.id == job_id).values(state=wanted, error=error, updated_at=now()))
            if wanted in TERMINAL:
                conn.execute(delete(claims).where(claims.c.job_id == job_id))
        return self.get(job_id)  # type: ignore[return-value]

    def _locked(self, query: Any, skip_locked: bool = False) -> Any:
        return query.with_for_update(skip_locked=skip_locked) if self.is_postgres else query

    # ---- workers -----------------------------------------------------------------------
    def reap(self) -> int:
        """Delete dead claims; clear the finalizer of a job whose finalizing worker died."""
        cutoff = now() - timedelta(seconds=self.claim_timeout)
        with self.engine.begin() as conn:
            dead = conn.execute(delete(claims).where(claims.c.heartbeat_at < cutoff)).rowcount
            live = select(claims.c.worker).where(claims.c.job_id == jobs.c.id)
            conn.execute(
                update(jobs)
                .where(jobs.c.state == "running", jobs.c.finalizer.is_not(None), jobs.c.finalizer.not_in(live))
                .values(finalizer=None)
            )
        return dead

    def claim(self, worker: str) -> Claim | None:
        """Take a free slot of the oldest queued or running job that has one; mark it running."""
        self.reap()
        with self.engine.begin() as conn:
            candidates = conn.execute(
                self._locked(
                    select(jobs.c.id, jobs.c.spec, jobs.c.state)
                    .where(jobs.c.state.in_(("queued", "running")), jobs.c.finalizer.is_(None))
                    .order_by(jobs.c.created_at, jobs.c.id),
                    skip_locked=True,
                )
            ).all()
            for job_id, spec, state in candidates:
                held = conn.execute(select(claims.c.slot, claims.c.worker).where(claims.c.job_id == job_id)).all()
                if any(w == worker for _, w in held) or len(held) >= int(spec.get("workers", 1)):
                    continue
                slot = min(set(range(len(held) + 1)) - {s for s, _ in held})
                conn.execute(insert(claims).values(job_id=job_id, slot=slot, worker=worker, heartbeat_at=now()))
                if state == "queued":
                    conn.execute(update(jobs).where(jobs.c.id == job_id).values(state="running", updated_at=now()))
                return Claim(job_id, slot, worker, spec)
        return None

    def beat(self, claim: Claim) -> str | None:
        """Refresh a claim; return the job's state, or None when the claim was lost (reaped)."""
        with self.engine.begin() as conn:
            kept = conn.execute(
                update(claims)
                .where(claims.c.job_id == claim.job_id, claims.c.slot == claim.slot, claims.c.worker == claim.worker)
                .values(heartbeat_at=now())
            ).rowcount
            state = conn.execute(select(jobs.c.state).where(jobs.c.id == claim.job_id)).scalar_one_or_none()
        return state if kept else None

    def release(self, claim: Claim) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(claims).where(
                    claims.c.job_id == claim.job_id, claims.c.slot == claim.slot, claims.c.worker == claim.worker
                )
            )

    def take_finalizer(self, claim: Claim) -> bool:
        """True for exactly one worker of a running job: the one that writes its front."""
        with self.engine.begin() as conn:
            return (
                conn.execute(
                    update(jobs)
                    .where(jobs.c.id == claim.job_id, jobs.c.state == "running", jobs.c.finalizer.is_(None))
                    .values(finalizer=claim.worker, updated_at=now())
                ).rowcount
                == 1
            )


def _sqlite_engine(url: str) -> Engine:
    """SQLite with writers serialised by BEGIN IMMEDIATE (its only safe way to claim rows)."""
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine
