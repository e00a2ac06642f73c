"""The REST API: submit, list, inspect and cancel search jobs. OpenAPI at ``/openapi.json``.

Job specs have the CLI's schema (JSON or YAML body). A rejected spec gets a 4xx naming the field
and the reason, and creates nothing; the same Idempotency-Key (default: the job name) with the same
body returns the same job, with another body 409. With a token set, every route but ``/health``
needs ``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import optuna
import yaml
from fastapi import Depends, FastAPI, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from optuna.trial import TrialState
from pydantic import BaseModel
from sqlalchemy.engine import make_url

from autocompress.errors import AutocompressError, ConfigError
from autocompress.search.job import Job
from autocompress.service.policy import ServerSettings, prepare_job
from autocompress.service.queue import STATES, Conflict, InvalidTransition, JobQueue

MAX_BODY = 256 * 1024
JobState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
assert set(JobState.__args__) == set(STATES)  # type: ignore[attr-defined]


class JobSummary(BaseModel):
    id: str
    name: str
    state: JobState
    created_at: datetime
    updated_at: datetime
    error: str | None = None


class TrialRow(BaseModel):
    trial: int
    state: str
    feasible: bool
    pareto: bool
    metrics: dict[str, float | None]
    recipe: dict[str, Any]
    run_id: str | None = None
    error: str | None = None
    duplicate_of: int | None = None


class Progress(BaseModel):
    trials_requested: int
    trials_done: int  # finished trials that count towards the job (complete, pruned, failed by error)
    trials_failed: int  # every failed trial, killed ones included (they are retried)
    trials_running: int


class JobDetail(JobSummary):
    spec: dict[str, Any]
    progress: Progress
    front: list[TrialRow]


class _NoAliases(yaml.SafeLoader):
    """YAML without anchors/aliases: no exponential 'billion laughs' structures."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            raise ConfigError("job", "YAML aliases are not allowed")
        return super().compose_node(parent, index)


def parse_body(raw: bytes, content_type: str) -> Any:
    if len(raw) > MAX_BODY:
        raise HTTPException(413, {"field": "body", "reason": f"larger than {MAX_BODY} bytes"})
    try:
        text = raw.decode("utf-8")
        if "json" in content_type:
            return json.loads(text)
        return yaml.load(text, Loader=_NoAliases)  # YAML (JSON is YAML too)
    except ConfigError:
        raise
    except (ValueError, yaml.YAMLError, RecursionError):
        raise ConfigError("job", "the body is not valid JSON or YAML") from None


class StudyReader:
    """Trial counts and fronts read from each job's Optuna storage (engines cached per URL)."""

    def __init__(self) -> None:
        self._storages: dict[str, optuna.storages.RDBStorage] = {}
        self._lock = threading.Lock()

    def _storage(self, url: str) -> optuna.storages.RDBStorage | None:
        parsed = make_url(url)
        if parsed.get_backend_name() == "sqlite" and not Path(parsed.database or "").is_file():
            return None  # nothing ran yet; don't create the file just to read it
        with self._lock:
            if url not in self._storages:
                from autocompress.search.lock import STORAGE_WIDE, job_lock
                from autocompress.search.storage import open_storage

                with job_lock(url, STORAGE_WIDE):  # not while a worker creates the tables
                    self._storages[url] = open_storage(url, 10)
            return self._storages[url]

    def read(self, job: Job) -> tuple[Progress, list[TrialRow]]:
        from autocompress.search.front import trial_records
        from autocompress.search.runner import counts_as_finished
        from autocompress.tracking import json_safe

        progress = Progress(trials_requested=job.search.trials, trials_done=0, trials_failed=0, trials_running=0)
        storage = self._storage(job.storage_url)
        if storage is None:
            return progress, []
        try:
            study = optuna.load_study(study_name=job.name, storage=storage)
        except KeyError:
            return progress, []
        trials = study.get_trials(deepcopy=False)
        progress.trials_done = sum(counts_as_finished(t) for t in trials)
        progress.trials_failed = sum(t.state == TrialState.FAIL for t in trials)
        progress.trials_running = sum(t.state == TrialState.RUNNING for t in trials)
        rows = [TrialRow(**json_safe(r.row())) for r in trial_records(study, job.objectives)]
        return progress, rows


