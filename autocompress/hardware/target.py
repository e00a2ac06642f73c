"""A hardware target: the few numbers a roofline needs, read from the ``targets`` catalog (``hardware_models/``)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, field_validator

from autocompress.catalog import catalog_names, display_name, looks_like_path, read_yaml, resolve
from autocompress.errors import ConfigError
from autocompress.ggml import KV_CACHE_TYPES, ggml_type
from autocompress.validation import parse

CATALOG = "targets"
Precision = Literal["fp32", "fp16", "int8", "int4"]
Feature = Literal["int8_weights", "int4_weights", "int8_activations", "sparse_2_4", "sparse_unstructured", "kv_int8"]


class PeakGflops(BaseModel, extra="forbid", frozen=True):
    """Peak throughput per precision, in GFLOP/s (GOP/s for integers)."""

    fp32: float = Field(gt=0)
    fp16: float = Field(gt=0)
    int8: float = Field(gt=0)
    int4: float = Field(gt=0)


class HardwareTarget(BaseModel, extra="forbid", frozen=True):
    """One device as a runtime uses it; every number in its YAML file cites a source."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    description: str
    runtime: str
    memory_bandwidth_gbps: float = Field(gt=0, description="theoretical DRAM bandwidth, GB/s")
    sustained_bandwidth_fraction: float = Field(gt=0, le=1, description="share a GEMV reaches")
    peak_gflops: PeakGflops
    compute_efficiency: float = Field(gt=0, le=1, description="share of peak a GEMM reaches")
    memory_capacity_gb: float = Field(gt=0)
    per_op_overhead_us: float = Field(ge=0, description="dispatch/synchronisation cost per op")
    power_w: float = Field(gt=0, description="typical power while decoding, for energy per token")
    features: tuple[Feature, ...] = ()
    runtime_bits: Literal[16, 32] | None = Field(
        None,
        description="the runtime stores and computes every weight and the KV cache at this width, whatever "
        "the quantization (e.g. 32 for torch eager running fake-quantized fp32 weights)",
    )
    weight_types: tuple[str, ...] = Field(
        (), description="llama.cpp weight types the runtime executes (empty: the target prices bits and groups)"
    )
    kv_types: tuple[str, ...] = Field((), description="llama.cpp KV-cache types the runtime offers (f16, q8_0, q4_0)")
    uncertainty: float = Field(
        0.3,
        ge=0,
        le=2,
        description="relative error of predictions (from validation "
        "where measured): the upper bound is value * (1 + this)",
    )

    @field_validator("weight_types")
    @classmethod
    def _known_types(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(ggml_type(name, "weight_types").name for name in value)

    @field_validator("kv_types")
    @classmethod
    def _known_kv(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [v for v in value if v not in KV_CACHE_TYPES]
        if unknown:
            raise ValueError(f"unknown KV-cache type {unknown[0]!r}; allowed: {', '.join(KV_CACHE_TYPES)}")
        return value

    def runs(self, weight_type: str) -> bool:
        """Whether the runtime executes weights of this ggml type (any, when the target names none)."""
        return not self.weight_types or weight_type in self.weight_types

    def has(self, feature: Feature) -> bool:
        return feature in self.features

    @property
    def sustained_bytes_per_s(self) -> float:
        return self.memory_bandwidth_gbps * 1e9 * self.sustained_bandwidth_fraction

    def sustained_flops_per_s(self, precision: Precision) -> float:
        return getattr(self.peak_gflops, precision) * 1e9 * self.compute_efficiency


def _display(path: Path, by_name: bool) -> str:
    return display_name(CATALOG, path) if by_name else str(path)


def load_target(ref: str, field: str = "targets") -> HardwareTarget:
    """Load a target by catalog name (``raspberry-pi-5``) or from a YAML path.

    Errors are one line naming the file and the field, e.g.
    ``hardware_models/x.yaml: memory_bandwidth_gbps: Input should be greater than 0``.
    """
    path = resolve(CATALOG, ref, field)
    by_name = not looks_like_path(ref)
    where = _display(path, by_name)
    try:
        target = parse(HardwareTarget, read_yaml(path, field))
    except ConfigError as err:
        raise ConfigError(f"{where}: {err.field}", err.problem) from None
    if by_name and target.name != ref:
        raise ConfigError(f"{where}: name", f"must equal the file name {ref!r}, got {target.name!r}")
    return target


def list_targets() -> list[str]:
    """Names of the shipped targets."""
    return catalog_names(CATALOG)
