"""Calibrate the roofline to the host: measure, then fit the efficiency factors.

1. Micro-benchmarks give the host's figures: copy bandwidth, fp32 GEMM throughput, op overhead.
2. Real prefill/decode of models of several shapes are measured: torch eager in fp32 here; llama.cpp
   on GGUF exports in :mod:`autocompress.hosts.llamacpp` (runtimes are registered in
   :mod:`autocompress.hosts`).
3. ``sustained_bandwidth_fraction``, ``compute_efficiency`` and ``per_op_overhead_us`` are fitted
   by least squares on the log of predicted / measured time, so every sample weighs the same
   whatever its size.
"""

from __future__ import annotations

import json
import math
import os
import platform
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch
from scipy.optimize import least_squares
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from autocompress.hardware.profile import ModelProfile, profile_model
from autocompress.hardware.roofline import RooflineModel, Workload
from autocompress.hardware.target import HardwareTarget
from autocompress.hosts.measure import ModelTiming, copy_bandwidth_gbps, gemm_gflops, op_overhead_us, time_model


@dataclass(frozen=True)
class Sample:
    """One measured configuration."""

    label: str
    profile: ModelProfile
    workload: Workload
    measured: ModelTiming


@dataclass(frozen=True)
class Shape:
    """A model geometry to measure: the base config with some fields changed."""

    label: str
    layers: int
    intermediate: int | None = None
    prompt_tokens: int = 256
    context_tokens: int = 512


def synthetic_model(base_config_dir: Path, shape: Shape) -> nn.Module:
    """A randomly initialised model of the base architecture with ``shape``'s depth and width
    (latency does not depend on the values of the weights)."""
    config = AutoConfig.from_pretrained(base_config_dir)
    config.num_hidden_layers = shape.layers
    if shape.intermediate:
        config.intermediate_size = shape.intermediate
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config, dtype=torch.float32).eval()


Timer = Callable[[nn.Module, Workload, int], ModelTiming]


def time_eager(model: nn.Module, workload: Workload, repeats: int) -> ModelTiming:
    """Prefill and decode of ``model`` in torch eager mode (the ``host`` target's runtime)."""
    return time_model(model, workload.prompt_tokens, workload.context_tokens, repeats)


def measure_samples(
    models: Iterable[tuple[str, nn.Module, Workload]],
    repeats: int = 5,
    progress: Callable[[str], None] = lambda _: None,
    timer: Timer = time_eager,
    measured: Callable[[Sample], None] = lambda _: None,
) -> list[Sample]:
    """Each model's profile (taken before timing) and its measured prefill and decode under ``timer``."""
    samples = []
    for label, model, workload in models:
        progress(label)
        profile = profile_model(model)
        samples.append(Sample(label, profile, workload, timer(model, workload, repeats)))
        measured(samples[-1])
    return samples


def host_target(memory_gb: float | None = None) -> HardwareTarget:
    """The host's figures from micro-benchmarks, before fitting (fractions at 1)."""
    bandwidth = copy_bandwidth_gbps()
    peak = max(gemm_gflops(512, 1536, 576), gemm_gflops(256, 576, 576), gemm_gflops(1024, 576, 1536))
    threads = torch.get_num_threads()
    return HardwareTarget(
        name="host",
        description=f"this machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
        runtime=f"torch {torch.__version__} eager, fp32, {threads} threads",
        memory_bandwidth_gbps=round(bandwidth, 2),
        sustained_bandwidth_fraction=1.0,
        peak_gflops={"fp32": round(peak, 1), "fp16": round(peak, 1), "int8": round(peak, 1), "int4": round(peak, 1)},
        compute_efficiency=1.0,
        memory_capacity_gb=memory_gb or physical_memory_gb(),
        per_op_overhead_us=round(op_overhead_us(), 2),
        power_w=15.0,
        runtime_bits=32,
        uncertainty=0.3,
    )


def physical_memory_gb() -> float:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1)
    except (ValueError, OSError):
        return 8.0


