"""Execution backends: how a job's trials run once the runner has opened its study.

A backend is a function ``run(runner, should_stop) -> None`` that takes trials with
``runner.next_trial`` and scores them with ``runner.run_trial`` until it gets None. Reservation,
heartbeats, reaping and tracking live in the runner, so every backend gets them the same way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from autocompress.registry import Registry

if TYPE_CHECKING:
    from autocompress.search.runner import JobRunner

Backend = Callable[["JobRunner", Callable[[], bool]], None]
BACKENDS: Registry[Backend] = Registry("backend", "autocompress.backends")


def register_backend(name: str) -> Callable[[Backend], Backend]:
    return lambda fn: BACKENDS.register(fn, name)


from autocompress.backends import local  # noqa: E402,F401  (each registers itself)
from autocompress.backends import ray as _ray  # noqa: E402,F401  (imports ray only when used)
