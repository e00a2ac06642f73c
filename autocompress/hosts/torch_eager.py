"""``--runtime torch``: torch eager in fp32, the ``host`` target."""

from __future__ import annotations

from collections.abc import Callable
from itertools import chain

from torch import nn

from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import HardwareTarget
from autocompress.hosts import suites
from autocompress.hosts.base import HOST_RUNTIMES, Cases, HostRuntime, Suite
from autocompress.hosts.calibrate import Errors, host_target, target_yaml, time_eager
from autocompress.hosts.measure import ModelTiming


@HOST_RUNTIMES.decorator()
class TorchEager(HostRuntime):
    """Fake-quantized weights stay fp32 (``runtime_bits: 32``): bits and sparsity buy no speed."""

    name = "torch"
    target_name = "host"

    def initial_target(self, progress: Callable[[str], None] = lambda _: None) -> HardwareTarget:
        progress("micro-benchmarks (bandwidth, GEMM, op overhead)")
        return host_target()

    def time(self, model: nn.Module, workload: Workload, repeats: int) -> ModelTiming:
        return time_eager(model, workload, repeats)

    def cases(self, suite: Suite) -> Cases:
        if suite == "calibration":
            return suites.shape_models(suites.CALIBRATION_SHAPES, self.model_ref)
        return chain(
            suites.shape_models(suites.VALIDATION_SHAPES, self.model_ref), suites.recipe_models(self.model_ref)
        )

    def target_yaml(self, target: HardwareTarget, fitted_on: int, err: Errors) -> str:
        return target_yaml(target, fitted_on, err)
