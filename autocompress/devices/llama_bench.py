"""llama.cpp's ``llama-bench -o json`` on a device, read into prefill and decode tokens/s.

``-o json`` prints a list with one object per test: a prompt-processing test has ``n_prompt > 0`` and
``n_gen == 0``, a generation test the reverse; ``avg_ts`` is the mean tokens/s over the repetitions
(``samples_ts``). Build and backend come from ``build_commit``/``build_number`` and ``backends`` (older
builds have one boolean per backend instead, e.g. ``"cuda": true``).
"""

from __future__ import annotations

import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autocompress.devices.base import DeviceRunner
from autocompress.devices.errors import LlamaBenchError

# backends older llama-bench builds report as one boolean field each
LEGACY_BACKENDS = {
    "cuda": "CUDA",
    "vulkan": "Vulkan",
    "kompute": "Kompute",
    "metal": "Metal",
    "sycl": "SYCL",
    "rpc": "RPC",
    "opencl": "OpenCL",
    "gpu_blas": "GPU BLAS",
    "blas": "BLAS",
}


class LlamaSpeed(BaseModel):
    """Prefill and decode speed of one GGUF on one device, and what measured it."""

    prefill_tokens_per_s: float = Field(gt=0)
    decode_tokens_per_s: float = Field(gt=0)
    prefill_samples: list[float] = []
    decode_samples: list[float] = []
    n_prompt: int
    n_gen: int
    threads: int
    build: str  # llama-bench: "<commit> (<build number>)"; else "llama-cpp-python <version>"
    backend: str  # "CPU", "CUDA", "Metal,BLAS", ...
    tool: Literal["llama-bench", "llama-cpp-python"]
    cpu_info: str | None = None


class BenchRecord(BaseModel):
    """The fields of one ``llama-bench -o json`` object that are read (others are ignored)."""

    model_config = ConfigDict(extra="allow")
    build_commit: str
    build_number: int | None = None
    cpu_info: str | None = None
    backends: str | None = None
    n_threads: int
    n_prompt: int = Field(ge=0)
    n_gen: int = Field(ge=0)
    n_depth: int = 0
    avg_ts: float = Field(gt=0)
    samples_ts: list[float] = []

    def backend(self) -> str:
        if self.backends:
            return self.backends
        legacy = [name for key, name in LEGACY_BACKENDS.items() if (self.model_extra or {}).get(key) is True]
        return ",".join(legacy) or "CPU"


def parse_llama_bench(text: str, n_prompt: int, n_gen: int, device: str = "llama-bench") -> LlamaSpeed:
    """The prompt-processing test of ``n_prompt`` tokens and the generation test of ``n_gen`` tokens in
    llama-bench's JSON; anything else is a one-line :class:`LlamaBenchError`."""

    def bad(problem: str) -> LlamaBenchError:
        return LlamaBenchError(device, f"llama-bench output is not what `-o json` writes: {problem}")

    start, end = text.find("["), text.rfind("]")
    if start < 0 or end < start:
        raise bad(f"no JSON list in {len(text)} characters of output")
    try:
        raw = json.loads(text[start : end + 1])
    except json.JSONDecodeError as err:
        raise bad(f"invalid JSON ({err.msg} at character {err.pos})") from None
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise bad("expected a list of objects")
    records = []
    for i, item in enumerate(raw):
        try:
            records.append(BenchRecord.model_validate(item))
        except ValidationError as err:
            first = err.errors()[0]
            raise bad(f"object {i}, {'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    def find(prompt: int, gen: int) -> BenchRecord:
        found = [r for r in records if (r.n_prompt, r.n_gen, r.n_depth) == (prompt, gen, 0)]
        if not found:
            raise bad(f"no test with n_prompt={prompt}, n_gen={gen} among {len(records)}")
        return found[0]

    pp, tg = find(n_prompt, 0), find(0, n_gen)
    return LlamaSpeed(
        prefill_tokens_per_s=pp.avg_ts,
        decode_tokens_per_s=tg.avg_ts,
        prefill_samples=pp.samples_ts,
        decode_samples=tg.samples_ts,
        n_prompt=n_prompt,
        n_gen=n_gen,
        threads=pp.n_threads,
        build=f"{pp.build_commit}" + (f" ({pp.build_number})" if pp.build_number is not None else ""),
        backend=pp.backend(),
        tool="llama-bench",
        cpu_info=pp.cpu_info,
    )


def run_llama_bench(
    runner: DeviceRunner,
    exe: str,
    model: str,
    n_prompt: int,
    n_gen: int,
    repeats: int,
    threads: int,
    timeout: float | None = None,
) -> LlamaSpeed:
    """``exe -m model -p N -n N -r R -t T -o json`` on the device (``model``: a path there)."""
    if n_prompt <= 0 or n_gen <= 0 or repeats <= 0 or threads <= 0:
        raise ValueError("n_prompt, n_gen, repeats and threads must be positive")
    done = runner.run(
        [exe, "-m", model, "-p", str(n_prompt), "-n", str(n_gen), "-r", str(repeats), "-t", str(threads), "-o", "json"],
        timeout=timeout,
    )
    if not done.ok:
        raise LlamaBenchError(runner.url, f"llama-bench failed ({done.last_error_line()})")
    return parse_llama_bench(done.stdout, n_prompt, n_gen, runner.url)
