"""Devices reached over ``ssh://``, ``adb://`` or ``local``: copy files, run commands with a timeout, clean up.

    with open_device("ssh://pi@raspberrypi.local") as device:
        device.put(Path("model.gguf"), "model.gguf")
        done = device.run(["ls", "-l"], timeout=30)
"""

from autocompress.devices import adb, local, ssh  # noqa: F401  (registers the runners)
from autocompress.devices.base import DEVICE_RUNNERS, Completed, DeviceRunner, RunnerOptions, open_device
from autocompress.devices.errors import (DeviceAuthError, DeviceCommandError, DeviceDisconnectedError, DeviceError,
                                         DeviceTimeoutError, DeviceUnreachableError, LlamaBenchError)

__all__ = ["DEVICE_RUNNERS", "Completed", "DeviceAuthError", "DeviceCommandError", "DeviceDisconnectedError",
           "DeviceError", "DeviceRunner", "DeviceTimeoutError", "DeviceUnreachableError", "LlamaBenchError",
           "RunnerOptions", "open_device"]
