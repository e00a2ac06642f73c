"""``--runtime llamacpp``: GGUF exports of the samples, timed with llama.cpp on this host (``host-llamacpp``).

A sample's model records the format of its block linears (F16, or 8/4 bits on groups of 32). Its F16
export (autocompress's GGUF writer) is quantized by llama.cpp's own quantizer to Q8_0 and Q4_0 (the
embedding kept F16); a compressed recipe's model is exported as the exporter writes it. Every file is
checked to hold exactly the bytes the profile prices: 8.5 and 4.5 bits per weight (one fp16 scale per
32), an F16 tied embedding; the KV cache is llama.cpp's default F16. Peaks per precision come from
llama.cpp itself (prefill of a probe model in each type); bandwidth from the torch host's copy benchmark.
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
from collections.abc import Callable
from datetime import date
from functools import cached_property
from itertools import chain
from pathlib import Path

from torch import nn

from autocompress.errors import ConfigError
from autocompress.hardware.profile import profile_model
from autocompress.hardware.roofline import RooflineModel, Workload
from autocompress.hardware.target import HardwareTarget, Precision
from autocompress.hosts import suites
from autocompress.hosts.base import HOST_RUNTIMES, Cases, HostRuntime, Suite
from autocompress.hosts.calibrate import Errors, physical_memory_gb
from autocompress.hosts.measure import ModelTiming, copy_bandwidth_gbps
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import weight_format, weight_grid
from autocompress.models.loading import DEFAULT_MODEL, resolve_checkpoint

# the arithmetic each GGUF format of the suites runs at (F16 weights: fp16 x fp32 dot products;
# Q8_0/Q4_0: activations quantized to Q8_0 blocks, integer dot products)
PRECISIONS: dict[str, Precision] = {"F16": "fp16", "Q8_0": "int8", "Q4_0": "int4"}
FEATURES = ("int8_weights", "int4_weights", "int8_activations")
START_OVERHEAD_US = 5.0  # where the fit of per_op_overhead_us starts (llama.cpp's graph nodes cost µs)
PROBE_REPEATS = 3


def block_type(model: nn.Module) -> str | None:
    """The GGUF type (of :data:`suites.GGUF_FORMATS`) every block linear records, when the embedding and
    the LM head are unquantized and no grid was recorded; else None."""
    adapter = ModelAdapter(model)
    sites = adapter.linear_sites()
    formats = {weight_format(site.module) for site in sites}
    if (
        len(formats) != 1
        or any(weight_grid(site.module) is not None for site in sites)
        or any(weight_format(m).bits < 16 for m in (adapter.input_embedding, adapter.lm_head))
    ):
        return None
    (only,) = formats
    return next((name for name, fmt in suites.GGUF_FORMATS.items() if fmt == only), None)


def check_priced_bytes(model: nn.Module, path: Path) -> None:
    """The roofline must price what the file holds: the profile's weight bytes are the file's matrices."""
    import gguf

    held = sum(int(t.n_bytes) for t in gguf.GGUFReader(str(path)).tensors if len(t.shape) == 2)
    priced = profile_model(model).weight_bytes()
    if abs(priced / held - 1) > 1e-3:
        raise RuntimeError(
            f"{path.name}: the file holds {held} bytes of weight matrices but the profile prices "
            f"{priced:.0f}; its formats do not map onto GGUF block types"
        )


@HOST_RUNTIMES.decorator()
class LlamaCpp(HostRuntime):
    """llama.cpp CPU through llama-cpp-python; weights stored at their quantized width."""

    name = "llamacpp"
    target_name = "host-llamacpp"
    decode_tokens = 16  # per repeat, after a context filled once
    threads: int | None = None  # default: every core this process may run on

    def __init__(self, model_ref: str = DEFAULT_MODEL):
        from autocompress.export.runtime import llama_cpp_module

        super().__init__(model_ref)
        self._float: tuple[nn.Module, Path] | None = None  # the last F16 sample and its file
        self._float_dir: tempfile.TemporaryDirectory | None = None
        try:
            self.llama_cpp = llama_cpp_module()
        except ConfigError as err:
            raise ConfigError("--runtime", f"llamacpp: {err.problem}") from None

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(resolve_checkpoint(self.model_ref))

    def export(self, model: nn.Module, path: Path) -> Path:
        """``model`` as GGUF by the exporter: recorded formats -> block types, unquantized weights -> F16."""
        from autocompress.export.deploy import source_gguf
        from autocompress.export.gguf_export import write_gguf

        write_gguf(model, self.tokenizer, path, float_type="F16", source_gguf=source_gguf(self.model_ref))
        return path

    def gguf(self, model: nn.Module, folder: Path) -> Path:
        """The file llama.cpp runs for ``model``. A model whose block linears are all Q8_0 or Q4_0 (nothing
        else quantized) is quantized by llama.cpp's own quantizer from the F16 export of the same model
        when that was the previous sample (the suites yield F16 first); anything else is exported."""
        from autocompress.export.runtime import llama_quantize

        kind = block_type(model)
        if kind is not None and kind != "F16" and self._float is not None and self._float[0] is model:
            return llama_quantize(
                self._float[1], folder / f"{kind}.gguf", kind, token_embedding_type="F16", threads=self.threads
            )
        if kind == "F16":  # kept for the quantized variants; replacing the folder removes the last one
            self._float_dir = tempfile.TemporaryDirectory(prefix="autocompress-gguf-")
            self._float = (model, self.export(model, Path(self._float_dir.name) / "F16.gguf"))
            return self._float[1]
        return self.export(model, folder / "model.gguf")

    def time(self, model: nn.Module, workload: Workload, repeats: int) -> ModelTiming:
        from autocompress.export.runtime import time_gguf

        with tempfile.TemporaryDirectory(prefix="autocompress-gguf-") as folder:
            path = self.gguf(model, Path(folder))
            check_priced_bytes(model, path)
            prefill, decode = time_gguf(
                path,
                workload.prompt_tokens,
                workload.context_tokens,
                self.decode_tokens,
                repeats,
                threads=self.threads,
                vocab=model.config.vocab_size,
            )
        return ModelTiming(prefill, decode)

    def probe_gflops(self, counting: HardwareTarget, progress: Callable[[str], None]) -> dict[str, float]:
        """GFLOP/s llama.cpp reaches in a long prefill with its linears in each GGUF format: the
        roofline's FLOPs of that pass (as ``counting`` counts them) over the median measured time."""
        probe = suites.LLAMACPP_PROBE
        out = {}
        for (label, model, workload), name in zip(
            suites.format_models((probe,), suites.GGUF_FORMATS, self.model_ref), suites.GGUF_FORMATS
        ):
            progress(f"llama.cpp throughput: {label} (prompt {workload.prompt_tokens})")
            flops = RooflineModel(counting).phase_cost(profile_model(model), workload, "prefill").flops
            out[name] = flops / (self.time(model, workload, PROBE_REPEATS).prefill_ms * 1e-3) / 1e9
        return out

    def initial_target(self, progress: Callable[[str], None] = lambda _: None) -> HardwareTarget:
        from autocompress.export.runtime import default_threads

        progress("micro-benchmark: memory bandwidth")
        threads = self.threads or default_threads()
        counting = HardwareTarget(
            name=self.target_name,
            description=f"this machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
            runtime=f"llama.cpp (llama-cpp-python {self.llama_cpp.__version__}) CPU, {threads} threads, F16 KV cache",
            memory_bandwidth_gbps=round(copy_bandwidth_gbps(), 2),
            sustained_bandwidth_fraction=1.0,
            peak_gflops={"fp32": 1.0, "fp16": 1.0, "int8": 1.0, "int4": 1.0},
            compute_efficiency=1.0,
            memory_capacity_gb=physical_memory_gb(),
            per_op_overhead_us=START_OVERHEAD_US,
            power_w=15.0,
            features=FEATURES,
            runtime_bits=None,
            uncertainty=0.3,
        )
        measured = self.probe_gflops(counting, progress)
        peaks = {PRECISIONS[name]: float(f"{value:.4g}") for name, value in measured.items()}
        peaks["fp32"] = peaks["fp16"]  # no F32 weights are exported or measured
        return counting.model_copy(update={"peak_gflops": counting.peak_gflops.model_copy(update=peaks)})

    def cases(self, suite: Suite) -> Cases:
        if suite == "calibration":
            return suites.format_models(suites.LLAMACPP_CALIBRATION_SHAPES, suites.GGUF_FORMATS, self.model_ref)
        return chain(
            suites.format_models(suites.LLAMACPP_VALIDATION_SHAPES, suites.GGUF_FORMATS, self.model_ref),
            suites.recipe_models(self.model_ref, suites.LLAMACPP_VALIDATION_RECIPES),
        )

    def target_yaml(self, target: HardwareTarget, fitted_on: int, err: Errors) -> str:
        p, probe = target.peak_gflops, suites.LLAMACPP_PROBE
        return f"""# Generated by `autocompress hardware calibrate --runtime llamacpp` on {date.today().isoformat()};
# every number measured on this machine through llama.cpp, on GGUF files of autocompress's exporter.
name: {self.target_name}
description: {json.dumps(target.description)}
runtime: {json.dumps(target.runtime)}
# measured: median of 5 copies of a 256 MiB fp32 tensor (2 bytes moved per byte copied)
memory_bandwidth_gbps: {target.memory_bandwidth_gbps}
# fitted: least squares over {fitted_on} measured GGUF files (F16, Q8_0 and Q4_0 linears; log of predicted /
# measured prefill and decode time)
sustained_bandwidth_fraction: {target.sustained_bandwidth_fraction:.4f}
peak_gflops:
  # measured: llama.cpp prefill of a {probe.prompt_tokens}-token prompt through a {probe.layers}-layer model of the base
  # architecture, its linears in one GGUF type: the roofline's FLOPs of that pass / median of {PROBE_REPEATS} runs
  fp32: {p.fp32}  # same as fp16: the exporter writes no F32 weights, none were measured
  fp16: {p.fp16}  # F16 linears
  int8: {p.int8}  # Q8_0 linears
  int4: {p.int4}  # Q4_0 linears
# fitted, as sustained_bandwidth_fraction (relative to the measured peaks above)
compute_efficiency: {target.compute_efficiency:.4f}
# measured: physical memory reported by the OS
memory_capacity_gb: {target.memory_capacity_gb}
# fitted, as sustained_bandwidth_fraction (llama.cpp graph nodes and thread synchronisation)
per_op_overhead_us: {target.per_op_overhead_us:.3f}
# estimate: not measured (no power meter); a typical 2-core server slice
power_w: {target.power_w}
# llama.cpp CPU: Q8_0 and Q4_0 weights stay at their width (8.5 and 4.5 bits per weight with one fp16 scale per
# 32) and are multiplied with activations quantized to 8-bit blocks; no sparse kernels (zeros are multiplied);
# no kv_int8: the KV cache is llama.cpp's default F16, so a recipe's kv_bits is priced at 16 bits
features: [{", ".join(target.features)}]
# runtime_bits unset: the GGUF file holds every weight at its quantized width
# measured after fitting on the same samples: decode MAPE {err.decode_mape:.1f} %, prefill MAPE {err.prefill_mape:.1f} %
uncertainty: {target.uncertainty:.3f}
"""
