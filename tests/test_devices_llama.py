"""llama-bench's JSON, the device script's speed measurement, and choosing between them (local runner)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autocompress.devices import (
    DeviceCommandError,
    LlamaBenchError,
    measure_speed,
    open_device,
    parse_llama_bench,
    probe,
)

# What `llama-bench -m model.gguf -p 128 -n 32 -r 3 -t 4 -o json` prints: a Raspberry Pi 5 (Cortex-A76,
# 4 threads), CPU backend; written after the fields llama-bench documents, numbers consistent with each other.
PP = {
    "build_commit": "b5c2a1f0",
    "build_number": 5912,
    "cpu_info": "Cortex-A76",
    "gpu_info": "",
    "backends": "CPU",
    "model_filename": "model.gguf",
    "model_type": "llama ?B F16",
    "model_size": 269060096,
    "model_n_params": 134515008,
    "n_batch": 2048,
    "n_ubatch": 512,
    "n_threads": 4,
    "cpu_mask": "0x0",
    "cpu_strict": False,
    "poll": 50,
    "type_k": "f16",
    "type_v": "f16",
    "n_gpu_layers": 99,
    "split_mode": "layer",
    "main_gpu": 0,
    "no_kv_offload": False,
    "flash_attn": False,
    "tensor_split": "0.00",
    "use_mmap": True,
    "embeddings": False,
    "n_prompt": 128,
    "n_gen": 0,
    "n_depth": 0,
    "test_time": "2026-11-30T09:12:41Z",
    "avg_ns": 1046530000,
    "stddev_ns": 9180000,
    "avg_ts": 122.31,
    "stddev_ts": 1.07,
    "samples_ns": [1056190000, 1037890000, 1045510000],
    "samples_ts": [121.19, 123.33, 122.43],
}
TG = {
    **PP,
    "n_prompt": 0,
    "n_gen": 32,
    "test_time": "2026-11-30T09:12:46Z",
    "avg_ns": 1590240000,
    "stddev_ns": 12410000,
    "avg_ts": 20.12,
    "stddev_ts": 0.16,
    "samples_ns": [1576120000, 1594830000, 1599770000],
    "samples_ts": [20.30, 20.06, 20.00],
}
SAMPLE = json.dumps([PP, TG], indent=2)


def test_llama_bench_json_is_read():
    speed = parse_llama_bench(SAMPLE, 128, 32)
    assert (speed.prefill_tokens_per_s, speed.decode_tokens_per_s) == (122.31, 20.12)
    assert (speed.build, speed.backend, speed.threads, speed.tool) == ("b5c2a1f0 (5912)", "CPU", 4, "llama-bench")
    assert speed.decode_samples == [20.30, 20.06, 20.00] and speed.cpu_info == "Cortex-A76"
    # log lines around the JSON (some builds print to stdout) and JSONL-like spacing do not matter
    assert parse_llama_bench("main: loading\n" + SAMPLE + "\n", 128, 32).decode_tokens_per_s == 20.12


def test_older_llama_bench_json_with_one_flag_per_backend():
    old = [
        {k: v for k, v in r.items() if k != "backends"} | {"cuda": False, "metal": True, "blas": True} for r in (PP, TG)
    ]
    assert parse_llama_bench(json.dumps(old), 128, 32).backend == "Metal,BLAS"
    cpu = [{k: v for k, v in r.items() if k not in ("backends", "build_number")} for r in (PP, TG)]
    speed = parse_llama_bench(json.dumps(cpu), 128, 32)
    assert (speed.backend, speed.build) == ("CPU", "b5c2a1f0")


def _without(record: dict, key: str) -> dict:
    return {k: v for k, v in record.items() if k != key}


@pytest.mark.parametrize(
    "text,problem",
    [
        ("", "no JSON list"),
        ("error: failed to load model 'model.gguf'", "no JSON list"),
        (SAMPLE[: len(SAMPLE) // 2] + "]", "invalid JSON"),
        ('["pp", "tg"]', "expected a list of objects"),
        (json.dumps([_without(PP, "avg_ts"), TG]), "object 0, avg_ts: Field required"),
        (json.dumps([PP | {"avg_ts": 0}, TG]), "object 0, avg_ts: Input should be greater than 0"),
        (json.dumps([PP | {"n_threads": "four"}, TG]), "object 0, n_threads: Input should be a valid integer"),
        (json.dumps([PP]), "no test with n_prompt=0, n_gen=32 among 1"),
        (json.dumps([PP | {"n_prompt": 512}, TG]), "no test with n_prompt=128, n_gen=0"),
    ],
)
def test_malformed_llama_bench_output_is_one_clear_error(text, problem):
    with pytest.raises(LlamaBenchError) as err:
        parse_llama_bench(text, 128, 32, device="ssh://pi@pi5")
    message = str(err.value)
    assert message.startswith("ssh://pi@pi5: llama-bench output is not what `-o json` writes: ") and problem in message
    assert "\n" not in message


# --- a fake llama-bench on the device ----------------------------------------------------------------------

FAKE_LLAMA_BENCH = '''#!{python}
"""A fake llama-bench: records its argv, answers like `-o json` (or crashes, or prints a table)."""
import json, sys
args = sys.argv[1:]
with open({log!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
if {mode!r} == "crash":
    sys.exit(print("error: failed to load model '%s'" % args[args.index("-m") + 1], file=sys.stderr) or 1)
if {mode!r} == "garbage":
    sys.exit(print("| model | size | params | backend | threads | test | t/s |") or 0)
value = lambda flag: int(args[args.index(flag) + 1])
records = json.loads({sample!r})
records[0]["n_prompt"], records[1]["n_gen"] = value("-p"), value("-n")
records[0]["n_threads"] = records[1]["n_threads"] = value("-t")
print(json.dumps(records, indent=2))
'''


def write_fake_llama_bench(folder: Path, mode: str = "ok") -> tuple[Path, Callable[[], list[list[str]]]]:
    """A fake ``folder/llama-bench`` (needs no environment, so it also runs through ssh); returns its path and
    a function reading the argv lists it was called with."""
    folder.mkdir(parents=True, exist_ok=True)
    exe, log = folder / "llama-bench", folder / "llama-bench-calls.jsonl"
    exe.write_text(FAKE_LLAMA_BENCH.format(python=sys.executable, log=str(log), mode=mode, sample=SAMPLE))
    exe.chmod(0o755)
    return exe, lambda: [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


@pytest.fixture
def fake_llama_bench(tmp_path, monkeypatch, request):
    """A fake ``llama-bench`` first on PATH (mode: the test's ``mode`` parameter, else "ok")."""
    exe, calls = write_fake_llama_bench(tmp_path / "llama-bin", getattr(request, "param", "ok"))
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")
    return exe, calls


def test_llama_bench_on_path_is_used_and_its_json_read(fake_llama_bench, tmp_path):
    exe, calls = fake_llama_bench
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF fake")
    with open_device("local") as device:
        found = probe(device, python="/nonexistent/python3", sample_gguf=gguf)
        assert (found.llama_bench, found.runtime, found.python) == (str(exe), "llama-bench", None)
        assert (found.llama_bench_build, found.llama_bench_backend) == ("b5c2a1f0 (5912)", "CPU")
        speed = measure_speed(device, gguf, n_prompt=64, n_gen=16, repeats=2, threads=3, device=found)
        scratch = device.scratch
    assert (speed.prefill_tokens_per_s, speed.decode_tokens_per_s, speed.threads, speed.tool) == (
        122.31,
        20.12,
        3,
        "llama-bench",
    )
    sample_call, call = calls()
    assert sample_call == [
        "-m",
        f"{scratch}/probe-sample.gguf",
        "-p",
        "8",
        "-n",
        "4",
        "-r",
        "1",
        "-t",
        "1",
        "-o",
        "json",
    ]
    assert call == ["-m", f"{scratch}/model.gguf", "-p", "64", "-n", "16", "-r", "2", "-t", "3", "-o", "json"]


@pytest.mark.parametrize(
    "fake_llama_bench,problem",
    [
        ("crash", "llama-bench failed (error: failed to load model"),
        ("garbage", "llama-bench output is not what `-o json` writes: no JSON list"),
    ],
    indirect=["fake_llama_bench"],
)
def test_a_failing_llama_bench_is_one_clear_error(fake_llama_bench, tmp_path, problem):
    (tmp_path / "m.gguf").write_bytes(b"GGUF fake")
    with open_device("local") as device:
        with pytest.raises(LlamaBenchError, match=r"^local: " + problem.replace("(", r"\(")):
            measure_speed(device, tmp_path / "m.gguf", python="/nonexistent/python3")


def test_an_explicit_llama_bench_must_exist(tmp_path):
    with open_device("local") as device:
        with pytest.raises(DeviceCommandError, match="--llama-bench '/opt/llama/llama-bench' is not an executable"):
            probe(device, llama_bench="/opt/llama/llama-bench")


def test_a_device_without_llama_cpp_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no llama-bench on it (unless installed system-wide)
    (tmp_path / "m.gguf").write_bytes(b"GGUF fake")
    with open_device("local") as device:
        if device.which("llama-bench"):
            pytest.skip("this machine has a llama-bench in /usr/bin or /bin")
        found = probe(device, python="/nonexistent/python3")
        assert found.runtime is None and found.python is None and found.llama_cpp_python is None
        with pytest.raises(
            DeviceCommandError,
            match="no llama.cpp on the device: put llama-bench on its PATH .*"
            "pip install llama-cpp-python for /nonexistent/python3",
        ):
            measure_speed(device, tmp_path / "m.gguf", python="/nonexistent/python3", device=found)


# --- a real GGUF through llama-cpp-python -------------------------------------------------------------------


def build_small_gguf(path: Path) -> Path:
    """A randomly initialised 4-layer llama (hidden 512, ~13 M parameters) as an F16 GGUF: big enough that
    its timings are stable on a busy 2-core machine, small enough to write in a few seconds."""
    import torch
    from conftest import build_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from autocompress.export.gguf_export import write_gguf

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=320,
        hidden_size=512,
        intermediate_size=1536,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
    )
    write_gguf(LlamaForCausalLM(config).eval(), build_tokenizer(), path, float_type="F16")
    return path


