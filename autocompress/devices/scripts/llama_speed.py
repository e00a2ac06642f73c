"""Runs ON the device with the device's python: what llama-cpp-python is there, and how fast it runs a GGUF.

Standard library and llama_cpp only; Python 3.7+. It is copied to the device and run there.

    python3 llama_speed.py info
    python3 llama_speed.py bench MODEL -p 128 -n 32 -r 3 -t 4

Both print one JSON object. ``bench`` measures as llama-bench does: prefill is ``-p`` random tokens in one
batch from an empty context, decode is ``-n`` single tokens from an empty context, each after one
untimed warm-up run, ``-r`` timed repetitions, CPU only.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import time


def info() -> dict:
    out = {"python": platform.python_version(), "llama_cpp": None, "system_info": None, "error": None}
    try:
        import llama_cpp
    except Exception as err:  # not installed, or its shared library does not load here
        out["error"] = "%s: %s" % (type(err).__name__, err)
        return out
    out["llama_cpp"] = str(getattr(llama_cpp, "__version__", "unknown"))
    try:
        raw = llama_cpp.llama_print_system_info()
        out["system_info"] = raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)
    except Exception:
        pass
    return out


def bench(model: str, n_prompt: int, n_gen: int, repeats: int, threads: int) -> dict:
    import llama_cpp

    llm = llama_cpp.Llama(
        model_path=model,
        n_ctx=max(n_prompt, n_gen) + 8,
        n_batch=max(n_prompt, n_gen, 8),
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        verbose=False,
        seed=0,
    )
    rnd = random.Random(0)
    vocab = llm.n_vocab()
    prompt = [rnd.randrange(vocab) for _ in range(n_prompt)]
    steps = [rnd.randrange(vocab) for _ in range(n_gen)]

    def prefill() -> float:
        llm.reset()  # the next eval drops the KV cache from position 0
        start = time.perf_counter()
        llm.eval(prompt)
        return n_prompt / (time.perf_counter() - start)

    def decode() -> float:
        llm.reset()
        start = time.perf_counter()
        for token in steps:
            llm.eval([token])
        return n_gen / (time.perf_counter() - start)

    out = {
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        "threads": threads,
        "prefill_ts": [],
        "decode_ts": [],
        "llama_cpp": str(getattr(llama_cpp, "__version__", "unknown")),
    }
    for key, phase, n in (("prefill_ts", prefill, n_prompt), ("decode_ts", decode, n_gen)):
        if n > 0:
            phase()  # warm-up
            out[key] = [phase() for _ in range(repeats)]
    return out


def main(argv: list) -> int:
    parser = argparse.ArgumentParser(prog="llama_speed.py")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info")
    b = sub.add_parser("bench")
    b.add_argument("model")
    b.add_argument("-p", "--n-prompt", type=int, default=128)
    b.add_argument("-n", "--n-gen", type=int, default=32)
    b.add_argument("-r", "--repetitions", type=int, default=3)
    b.add_argument("-t", "--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "info":
        print(json.dumps(info()))
        return 0
    try:
        result = bench(args.model, args.n_prompt, args.n_gen, args.repetitions, args.threads)
    except Exception as err:
        print("llama_speed.py: %s: %s" % (type(err).__name__, err), file=sys.stderr)
        return 3
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
