"""What a device has: CPU, cores, memory, OS, Python, and which llama.cpp (llama-bench or llama-cpp-python).

The system part is one POSIX shell script (Linux, Android, macOS); the Python part is the device
script ``llama_speed.py info`` run with the device's own interpreter.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from autocompress.devices.base import DeviceRunner
from autocompress.devices.errors import DeviceCommandError
from autocompress.devices.llama_bench import run_llama_bench
from autocompress.devices.scripts import LLAMA_SPEED, script

# one `key=value` line each; every command may be missing on some system, hence the fallbacks
SYSTEM_PROBE = r"""
v() { printf '%s=%s\n' "$1" "$2"; }
field() { grep -m 1 -E "^($1)[[:space:]]*:" /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^[[:space:]]*//'; }
v arch "$(uname -m)"
v kernel "$(uname -sr)"
v cores "$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN 2>/dev/null || grep -c '^processor' /proc/cpuinfo)"
kb=$(grep '^MemTotal:' /proc/meminfo 2>/dev/null | tr -s ' ' | cut -d' ' -f2)
if [ -n "$kb" ]; then v mem_bytes "$((kb * 1024))"; else v mem_bytes "$(sysctl -n hw.memsize 2>/dev/null)"; fi
m=$(lscpu 2>/dev/null | grep -m 1 '^Model name:' | cut -d: -f2- | sed 's/^[[:space:]]*//')
[ -n "$m" ] || m=$(field 'model name|Hardware|cpu model')
[ -n "$m" ] || m=$(getprop ro.soc.model 2>/dev/null)
[ -n "$m" ] || m=$(sysctl -n machdep.cpu.brand_string 2>/dev/null)
v cpu_model "$m"
b=$(tr -d '\000' < /proc/device-tree/model 2>/dev/null)
[ -n "$b" ] || b=$(getprop ro.product.model 2>/dev/null)
v board "$b"
os=$( (. /etc/os-release && printf '%s' "$PRETTY_NAME") 2>/dev/null)
r=$(getprop ro.build.version.release 2>/dev/null)
[ -n "$os" ] || { [ -n "$r" ] && os="Android $r"; }
[ -n "$os" ] || os=$(sw_vers -productVersion 2>/dev/null | sed 's/^/macOS /')
v os "$os"
v flags "$(field 'flags|Features')"
"""
# CPU features llama.cpp's CPU kernels use, as Linux names them (x86 `flags`, Arm `Features`)
KERNEL_FEATURES = (
    "sse3",
    "ssse3",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "avx_vnni",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimdhp",
    "asimddp",
    "i8mm",
    "bf16",
    "sve",
    "sve2",
    "sme",
)

ALIASES = {"pni": "sse3", "neon": "asimd"}  # x86 Linux calls SSE3 "pni"; 32-bit Arm kernels say "neon"


class DeviceProbe(BaseModel):
    """A device's hardware and software as far as calibration cares."""

    url: str
    probed_at: str  # UTC, ISO 8601
    arch: str
    kernel: str
    os: str
    cpu_model: str
    board: str | None = None
    cores: int
    memory_gb: float
    cpu_features: list[str]  # of KERNEL_FEATURES, as the kernel reports them
    python: str | None = None  # version of the `python` asked for, if it runs
    python_path: str | None = None  # where that interpreter is
    llama_cpp_python: str | None = None  # llama-cpp-python's version, if `import llama_cpp` works there
    llama_cpp_features: list[str] = []  # what that llama.cpp build was compiled with (AVX2 = 1, NEON = 1, ...)
    llama_bench: str | None = None  # its path on the device
    llama_bench_build: str | None = None  # "<commit> (<number>)", when a sample model was run
    llama_bench_backend: str | None = None

    @property
    def runtime(self) -> Literal["llama-bench", "llama-cpp-python"] | None:
        """What :func:`autocompress.devices.speed.measure_speed` will use on this device."""
        if self.llama_bench:
            return "llama-bench"
        return "llama-cpp-python" if self.llama_cpp_python else None

    def same_device(self, other: DeviceProbe) -> bool:
        """The same hardware and software (ignores the URL and the time)."""
        skip = {"url", "probed_at"}
        return self.model_dump(exclude=skip) == other.model_dump(exclude=skip)


def _system(runner: DeviceRunner) -> dict[str, str]:
    done = runner.run(["sh", "-c", SYSTEM_PROBE], timeout=60)
    if not done.ok:
        raise DeviceCommandError(runner.url, f"the system probe failed: {done.last_error_line()}")
    return dict(line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)


def _python(runner: DeviceRunner, python: str) -> dict:
    """``llama_speed.py info`` with the device's ``python`` (and its ``path``): {} when there is none that runs."""
    path = runner.which(python)
    if path is None:
        return {}
    runner.put(script(LLAMA_SPEED), LLAMA_SPEED)
    done = runner.run([path, LLAMA_SPEED, "info"], timeout=120)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1]) | {"path": path} if done.ok else {}
    except (json.JSONDecodeError, IndexError, TypeError):
        return {}


def llama_cpp_features(system_info: str | None) -> list[str]:
    """``AVX2 = 1 | NEON = 1 | ...`` (llama_print_system_info) -> the names set to 1."""
    names = []
    for part in (system_info or "").replace(":", "|").split("|"):
        key, _, value = part.partition("=")
        if value.strip() == "1":
            names.append(key.strip())
    return names


def find_llama_bench(runner: DeviceRunner, llama_bench: str | None) -> str | None:
    """The llama-bench to use: ``llama_bench`` (must be executable on the device) or the one on PATH."""
    if llama_bench is None:
        return runner.which("llama-bench")
    found = runner.which(llama_bench)
    if found is None:
        raise DeviceCommandError(runner.url, f"--llama-bench {llama_bench!r} is not an executable program there")
    return found


def probe(
    runner: DeviceRunner, llama_bench: str | None = None, python: str = "python3", sample_gguf: Path | None = None
) -> DeviceProbe:
    """Probe an entered runner. ``sample_gguf`` (a small model) lets a llama-bench reveal its build and backend."""
    info = _system(runner)
    py = _python(runner, python)
    bench = find_llama_bench(runner, llama_bench)
    build = backend = None
    if bench and sample_gguf is not None:
        remote = runner.put(sample_gguf, "probe-sample.gguf")
        sample = run_llama_bench(runner, bench, remote, 8, 4, 1, 1, timeout=300)
        build, backend = sample.build, sample.backend
    flags = {ALIASES.get(f, f) for f in info.get("flags", "").split()}
    try:
        return DeviceProbe(
            url=runner.url,
            probed_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            arch=info["arch"],
            kernel=info["kernel"],
            os=info.get("os") or "unknown",
            cpu_model=info.get("cpu_model") or "unknown",
            board=info.get("board") or None,
            cores=int(info["cores"]),
            memory_gb=round(int(info["mem_bytes"]) / 1e9, 2),
            cpu_features=[f for f in KERNEL_FEATURES if f in flags],
            python=py.get("python"),
            python_path=py.get("path"),
            llama_cpp_python=py.get("llama_cpp"),
            llama_cpp_features=llama_cpp_features(py.get("system_info")),
            llama_bench=bench,
            llama_bench_build=build,
            llama_bench_backend=backend,
        )
    except (KeyError, ValueError) as err:
        raise DeviceCommandError(runner.url, f"the system probe printed something unexpected ({err})") from None
