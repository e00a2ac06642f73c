"""GGUF exports of SmolLM2-135M run by llama.cpp on this host, side by side in one run.

    .venv/bin/python benchmarks/export.py [--eval-samples 8] [--seq-len 256] [--repeats 5] [--speed-only]

1. Our GPTQ and AWQ on the GGUF grid (``grid: gguf``, w4 g32), exported losslessly as Q4_0, against
   llama.cpp's own quantizer (``llama_model_quantize`` from an F32 GGUF of the same base) at Q4_0 and
   Q4_K_M: KL to the base model (torch fp32 logits vs llama.cpp's, full vocabulary, held-out
   WikiText-2 blocks), top-1 agreement, file size, decode and prefill tokens/s. Every GGUF stores the
   tied embedding as Q8_0 (llama.cpp's choice for it), so Q4_0 files have the same size.
2. Host decode tokens/s of fp32 torch and of our int8 (Q8_0) and int4 (Q4_0) GGUFs against the bandwidth
   roofline bound: (bytes read per token) / (sustained copy bandwidth), and the ratio to it.

Speeds are measured twice: once per file as it is made, and then in an interleaved pass (every file,
then fp32 torch and the copy bandwidth, round after round; the median of ``--speed-rounds``), which is
the figure reported: on a shared machine the load then falls on every row alike. ``--speed-only``
repeats just that pass over the files of an earlier run. Needs the [llamacpp] extra.
Data: ../shared/data (or $AUTOCOMPRESS_DATA). Writes benchmarks/results/export.json.
The machine is shared and noisy: compare rows of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

from autocompress.cache import cache_root
from autocompress.export.deploy import source_gguf
from autocompress.export.gguf_export import model_bytes_per_token, write_gguf
from autocompress.export.runtime import (
    agreement,
    default_threads,
    gguf_logits,
    llama_quantize,
    measure_speed,
    open_gguf,
    torch_logits,
)
from autocompress.hosts.measure import copy_bandwidth_gbps, time_model
from autocompress.pipeline import apply_recipe, open_session
from autocompress.recipe import Recipe, TextSpec

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AUTOCOMPRESS_DATA", ROOT.parent / "shared" / "data"))


def quant(method: str, bits: int) -> dict:
    return {"technique": "quantize", "params": {"method": method, "bits": bits, "group_size": 32, "grid": "gguf"}}


OURS = {
    "ours GPTQ Q4_0": quant("gptq", 4),
    "ours AWQ Q4_0": quant("awq", 4),
    "ours RTN Q4_0": quant("rtn", 4),
    "ours RTN Q8_0": quant("rtn", 8),
}
LLAMA = {"llama.cpp Q4_0": ("Q4_0", "Q8_0"), "llama.cpp Q4_K_M": ("Q4_K_M", None)}
FILES = {
    "base F32 GGUF": "base-f32.gguf",
    **{label: f"{label.replace(' ', '-')}.gguf" for label in OURS},
    **{label: f"llamacpp-{ftype}.gguf" for label, (ftype, _) in LLAMA.items()},
}


def accuracy_pass(args, work: Path, threads: int) -> dict[str, dict]:
    """Quantize, export and run every GGUF: KL/top-1 to the base, size, first speed figures."""
    spec = TextSpec(
        source=str(DATA / "wikitext-2-raw"),
        seq_len=args.seq_len,
        calibration_samples=args.calibration_samples,
        eval_samples=args.eval_samples,
    )
    session = open_session("smollm2-135m", spec, 0)
    base, tokenizer = session.base.model, session.base.tokenizer
    blocks = session.ctx.evaluation
    base_logits = torch_logits(base, blocks)
    tokenizer_source = source_gguf("smollm2-135m")
    rows: dict[str, dict] = {}

    def run_gguf(label: str, path: Path, torch_model=None) -> None:
        llm = open_gguf(path, args.seq_len, logits_all=True, threads=threads)
        agree = agreement(base_logits, gguf_logits(llm, blocks))
        del llm
        speed = measure_speed(
            path, args.prompt_tokens, args.decode_tokens, args.repeats, threads=threads, vocab=base.config.vocab_size
        )
        row = {
            "kl_to_base": agree.kl,
            "top1_to_base": agree.top1_agreement,
            "file_mb": path.stat().st_size / 1e6,
            "decode_tokens_per_s": speed.decode_tokens_per_s,
            "prefill_tokens_per_s": speed.prefill_tokens_per_s,
            "bytes_per_token": model_bytes_per_token(path),
            "eval_tokens": blocks.numel(),
        }
        if torch_model is not None:  # the simulated model's KL, and how far llama.cpp's run is from it
            compressed = torch_logits(torch_model, blocks)
            row["torch_kl_to_base"] = agreement(base_logits, compressed).kl
            row["kl_llamacpp_vs_torch"] = agreement(
                compressed, gguf_logits(open_gguf(path, args.seq_len, logits_all=True, threads=threads), blocks)
            ).kl
        rows[label] = row
        print(
            f"{label:20s} KL {row['kl_to_base']:.4f}  top1 {row['top1_to_base']:.3f}  {row['file_mb']:6.1f} MB  "
            f"decode {row['decode_tokens_per_s']:6.1f} tok/s  prefill {row['prefill_tokens_per_s']:7.1f} tok/s",
            flush=True,
        )

    write_gguf(base, tokenizer, work / FILES["base F32 GGUF"], float_type="F32", source_gguf=tokenizer_source)
    run_gguf("base F32 GGUF", work / FILES["base F32 GGUF"])
    for label, step in OURS.items():
        start = time.perf_counter()
        model = apply_recipe(session, Recipe(model="smollm2-135m", calibration=spec, steps=[step]))
        report = write_gguf(model, tokenizer, work / FILES[label], embedding_type="Q8_0", source_gguf=tokenizer_source)
        elapsed = time.perf_counter() - start
        run_gguf(label, work / FILES[label], model)
        rows[label].update(lossless=report.lossless, quantize_and_export_s=elapsed)
        del model
    for label, (ftype, embd) in LLAMA.items():
        run_gguf(label, llama_quantize(work / FILES["base F32 GGUF"], work / FILES[label], ftype, embd))
    return rows


def speed_pass(args, work: Path, threads: int, rows: dict[str, dict]) -> dict[str, dict]:
    """Speed again, interleaved: file after file, round after round, the median per file, so that the
    load of a shared machine falls on every row alike; then fp32 torch and the bandwidth roofline."""
    from autocompress.models.loading import load_model

    base = load_model("smollm2-135m").model
    samples: dict[str, list] = {label: [] for label in [*FILES, "fp32 torch", "bandwidth"]}
    for _ in range(args.speed_rounds):
        for label in FILES:
            samples[label].append(
                measure_speed(
                    work / FILES[label],
                    args.prompt_tokens,
                    args.decode_tokens,
                    args.repeats,
                    threads=threads,
                    vocab=base.config.vocab_size,
                )
            )
        samples["fp32 torch"].append(
            time_model(
                base, args.prompt_tokens, args.prompt_tokens, repeats=args.repeats, decode_steps=args.decode_tokens
            ).decode_ms_per_token
        )
        samples["bandwidth"].append(copy_bandwidth_gbps())
    print("\ninterleaved speed pass (median of rounds):")
    for label in FILES:
        rows[label]["decode_tokens_per_s"] = statistics.median(s.decode_tokens_per_s for s in samples[label])
        rows[label]["prefill_tokens_per_s"] = statistics.median(s.prefill_tokens_per_s for s in samples[label])
        print(
            f"{label:20s} decode {rows[label]['decode_tokens_per_s']:6.1f} tok/s  "
            f"prefill {rows[label]['prefill_tokens_per_s']:7.1f} tok/s"
        )
    bandwidth = statistics.median(samples["bandwidth"])
    fp32_bytes = sum(p.numel() * p.element_size() for p in base.parameters())  # tied head: read once per token
    roofline = {
        "fp32 torch": {
            "decode_tokens_per_s": 1e3 / statistics.median(samples["fp32 torch"]),
            "bytes_per_token": fp32_bytes,
        }
    }
    for label in ("ours RTN Q8_0", "ours GPTQ Q4_0", "base F32 GGUF"):
        roofline[f"{label} (llama.cpp)"] = {k: rows[label][k] for k in ("decode_tokens_per_s", "bytes_per_token")}
    for row in roofline.values():
        row["bound_tokens_per_s"] = bandwidth * 1e9 / row["bytes_per_token"]
        row["ratio_to_bound"] = row["decode_tokens_per_s"] / row["bound_tokens_per_s"]
    print(f"\nsustained copy bandwidth {bandwidth:.1f} GB/s, {threads} threads")
    for label, row in roofline.items():
        print(
            f"{label:32s} {row['decode_tokens_per_s']:6.1f} tok/s  bound {row['bound_tokens_per_s']:6.1f}  "
            f"ratio {row['ratio_to_bound']:.2f}  ({row['bytes_per_token'] / 1e6:.1f} MB/token)"
        )
    return {"bandwidth_gbps": bandwidth, "roofline": roofline}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--eval-samples", type=int, default=8)
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--decode-tokens", type=int, default=32)
    parser.add_argument("--speed-rounds", type=int, default=3, help="rounds of the interleaved speed pass")
    parser.add_argument(
        "--speed-only", action="store_true", help="redo only the speed pass over the files and rows of an earlier run"
    )
    args = parser.parse_args()
    threads = default_threads()
    work = cache_root() / "bench-export"
    work.mkdir(parents=True, exist_ok=True)
    out = ROOT / "benchmarks" / "results" / "export.json"
    if args.speed_only:
        rows = json.loads(out.read_text())["gguf"]
    else:
        rows = accuracy_pass(args, work, threads)
        out.write_text(json.dumps({"gguf": rows}, indent=2))  # kept if the speed pass is cut short
    speed = speed_pass(args, work, threads, rows)
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "command": "python benchmarks/export.py "
                + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if not isinstance(v, bool))
                + (" --speed-only" if args.speed_only else ""),
                "threads": threads,
                "gguf": rows,
                **speed,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
