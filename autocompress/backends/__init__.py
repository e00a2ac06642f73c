"""Execution backends (``local``, ``ray``); importing this package registers the built-in ones."""

from autocompress.backends import local  # noqa: F401  (each registers itself)
from autocompress.backends import ray as _ray  # noqa: F401  (imports ray only when used)
from autocompress.backends.base import BACKENDS, Backend, backend_for, register_backend, run_job, run_trials

__all__ = ["BACKENDS", "Backend", "backend_for", "register_backend", "run_job", "run_trials"]