needs_llama_cpp = pytest.mark.skipif(
    __import__("importlib.util").util.find_spec("llama_cpp") is None,
    reason="llama-cpp-python is not installed (the [llamacpp] extra)",
)


@pytest.fixture(scope="module")
def small_gguf(tmp_path_factory) -> Path:
    return build_small_gguf(tmp_path_factory.mktemp("gguf") / "small.gguf")


@needs_llama_cpp
def test_local_probe_and_speed_through_llama_cpp_python(small_gguf):
    with open_device("local") as device:
        found = probe(device, python=sys.executable)
        assert found.runtime == "llama-cpp-python" or found.llama_bench  # a real llama-bench on PATH wins
        assert found.python == ".".join(map(str, sys.version_info[:3])) and found.llama_cpp_python
        assert found.cores >= 1 and found.memory_gb > 0 and found.cpu_model and found.os
        speed = measure_speed(
            device,
            small_gguf,
            n_prompt=64,
            n_gen=16,
            repeats=2,
            python=sys.executable,
            device=found.model_copy(update={"llama_bench": None}),
        )
    assert speed.tool == "llama-cpp-python" and speed.threads == found.cores
    assert speed.prefill_tokens_per_s > 0 and speed.decode_tokens_per_s > 0 and len(speed.decode_samples) == 2
    assert speed.build.startswith("llama-cpp-python ") and speed.backend == "CPU"
