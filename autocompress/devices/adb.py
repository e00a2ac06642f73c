"""``adb://SERIAL``: an Android device through ``adb -s SERIAL push/shell/pull`` (Android platform-tools).

Scratch under ``/data/local/tmp/autocompress-<random>`` (the one place a shell user may write and execute).
Exit statuses of shell commands need adb's shell protocol v2 (Android 7+, adb 1.0.36+), as do separate
stdout and stderr.
"""

from __future__ import annotations

import re
import secrets
import shlex
from pathlib import Path
from typing import IO

from pydantic import Field

from autocompress.devices.base import DEVICE_RUNNERS, Completed, RunnerOptions, log, run_process, write_whole
from autocompress.devices.errors import (
    DeviceAuthError,
    DeviceCommandError,
    DeviceDisconnectedError,
    DeviceUnreachableError,
)
from autocompress.devices.shell import Failure, ShellRunner, classify

SERIAL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:-]*")  # USB serials, emulator-5554, 192.168.1.7:5555

FAILURES: list[Failure] = [
    (
        re.compile(r"unauthorized"),
        DeviceAuthError,
        "adb is not authorised on the device ({line}); unlock it and accept the USB debugging prompt",
    ),
    (
        re.compile(
            r"device '.*' not found|no devices/emulators found|device offline|failed to connect|"
            r"cannot connect to daemon"
        ),
        DeviceUnreachableError,
        "adb cannot reach the device ({line}); check `adb devices` and the serial",
    ),
    (
        re.compile(r"error: closed|protocol fault|connection reset|device still connecting|broken pipe", re.I),
        DeviceDisconnectedError,
        "the device went away while {what} ran ({line})",
    ),
]


class AdbOptions(RunnerOptions):
    adb: str = Field("adb", description="the adb program (Android platform-tools)")
    scratch_root: str = Field("/data/local/tmp", pattern=r"^/[A-Za-z0-9._/-]*$")


@DEVICE_RUNNERS.decorator()
class AdbRunner(ShellRunner):
    """An Android device; commands through ``adb shell`` under the same watchdog as ssh."""

    name = "adb"
    form = "adb://serial"
    Options = AdbOptions
    grace_s = 30.0

    options: AdbOptions

    def __init__(self, url: str, options: AdbOptions, serial: str):
        super().__init__(url, options)
        self.serial = serial

    @classmethod
    def from_url(cls, url: str, options: RunnerOptions) -> AdbRunner:
        assert isinstance(options, AdbOptions)
        serial = url.split("://", 1)[1].rstrip("/")
        if "@" in serial or not SERIAL.fullmatch(serial):
            raise ValueError("the serial (as `adb devices` lists it) is missing or has odd characters")
        return cls(url, options, serial)

    def _adb(
        self, args: list[str], timeout: float, what: str, stdin: IO | None = None, stdout: IO | None = None
    ) -> Completed:
        """``adb -s SERIAL ARGS``; adb's own failures raise, anything else is returned."""
        argv = [self.options.adb, "-s", self.serial, *args]
        log.debug("%s $ %s", self.url, what)
        try:
            done = run_process(argv, timeout, stdin=stdin, stdout=stdout)
        except FileNotFoundError:
            raise DeviceUnreachableError(
                self.url,
                f"{self.options.adb!r} is not installed here (Android platform-tools; Debian: apt-get install adb)",
            ) from None
        except TimeoutError:
            raise self._client_deadline(what, timeout) from None
        if not done.ok:
            err = classify(self.url, done.stderr + "\n" + done.stdout, FAILURES, what)
            if err is not None:
                raise err
        return done

    def _transport(
        self, line: str, timeout: float, what: str, stdin: IO | None = None, stdout: IO | None = None
    ) -> Completed:
        return self._adb(["shell", line], timeout, what, stdin=stdin, stdout=stdout)

    def _make_scratch(self) -> str:
        path = f"{self.options.scratch_root.rstrip('/')}/autocompress-{secrets.token_hex(4)}"
        self._shell(f"mkdir -m 700 {shlex.quote(path)}", 60.0, "making a scratch folder")
        return path

    def put(self, local_path: Path | str, remote_name: str, timeout: float | None = None) -> str:
        dest, local = self.path(remote_name), Path(local_path)
        what = f"copying {local.name} to the device"
        done = self._adb(["push", str(local), dest], self._timeout(timeout, transfer=True), what)
        if not done.ok:
            raise DeviceCommandError(self.url, f"{what} failed: {done.last_error_line()}")
        self._check_size(what, local, self._shell(f"wc -c < {shlex.quote(dest)}", 60.0, what))
        return dest

    def get(self, remote_name: str, local_path: Path | str, timeout: float | None = None) -> Path:
        source, what = self.path(remote_name), f"copying back {remote_name}"

        def fill(part: Path) -> None:
            done = self._adb(["pull", source, str(part)], self._timeout(timeout, transfer=True), what)
            if not done.ok:
                raise DeviceCommandError(self.url, f"{what} failed: {done.last_error_line()}")

        return write_whole(local_path, fill)
