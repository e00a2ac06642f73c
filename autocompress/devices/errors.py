"""One-line errors of the device layer; each names the device and what to check."""

from __future__ import annotations

from autocompress.errors import AutocompressError


class DeviceError(AutocompressError):
    """Something went wrong on or on the way to a device (the CLI prints it and exits 2)."""

    def __init__(self, device: str, problem: str):
        self.device = device
        self.problem = " ".join(problem.split())  # always one line
        super().__init__(f"{device}: {self.problem}")


class DeviceUnreachableError(DeviceError):
    """The device could not be reached: no route, nothing listening, unknown host, no client tool."""


class DeviceAuthError(DeviceError):
    """The device refused us: wrong or missing key, untrusted host key, unauthorised adb."""


class DeviceTimeoutError(DeviceError):
    """A command on the device ran past its timeout (it was killed there)."""


class DeviceDisconnectedError(DeviceError):
    """The connection dropped while a command or a copy was running."""


class DeviceCommandError(DeviceError):
    """A command the device layer needs failed on the device (a copy, the scratch folder, a probe)."""


class LlamaBenchError(DeviceError):
    """llama.cpp's benchmark printed something that is not the JSON ``-o json`` writes, or is missing."""
