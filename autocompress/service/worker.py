"""A worker: claims a slot of a queued or running job, runs its trials, ends it; then the next.

While it holds a claim a thread beats on it every ``heartbeat`` seconds; the beat also reads the
job's state, so a cancelled job (or a claim that was reaped) stops the search after the trial in
progress. The trials of a worker that dies are failed and re-queued by the next runner of the job
(their Optuna heartbeat stops); its claim is reaped after the queue's ``claim_timeout``.
"""

from __future__ import annotations

import os
import socket
import threading
import traceback
import uuid

from rich.console import Console

from autocompress.errors import AutocompressError
from autocompress.service.policy import ServerSettings, prepare_job
from autocompress.service.queue import Claim, InvalidTransition, JobQueue


def worker_name() -> str:
    return f"{socket.gethostname()[:30]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        queue: JobQueue,
        settings: ServerSettings,
        heartbeat: float = 5.0,
        poll: float = 2.0,
        name: str | None = None,
        console: Console | None = None,
    ):
        self.queue, self.settings = queue, settings
        self.heartbeat, self.poll = heartbeat, poll
        self.name = name or worker_name()
        self.console = console or Console(stderr=True)

    def run(self, stop: threading.Event, max_jobs: int | None = None) -> None:
        """Process claims until ``stop`` is set (or ``max_jobs`` claims were handled)."""
        handled = 0
        while not stop.is_set() and (max_jobs is None or handled < max_jobs):
            claim = self.queue.claim(self.name)
            if claim is None:
                stop.wait(self.poll)
                continue
            self.process(claim, stop)
            handled += 1

    def process(self, claim: Claim, stop: threading.Event | None = None) -> None:
        """Run the claimed job's trials; write its front and mark it succeeded if they are all done."""
        from autocompress.backends import run_trials
        from autocompress.search.runner import JobRunner

        halt = threading.Event()  # cancelled, claim lost, or the worker is stopping
        beater = threading.Thread(target=self._beat, args=(claim, halt, stop), daemon=True)
        beater.start()
        try:
            job = prepare_job(claim.spec, self.settings)
            runner = JobRunner(job, self.console, progress=False, sampler_offset=claim.slot, worker=self.name)
            runner.open()
            self.console.print(f"[bold]{self.name}[/]: job {job.name} ({claim.job_id}), slot {claim.slot}")
            if run_trials(runner, should_stop=halt.is_set) and not halt.is_set() and self.queue.take_finalizer(claim):
                runner.finish()
                self._end(claim, "succeeded")
        except AutocompressError as exc:
            self._end(claim, "failed", str(exc))
        except Exception as exc:  # a bug or a broken environment: the job says so instead of hanging
            self.console.print(traceback.format_exc())
            self._end(claim, "failed", f"{type(exc).__name__}: {exc}"[:2000])
        finally:
            halt.set()
            beater.join()
            self.queue.release(claim)

    def _end(self, claim: Claim, state: str, error: str | None = None) -> None:
        try:
            self.queue.transition(claim.job_id, state, error)
        except InvalidTransition:  # cancelled meanwhile: keep the user's word
            pass

    def _beat(self, claim: Claim, halt: threading.Event, stop: threading.Event | None) -> None:
        while not halt.wait(self.heartbeat):
            try:
                state = self.queue.beat(claim)
            except Exception:  # the database is away for a moment; the claim times out if it stays away
                continue
            if state != "running" or (stop is not None and stop.is_set()):
                halt.set()
