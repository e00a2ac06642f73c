"""Prefill and decode tokens/s of a GGUF on a device: llama-bench if it has one, else llama-cpp-python."""

from __future__ import annotations

import json
from pathlib import Path

from autocompress.devices.base import DeviceRunner
from autocompress.devices.errors import DeviceCommandError
from autocompress.devices.llama_bench import LlamaSpeed, run_llama_bench
from autocompress.devices.probe import DeviceProbe, probe
from autocompress.devices.scripts import LLAMA_SPEED, script


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _python_speed(
    runner: DeviceRunner,
    python: str,
    model: str,
    n_prompt: int,
    n_gen: int,
    repeats: int,
    threads: int,
    timeout: float | None,
) -> LlamaSpeed:
    """The device script ``llama_speed.py bench`` with the device's python and llama-cpp-python."""
    runner.put(script(LLAMA_SPEED), LLAMA_SPEED)
    done = runner.run(
        [
            python,
            LLAMA_SPEED,
            "bench",
            model,
            "-p",
            str(n_prompt),
            "-n",
            str(n_gen),
            "-r",
            str(repeats),
            "-t",
            str(threads),
        ],
        timeout=timeout,
    )
    if not done.ok:
        raise DeviceCommandError(runner.url, f"llama-cpp-python could not run the model: {done.last_error_line()}")
    try:
        out = json.loads(done.stdout.strip().splitlines()[-1])
        prefill, decode = out["prefill_ts"], out["decode_ts"]
        return LlamaSpeed(
            prefill_tokens_per_s=_median(prefill),
            decode_tokens_per_s=_median(decode),
            prefill_samples=prefill,
            decode_samples=decode,
            n_prompt=n_prompt,
            n_gen=n_gen,
            threads=threads,
            build=f"llama-cpp-python {out['llama_cpp']}",
            backend="CPU",
            tool="llama-cpp-python",
        )
    except (json.JSONDecodeError, IndexError, KeyError, TypeError, ValueError) as err:
        raise DeviceCommandError(runner.url, f"{LLAMA_SPEED} printed something unexpected ({err})") from None


def measure_speed(
    runner: DeviceRunner,
    gguf: Path,
    n_prompt: int = 128,
    n_gen: int = 32,
    repeats: int = 3,
    threads: int | None = None,
    llama_bench: str | None = None,
    python: str = "python3",
    device: DeviceProbe | None = None,
    timeout: float | None = None,
) -> LlamaSpeed:
    """Copy ``gguf`` to the entered ``runner`` and measure it; ``threads`` defaults to the device's cores.

    llama-bench (``llama_bench`` or on PATH) reports the mean over repetitions, as it does itself;
    llama-cpp-python the median. A device with neither is a :class:`DeviceCommandError` saying what to install.
    """
    device = device or probe(runner, llama_bench=llama_bench, python=python)
    threads = threads or device.cores
    if device.runtime is None:
        raise DeviceCommandError(
            runner.url,
            "no llama.cpp on the device: put llama-bench on its PATH (or pass "
            f"--llama-bench PATH), or pip install llama-cpp-python for {python}",
        )
    remote = runner.put(gguf, "model.gguf")
    if device.llama_bench:
        return run_llama_bench(runner, device.llama_bench, remote, n_prompt, n_gen, repeats, threads, timeout)
    return _python_speed(runner, device.python_path or python, remote, n_prompt, n_gen, repeats, threads, timeout)
