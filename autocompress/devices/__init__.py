"""Devices reached over ``ssh://``, ``adb://`` or ``local``: copy files, run commands with a timeout, clean up;
probe what a device has and measure a GGUF's speed there with llama.cpp.

    with open_device("ssh://pi@raspberrypi.local") as device:
        info = probe(device)
        speed = measure_speed(device, Path("model.gguf"), device=info)
"""

from autocompress.devices import adb, local, ssh  # noqa: F401  (registers the runners)
from autocompress.devices.base import DEVICE_RUNNERS, Completed, DeviceRunner, RunnerOptions, open_device
from autocompress.devices.errors import (
    DeviceAuthError,
    DeviceCommandError,
    DeviceDisconnectedError,
    DeviceError,
    DeviceTimeoutError,
    DeviceUnreachableError,
    LlamaBenchError,
)
from autocompress.devices.llama_bench import LlamaSpeed, parse_llama_bench
from autocompress.devices.probe import DeviceProbe, probe
from autocompress.devices.speed import measure_speed

__all__ = [
    "DEVICE_RUNNERS",
    "Completed",
    "DeviceAuthError",
    "DeviceCommandError",
    "DeviceDisconnectedError",
    "DeviceError",
    "DeviceProbe",
    "DeviceRunner",
    "DeviceTimeoutError",
    "DeviceUnreachableError",
    "LlamaBenchError",
    "LlamaSpeed",
    "RunnerOptions",
    "measure_speed",
    "open_device",
    "parse_llama_bench",
    "probe",
]
