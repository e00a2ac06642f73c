"""``local``: this machine as a device (what ``hardware calibrate`` measures today), through the same interface."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from autocompress.devices.base import (
    DEVICE_RUNNERS,
    Completed,
    DeviceRunner,
    RunnerOptions,
    log,
    run_process,
    shown,
    write_whole,
)
from autocompress.devices.errors import DeviceCommandError, DeviceTimeoutError


@DEVICE_RUNNERS.decorator()
class LocalRunner(DeviceRunner):
    """Commands as subprocesses of this process, in a temporary folder of this machine."""

    name = "local"
    form = "local"

    @classmethod
    def from_url(cls, url: str, options: RunnerOptions) -> LocalRunner:
        if url not in ("local", "local://"):
            raise ValueError("`local` takes no host, user or path")
        return cls("local", options)

    def _make_scratch(self) -> str:
        return tempfile.mkdtemp(prefix="autocompress-")

    def _remove_scratch(self, scratch: str) -> None:
        shutil.rmtree(scratch, ignore_errors=True)

    def put(self, local_path: Path | str, remote_name: str, timeout: float | None = None) -> str:
        dest = self.path(remote_name)
        try:
            shutil.copyfile(local_path, dest)
        except OSError as err:
            raise DeviceCommandError(self.url, f"cannot copy {str(local_path)!r}: {err.strerror}") from None
        return dest

    def get(self, remote_name: str, local_path: Path | str, timeout: float | None = None) -> Path:
        source = self.path(remote_name)

        def fill(part: Path) -> None:
            shutil.copyfile(source, part)

        try:
            return write_whole(local_path, fill)
        except OSError as err:
            raise DeviceCommandError(self.url, f"cannot copy back {remote_name!r}: {err.strerror}") from None

    def run(self, argv: Sequence[str], timeout: float | None = None) -> Completed:
        limit = self._timeout(timeout)
        scratch = self.entered()
        log.debug("%s $ %s", self.url, shown(argv))
        try:
            return run_process(argv, limit, cwd=scratch)
        except TimeoutError:
            raise DeviceTimeoutError(
                self.url, f"`{shown(argv)}` did not finish within {limit:g} s and was killed"
            ) from None
        except FileNotFoundError:  # as a shell would report it
            return Completed("", f"{argv[0]}: not found\n", 127, 0.0)
        except PermissionError:
            return Completed("", f"{argv[0]}: permission denied\n", 126, 0.0)
