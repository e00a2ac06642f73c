"""Host runtimes calibration can fit a target for; importing this package registers the built-in ones."""

from autocompress.hardware.hosts import llamacpp, torch_eager  # noqa: F401
from autocompress.hardware.hosts.base import HOST_RUNTIMES, HostRuntime, host_runtime, runtime_for_target

__all__ = ["HOST_RUNTIMES", "HostRuntime", "host_runtime", "runtime_for_target"]
