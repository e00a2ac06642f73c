"""Host calibration: measure this machine with a real runtime and fit a target's efficiency factors.

``calibrate`` fits, ``measure`` times models and micro-benchmarks, ``suites`` lists what is measured,
and each runtime (``torch``, ``llamacpp``) is a :class:`HostRuntime` in :data:`HOST_RUNTIMES`;
importing this package registers the built-in ones. The cost model itself is ``autocompress.hardware``.
"""

from autocompress.hosts import llamacpp, torch_eager  # noqa: F401
from autocompress.hosts.base import HOST_RUNTIMES, HostRuntime, host_runtime, runtime_for_target

__all__ = ["HOST_RUNTIMES", "HostRuntime", "host_runtime", "runtime_for_target"]
