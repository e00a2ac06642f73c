"""The one interface to a device: a scratch folder on it, files in and out, commands with a timeout.

A runner is used as a context manager: entering makes a fresh scratch folder on the device, leaving
removes it, also when the body raised. Every remote command has a timeout; a transport failure is
one of the :mod:`autocompress.devices.errors` (one line, naming the device), never a traceback.
"""

from __future__ import annotations

import logging
import os
import re
import shlex
import signal
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autocompress.devices.errors import DeviceError
from autocompress.errors import ConfigError
from autocompress.registry import Registry

log = logging.getLogger("autocompress.devices")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # a file name in the scratch folder: no paths, no options


@dataclass(frozen=True)
class Completed:
    """A finished command: its output, exit status and wall-clock seconds (seen from this machine)."""

    stdout: str
    stderr: str
    returncode: int
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    def last_error_line(self) -> str:
        lines = [line.strip() for line in self.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {self.returncode}"


class RunnerOptions(BaseModel):
    """Settings every runner takes (scheme-specific runners add their own)."""

    model_config = ConfigDict(extra="forbid")
    timeout_s: float = Field(600.0, gt=0, description="default timeout of run()")
    transfer_timeout_s: float = Field(1800.0, gt=0, description="default timeout of put() and get()")


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    return re.sub(r"(//[^/@:]*):[^/@]*@", r"\1:***@", url)


def shown(argv: Sequence[str]) -> str:
    """``argv`` for messages and logs: shell-quoted, each multi-line script shortened to ``<script>``."""
    return shlex.join(a if "\n" not in a and len(a) < 200 else "<script>" for a in argv)


def check_name(name: str) -> str:
    """A plain file name in the scratch folder (no ``/``, no ``..``, no leading ``-``)."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise ValueError(f"remote name {name!r} must be a plain file name (letters, digits, '.', '_', '-')")
    return name


def run_process(
    argv: Sequence[str],
    timeout: float,
    *,
    cwd: str | None = None,
    stdin: IO | int | None = None,
    stdout: IO | None = None,
) -> Completed:
    """Run ``argv`` on this machine in its own process group; on timeout the whole group is killed and
    :class:`TimeoutError` raised. ``stdout`` (a binary file) takes the output instead of a pipe."""
    start = time.monotonic()
    proc = subprocess.Popen(
        list(argv),
        cwd=cwd,
        stdin=subprocess.DEVNULL if stdin is None else stdin,
        stdout=stdout if stdout is not None else subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.communicate()
        raise TimeoutError(f"{shlex.join(argv)} ran past {timeout:g} s") from None
    text = (out or b"").decode(errors="replace")
    return Completed(text, err.decode(errors="replace"), proc.returncode, time.monotonic() - start)


class DeviceRunner(ABC):
    """A device reached through some transport; ``with runner:`` holds a scratch folder on it."""

    name: ClassVar[str]  # the URL scheme (the registry key)
    form: ClassVar[str]  # how its URL is written, for messages
    Options: ClassVar[type[RunnerOptions]] = RunnerOptions

    def __init__(self, url: str, options: RunnerOptions):
        self.url = redact(url)
        self.options = options
        self.scratch: str | None = None

    @classmethod
    @abstractmethod
    def from_url(cls, url: str, options: RunnerOptions) -> DeviceRunner:
        """A runner for ``url``; a :class:`ValueError` says what is wrong with it."""

    # --- the scratch folder -------------------------------------------------------------------------
    @abstractmethod
    def _make_scratch(self) -> str:
        """Create a fresh, private folder on the device; its absolute path."""

    @abstractmethod
    def _remove_scratch(self, scratch: str) -> None:
        """Remove ``scratch`` and everything in it."""

    def __enter__(self) -> DeviceRunner:
        self.scratch = self._make_scratch()
        log.debug("%s: scratch folder %s", self.url, self.scratch)
        return self

    def __exit__(self, *exc_info) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        """Remove the scratch folder (idempotent). A device that cannot be reached any more keeps it:
        that is logged as a warning naming the folder, never raised over the error that caused it."""
        scratch, self.scratch = self.scratch, None
        if scratch is None:
            return
        try:
            self._remove_scratch(scratch)
        except DeviceError as err:
            log.warning("%s: could not remove the scratch folder %s (%s)", self.url, scratch, err.problem)

    def entered(self) -> str:
        """The scratch folder; a RuntimeError when the runner is used outside its ``with`` block."""
        if self.scratch is None:
            raise RuntimeError(f"{self.url}: use the runner as a context manager (`with open_device(...) as d:`)")
        return self.scratch

    def path(self, name: str) -> str:
        """The absolute path on the device of ``name`` in the scratch folder."""
        return f"{self.entered()}/{check_name(name)}"

    # --- files and commands --------------------------------------------------------------------------
    @abstractmethod
    def put(self, local_path: Path | str, remote_name: str, timeout: float | None = None) -> str:
        """Copy a local file into the scratch folder; its path on the device."""

    @abstractmethod
    def get(self, remote_name: str, local_path: Path | str, timeout: float | None = None) -> Path:
        """Copy a file of the scratch folder here (written whole or not at all)."""

    @abstractmethod
    def run(self, argv: Sequence[str], timeout: float | None = None) -> Completed:
        """Run ``argv`` on the device in the scratch folder; a non-zero exit is returned, not raised;
        past ``timeout`` seconds (default: the runner's) it is killed and :class:`DeviceTimeoutError` raised."""

    def which(self, program: str, timeout: float = 30.0) -> str | None:
        """Where ``program`` is on the device's PATH (or the path itself if executable), else None."""
        if not program or program.startswith("-") or "\n" in program:
            raise ValueError(f"not a program name: {program!r}")
        found = self.run(["sh", "-c", 'command -v "$1"', "sh", program], timeout=timeout)
        lines = found.stdout.strip().splitlines()
        return lines[0] if found.ok and lines and lines[0].startswith("/") else None

    def _timeout(self, timeout: float | None, transfer: bool = False) -> float:
        if timeout is not None:
            return timeout
        return self.options.transfer_timeout_s if transfer else self.options.timeout_s

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.url!r})"


