"""What ssh and adb devices share: a POSIX shell on the far side, reached by a client on this machine.

Each remote command runs under a small ``sh`` watchdog, so a command that hangs is killed *on the device*
(TERM, then KILL two seconds later) rather than left running after the client gives up; it needs only
``sh``, ``sleep`` and ``kill`` (dash, bash, busybox, Android's mksh/toybox), not ``timeout``. The
client on this machine has a second, later deadline for a device that stops answering altogether.
"""

from __future__ import annotations

import math
import re
import shlex
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from autocompress.devices.base import Completed, DeviceRunner, shown
from autocompress.devices.errors import DeviceCommandError, DeviceDisconnectedError, DeviceError, DeviceTimeoutError

TIMED_OUT = 124  # the watchdog's exit status when it killed the command (as coreutils' timeout)
# $1 scratch folder, $2 seconds, then the command. The watchdog leaves a marker before it kills, so a
# command that exits 124 by itself is not taken for a timeout.
WATCHDOG = r"""cd "$1" || exit 125
t=$2; shift 2
"$@" </dev/null &
p=$!
( sleep "$t" & s=$!
  trap 'kill "$s" 2>/dev/null; exit 0' TERM
  wait "$s"
  : > ".timed-out.$p"
  kill -TERM "$p" 2>/dev/null; sleep 2; kill -KILL "$p" 2>/dev/null ) >/dev/null 2>&1 &
w=$!
wait "$p"; rc=$?
kill "$w" 2>/dev/null
if [ -e ".timed-out.$p" ]; then rm -f ".timed-out.$p"; exit 124; fi
exit "$rc"
"""

# (pattern in the client's own messages, error class, what to tell the user); first match wins
Failure = tuple[re.Pattern, type[DeviceError], str]


def classify(device: str, output: str, failures: Sequence[Failure], what: str) -> DeviceError | None:
    """The error for the first line of a client's ``output`` that matches one of ``failures``."""
    for pattern, cls, hint in failures:
        for line in output.splitlines():
            if pattern.search(line):
                return cls(device, hint.format(line=line.strip().rstrip("."), what=what))
    return None


class ShellRunner(DeviceRunner):
    """A device whose commands are POSIX shell lines sent through a client program on this machine."""

    grace_s: float = 30.0  # the client's own deadline: the command's timeout plus this

    @abstractmethod
    def _transport(
        self, line: str, timeout: float, what: str, stdin: IO | None = None, stdout: IO | None = None
    ) -> Completed:
        """Run a shell ``line`` on the device through the client; transport failures (unreachable,
        authentication, dropped connection, client deadline) raise; the line's exit status is returned."""

    def _shell(
        self, line: str, timeout: float, what: str, stdin: IO | None = None, stdout: IO | None = None
    ) -> Completed:
        """:meth:`_transport`, with a non-zero exit status raised as :class:`DeviceCommandError`."""
        done = self._transport(line, timeout, what, stdin=stdin, stdout=stdout)
        if not done.ok:
            raise DeviceCommandError(self.url, f"{what} failed: {done.last_error_line()}")
        return done

    def run(self, argv: Sequence[str], timeout: float | None = None) -> Completed:
        scratch = self.entered()
        if not argv:
            raise ValueError("run() needs a command")
        limit = self._timeout(timeout)
        seconds = max(1, math.ceil(limit))
        what = f"`{shown(argv)}`"
        line = shlex.join(["sh", "-c", WATCHDOG, "sh", scratch, str(seconds), *argv])
        done = self._transport(line, seconds + self.grace_s, what)
        if done.returncode == TIMED_OUT and done.seconds >= seconds:
            raise DeviceTimeoutError(self.url, f"{what} did not finish within {limit:g} s and was killed on the device")
        return done

    def _remove_scratch(self, scratch: str) -> None:
        if "/autocompress-" not in scratch:  # never remove anything this runner did not make
            raise DeviceCommandError(self.url, f"refusing to remove {scratch!r}")
        self._shell(f"rm -rf {shlex.quote(scratch)}", 60.0, "removing the scratch folder")

    def _client_deadline(self, what: str, timeout: float) -> DeviceError:
        return DeviceTimeoutError(
            self.url, f"no answer from the device within {timeout:g} s while {what} ran; the client was stopped"
        )

    def _check_size(self, what: str, local: Path, done: Completed) -> None:
        size = done.stdout.strip().split()[-1] if done.stdout.strip() else ""
        if size != str(local.stat().st_size):
            raise DeviceDisconnectedError(
                self.url,
                f"{what}: the device holds {size or 'no'} bytes of {local.stat().st_size}; the copy was cut short",
            )