def create_app(
    queue: JobQueue,
    settings: ServerSettings,
    token: str | None = None,
    embedded_worker: bool = True,
    worker_heartbeat: float = 5.0,
) -> FastAPI:
    reader = StudyReader()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        thread = None
        if embedded_worker:
            from autocompress.service.worker import Worker

            worker = Worker(queue, settings, heartbeat=worker_heartbeat)
            thread = threading.Thread(target=worker.run, args=(stop,), daemon=True, name="embedded-worker")
            thread.start()
        yield
        stop.set()  # the trial in progress finishes; a kill instead is recovered by the next worker

    bearer = HTTPBearer(auto_error=False)

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if token is None:
            return
        if credentials is None or not hmac.compare_digest(credentials.credentials.encode(), token.encode()):
            raise HTTPException(
                401,
                "a valid 'Authorization: Bearer <AUTOCOMPRESS_TOKEN>' header is required",
                headers={"WWW-Authenticate": "Bearer"},
            )

    app = FastAPI(title="autocompress", version="1", lifespan=lifespan, dependencies=[])
    secured = [Depends(authorised)]

    @app.exception_handler(AutocompressError)
    async def _bad_input(_: Request, exc: AutocompressError) -> JSONResponse:
        field, reason = (exc.field, exc.problem) if isinstance(exc, ConfigError) else (*str(exc).split(": ", 1), "")[:2]
        return JSONResponse({"detail": {"field": field, "reason": reason or str(exc)}}, status_code=422)

    def job_or_404(job_id: str) -> dict[str, Any]:
        row = queue.get(job_id)
        if row is None:
            raise HTTPException(404, f"no job with id {job_id!r}")
        return row

    def detail(row: dict[str, Any]) -> JobDetail:
        job = prepare_job(row["spec"], settings)
        progress, rows = reader.read(job)
        return JobDetail(**row, progress=progress, front=[r for r in rows if r.pareto])

    def validate(spec: Any) -> Job:
        """The CLI's checks (space, targets, model) plus the server's; creates nothing."""
        from autocompress.backends import backend_for
        from autocompress.search.runner import JobRunner

        job = prepare_job(spec, settings)
        JobRunner(job, progress=False)
        backend_for(job)
        return job

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "live_workers": queue.live_workers()}

    @app.post(
        "/jobs",
        status_code=201,
        dependencies=secured,
        response_model=JobDetail,
        responses={
            200: {"model": JobDetail, "description": "the same job submitted before"},
            409: {"description": "the key or name belongs to a different job"},
            413: {"description": "body too large"},
            422: {"description": "invalid job spec"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Job"}},
                    "application/yaml": {"schema": {"type": "string"}},
                },
            }
        },
    )
    async def submit(request: Request, idempotency_key: str | None = Header(None, max_length=200)) -> Any:
        spec = parse_body(await request.body(), request.headers.get("content-type", ""))
        job = await run_in_threadpool(validate, spec)
        try:
            row, created = queue.submit(spec, job.name, idempotency_key)
        except Conflict as exc:
            raise HTTPException(
                409, {"field": "Idempotency-Key" if idempotency_key else "name", "reason": str(exc)}
            ) from None
        return JSONResponse(detail(row).model_dump(mode="json"), status_code=201 if created else 200)

    @app.get("/jobs", dependencies=secured, response_model=list[JobSummary])
    def list_jobs(
        state: JobState | None = None, limit: int = Query(100, ge=1, le=1000), offset: int = Query(0, ge=0, le=10**9)
    ) -> list[JobSummary]:
        return [JobSummary(**r) for r in queue.list(state, limit, offset)]

    @app.get("/jobs/{job_id}", dependencies=secured, response_model=JobDetail)
    def get_job(job_id: str) -> JobDetail:
        return detail(job_or_404(job_id))

    @app.get("/jobs/{job_id}/pareto", dependencies=secured, response_model=list[TrialRow])
    def get_pareto(job_id: str) -> list[TrialRow]:
        return detail(job_or_404(job_id)).front

    @app.get("/jobs/{job_id}/trials", dependencies=secured, response_model=list[TrialRow])
    def get_trials(job_id: str) -> list[TrialRow]:
        row = job_or_404(job_id)
        return reader.read(prepare_job(row["spec"], settings))[1]

    @app.post(
        "/jobs/{job_id}/cancel",
        dependencies=secured,
        response_model=JobDetail,
        responses={409: {"description": "the job has already ended"}},
    )
    def cancel(job_id: str) -> JobDetail:
        job_or_404(job_id)
        try:
            return detail(queue.transition(job_id, "cancelled"))
        except InvalidTransition as exc:
            raise HTTPException(409, {"field": "state", "reason": str(exc)}) from None
        except KeyError:
            raise HTTPException(404, f"no job with id {job_id!r}") from None

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            job_schema = Job.model_json_schema(ref_template="#/components/schemas/{model}")
            schemas = spec.setdefault("components", {}).setdefault("schemas", {})
            schemas.update(job_schema.pop("$defs", {}))
            schemas["Job"] = job_schema
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