def write_whole(local_path: Path | str, fill: Callable[[Path], None]) -> Path:
    """Let ``fill`` write a temporary file next to ``local_path``, then rename it into place; on any
    error the temporary file is removed and ``local_path`` is left as it was."""
    dest = Path(local_path)
    part = dest.with_name(f".{dest.name}.part-{os.getpid()}")
    try:
        fill(part)
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
    return dest


DEVICE_RUNNERS: Registry[type[DeviceRunner]] = Registry("device runner", "autocompress.devices")


def allowed_forms() -> str:
    return ", ".join(DEVICE_RUNNERS[name].form for name in DEVICE_RUNNERS)


def open_device(url: str, field: str = "--device", **options) -> DeviceRunner:
    """The runner for a device URL (``local``, ``ssh://user@host[:port]``, ``adb://serial``), not yet
    entered; a bad URL or option is a one-line :class:`ConfigError` naming ``field`` and the allowed forms."""
    shown = redact(url.strip()) if isinstance(url, str) else repr(url)
    scheme = url.split("://", 1)[0] if isinstance(url, str) and "://" in url else url
    if not isinstance(scheme, str) or scheme not in DEVICE_RUNNERS:
        raise ConfigError(field, f"unknown device {shown!r}; allowed: {allowed_forms()}")
    cls = DEVICE_RUNNERS[scheme]
    try:
        opts = cls.Options.model_validate(options)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "options"
        raise ConfigError(f"{field} {where}", first["msg"]) from None
    try:
        return cls.from_url(url.strip(), opts)
    except ValueError as err:
        raise ConfigError(field, f"{shown!r}: {' '.join(str(err).split())}; allowed: {allowed_forms()}") from None
