"""Hardware cost models: a model's profile and a target's numbers in, per-target cost metrics out."""

from __future__ import annotations

from autocompress.hardware.profile import LinearProfile, ModelProfile, profile_model
from autocompress.hardware.roofline import HARDWARE_MODELS, HardwareModel, RooflineModel, Workload
from autocompress.hardware.target import HardwareTarget, list_targets, load_target
from autocompress.metrics import metric_name

__all__ = [
    "HARDWARE_MODELS",
    "HardwareModel",
    "HardwareTarget",
    "LinearProfile",
    "ModelProfile",
    "RooflineModel",
    "Workload",
    "cost_metrics",
    "list_targets",
    "load_target",
    "profile_model",
]


def cost_metrics(
    profile: ModelProfile, targets: list[HardwareTarget], workload: Workload | None = None, model: str = "roofline"
) -> dict[str, float]:
    """Every cost metric on every target, keyed ``<target>.<metric>`` (see :func:`metric_name`)."""
    workload = workload or Workload()
    hardware_model = HARDWARE_MODELS.get(model, "hardware_model")
    metrics: dict[str, float] = {}
    for target in targets:
        for metric, value in hardware_model(target).predict(profile, workload).items():
            metrics[metric_name(target.name, metric)] = value
    return metrics