def predict_sample(target: HardwareTarget, sample: Sample) -> ModelTiming:
    metrics = RooflineModel(target).predict(sample.profile, sample.workload)
    return ModelTiming(metrics["prefill_ms"], metrics["decode_ms_per_token"])


def fit(target: HardwareTarget, samples: list[Sample]) -> HardwareTarget:
    """The target with the three efficiency factors that best explain the measured samples."""

    def with_factors(x: np.ndarray) -> HardwareTarget:
        return target.model_copy(
            update={
                "sustained_bandwidth_fraction": float(x[0]),
                "compute_efficiency": float(x[1]),
                "per_op_overhead_us": float(x[2]),
            }
        )

    def residuals(x: np.ndarray) -> np.ndarray:
        out = []
        for sample in samples:
            predicted = predict_sample(with_factors(x), sample)
            out.append(math.log(predicted.prefill_ms / sample.measured.prefill_ms))
            out.append(math.log(predicted.decode_ms_per_token / sample.measured.decode_ms_per_token))
        return np.array(out)

    start = np.array([0.7, 0.7, max(target.per_op_overhead_us, 1.0)])
    result = least_squares(residuals, start, bounds=([0.01, 0.01, 0.0], [1.0, 1.0, 10_000.0]))
    return with_factors(result.x)


@dataclass(frozen=True)
class Errors:
    """Absolute percentage errors of predictions against measurements."""

    prefill_mape: float
    decode_mape: float
    prefill_within_10: float
    decode_within_10: float


def errors(target: HardwareTarget, samples: list[Sample]) -> Errors:
    pre, dec = [], []
    for sample in samples:
        predicted = predict_sample(target, sample)
        pre.append(abs(predicted.prefill_ms / sample.measured.prefill_ms - 1))
        dec.append(abs(predicted.decode_ms_per_token / sample.measured.decode_ms_per_token - 1))
    return Errors(
        100 * float(np.mean(pre)),
        100 * float(np.mean(dec)),
        100 * float(np.mean([e <= 0.10 for e in pre])),
        100 * float(np.mean([e <= 0.10 for e in dec])),
    )


def target_yaml(target: HardwareTarget, fitted_on: int, err: Errors) -> str:
    """The host target as YAML, each number with where it came from."""
    today = date.today().isoformat()
    p = target.peak_gflops
    return f"""# Generated by `autocompress hardware calibrate` on {today}; every number measured on this machine.
name: host
description: {json.dumps(target.description)}
runtime: {json.dumps(target.runtime)}
# measured: median of 5 copies of a 256 MiB fp32 tensor (2 bytes moved per byte copied)
memory_bandwidth_gbps: {target.memory_bandwidth_gbps}
# fitted: least squares over {fitted_on} measured models (log of predicted / measured prefill and decode time)
sustained_bandwidth_fraction: {target.sustained_bandwidth_fraction:.4f}
peak_gflops:
  # measured: best of three prefill-shaped fp32 GEMMs (median of 5 runs each); the runtime computes in fp32
  fp32: {p.fp32}
  fp16: {p.fp16}  # same: runtime_bits 32
  int8: {p.int8}  # same: runtime_bits 32
  int4: {p.int4}  # same: runtime_bits 32
# fitted, as sustained_bandwidth_fraction
compute_efficiency: {target.compute_efficiency:.4f}
# measured: physical memory reported by the OS
memory_capacity_gb: {target.memory_capacity_gb}
# fitted, as sustained_bandwidth_fraction (micro-benchmark of one tiny eager op: see the calibration log)
per_op_overhead_us: {target.per_op_overhead_us:.3f}
# estimate: not measured (no power meter); a typical 2-core server slice
power_w: {target.power_w}
features: []  # torch eager on CPU: fake-quantized weights stay fp32, no sparse kernels
runtime_bits: 32
# measured after fitting on the same samples: decode MAPE {err.decode_mape:.1f} %, prefill MAPE {err.prefill_mape:.1f} %
uncertainty: {target.uncertainty:.3f}
"""
