"""A runtime on this machine that calibration fits a target for: ``--runtime torch`` or ``llamacpp``.

Each runtime knows how to time a (model, workload) sample, its figures before fitting, the
calibration and validation suites it measures, and how its fitted target is written. The
calibrate/validate flow (:mod:`autocompress.cli.hardware`) is the same for all of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import ClassVar, Literal

from torch import nn

from autocompress.errors import ConfigError
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import HardwareTarget
from autocompress.hosts.calibrate import Errors
from autocompress.hosts.measure import ModelTiming
from autocompress.models.loading import DEFAULT_MODEL
from autocompress.registry import Registry

Suite = Literal["calibration", "validation"]
Cases = Iterator[tuple[str, nn.Module, Workload]]


class HostRuntime(ABC):
    """How one runtime on this host is measured and written down as a target."""

    name: ClassVar[str]  # the ``--runtime`` value
    target_name: ClassVar[str]  # the target calibration writes (``host``, ``host-llamacpp``)

    def __init__(self, model_ref: str = DEFAULT_MODEL):
        self.model_ref = model_ref

    @abstractmethod
    def initial_target(self, progress: Callable[[str], None] = lambda _: None) -> HardwareTarget:
        """The host's figures from micro-benchmarks, efficiency factors not yet fitted."""

    @abstractmethod
    def time(self, model: nn.Module, workload: Workload, repeats: int) -> ModelTiming:
        """Measured prefill and per-token decode of ``model`` (as the runtime would hold it)."""

    @abstractmethod
    def cases(self, suite: Suite) -> Cases:
        """``(label, model, workload)`` of a suite; calibration and validation share no label."""

    @abstractmethod
    def target_yaml(self, target: HardwareTarget, fitted_on: int, err: Errors) -> str:
        """The fitted target as YAML, each number with where it came from."""


HOST_RUNTIMES: Registry[type[HostRuntime]] = Registry("host runtime")


def host_runtime(name: str, model_ref: str = DEFAULT_MODEL, field: str = "--runtime") -> HostRuntime:
    return HOST_RUNTIMES.get(name, field)(model_ref)


def runtime_for_target(target: HardwareTarget, field: str = "--target") -> type[HostRuntime]:
    """The runtime a calibrated host target was measured with (by its name)."""
    found = [HOST_RUNTIMES[n] for n in HOST_RUNTIMES if HOST_RUNTIMES[n].target_name == target.name]
    if not found:
        allowed = ", ".join(sorted(HOST_RUNTIMES[n].target_name for n in HOST_RUNTIMES))
        raise ConfigError(
            field,
            f"{target.name!r} is not a host target; allowed: {allowed} "
            "(write one with `autocompress hardware calibrate --runtime ...`)",
        )
    return found[0]
