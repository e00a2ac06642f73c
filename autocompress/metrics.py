"""Metric names are built here and nowhere else. Cost metrics are per target (``<target>.<metric>``);
accuracy metric names are declared by the evaluators (``autocompress.evaluators.known_metrics``)."""

from __future__ import annotations

COST_METRICS = ("decode_ms_per_token", "prefill_ms", "peak_memory_mb", "energy_mj_per_token")


def metric_name(target: str, metric: str) -> str:
    """The name of a per-target cost metric, e.g. ``raspberry-pi-5.decode_ms_per_token``."""
    if metric not in COST_METRICS:
        raise ValueError(f"unknown cost metric {metric!r}; allowed: {', '.join(COST_METRICS)}")
    return f"{target}.{metric}"


def split_metric_name(name: str) -> tuple[str | None, str]:
    """``'rpi.decode_ms_per_token'`` -> ``('rpi', 'decode_ms_per_token')``; ``'kl'`` -> ``(None, 'kl')``."""
    target, _, metric = name.rpartition(".")
    return (target or None), metric


def is_cost_metric(name: str) -> bool:
    return split_metric_name(name)[1] in COST_METRICS


def measured_name(runtime: str, metric: str) -> str:
    """A figure measured on this host with a real runtime, e.g. ``host.llamacpp.decode_tokens_per_s``
    (beside the predicted ``host.decode_ms_per_token`` of a calibrated host target)."""
    return f"host.{runtime}.{metric}"
