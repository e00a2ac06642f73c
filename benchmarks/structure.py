"""Sparsity, width/depth pruning and early exit on SmolLM2-135M, measured on WikiText-2 (raw, test).

    .venv/bin/python benchmarks/structure.py [--section sparsity width depth exit] [--seq-len 256]

Calibration and evaluation are disjoint blocks of ../shared/data/wikitext-2-raw/wiki.test.raw.
Prints one table per section and merges the rows into benchmarks/results/structure.json.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from autocompress.hardware.profile import profile_model
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import load_target
from autocompress.pipeline import apply_recipe, measure_accuracy, open_session, predict_cost
from autocompress.recipe import Recipe, TextSpec

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"
RESULTS = ROOT / "benchmarks" / "results" / "structure.json"
TARGETS = ["raspberry-pi-5", "snapdragon-8-gen3-cpu"]
MODEL = "smollm2-135m"


def sparsity_rows() -> list[tuple[str, list[dict]]]:
    rows = [("dense", [])]
    for method in ("magnitude", "wanda", "sparsegpt"):
        rows.append((f"{method} 50%", [{"technique": "sparsify", "params": {"method": method, "sparsity": 0.5}}]))
        rows.append((f"{method} 2:4", [{"technique": "sparsify", "params": {"method": method, "pattern": "2:4"}}]))
    return rows


def width_rows() -> list[tuple[str, list[dict]]]:
    rows = []
    for ratio in (0.25, 0.5):
        rows.append((f"ffn {ratio:.0%}", [{"technique": "prune_width", "params": {"ffn_ratio": ratio}}]))
        rows.append((f"heads {ratio:.0%}", [{"technique": "prune_width", "params": {"heads_ratio": ratio}}]))
        rows.append(
            (
                f"ffn+heads {ratio:.0%}",
                [{"technique": "prune_width", "params": {"ffn_ratio": ratio, "heads_ratio": ratio}}],
            )
        )
    return rows


def depth_rows() -> list[tuple[str, list[dict]]]:
    return [(f"drop {n}", [{"technique": "prune_depth", "params": {"drop_layers": n}}]) for n in (2, 4, 8)]


SECTIONS = {"sparsity": sparsity_rows, "width": width_rows, "depth": depth_rows}


def exit_rows() -> list[tuple[str, list[dict]]]:
    return [("no exit", [])] + [
        (f"exit > {t}", [{"technique": "early_exit", "params": {"threshold": t}}]) for t in (0.9, 0.7, 0.5)
    ]


SECTIONS["exit"] = exit_rows


@torch.no_grad()
def tokens_per_s(model, prompt: torch.Tensor, new_tokens: int = 48, repeats: int = 3) -> float:
    """Greedy cached generation on the host (torch runtime, batch 1): median tokens/s over repeats."""
    model.generation_config.eos_token_id = None
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, pad_token_id=0)
        rates.append(new_tokens / (time.perf_counter() - start))
    return sorted(rates)[len(rates) // 2]


def measure(session, name: str, steps: list[dict], workload: Workload, targets, timed: bool = False) -> dict:
    recipe = Recipe(model=MODEL, seed=0, calibration=session.calibration, steps=steps)
    start = time.perf_counter()
    model = apply_recipe(session, recipe)
    seconds = time.perf_counter() - start
    metrics = measure_accuracy(model, session, ["kl"]) | predict_cost(model, targets, workload)
    cfg = model.config
    row = {
        "name": name,
        "recipe": recipe.summary(),
        "compress_s": round(seconds, 1),
        "params_M": profile_model(model).num_parameters / 1e6,
        "layers": cfg.num_hidden_layers,
        "heads": cfg.num_attention_heads,
        "kv_heads": cfg.num_key_value_heads,
        "ffn": cfg.intermediate_size,
        **metrics,
    }
    if timed:
        row["host_tokens_per_s"] = tokens_per_s(model, session.ctx.evaluation[:1, :64])
    print(
        f"{name:<18} kl {row['kl']:.4f}  ppl {row['perplexity']:8.2f}  params {row['params_M']:6.1f}M  "
        f"L{row['layers']} H{row['heads']}/{row['kv_heads']} ffn {row['ffn']}  "
        + "  ".join(f"{t} {row[f'{t}.decode_ms_per_token']:.2f} ms" for t in TARGETS)
        + (f"  exit {row['avg_exit_layer']:.2f}" if "avg_exit_layer" in row else "")
        + (f"  host {row['host_tokens_per_s']:.1f} tok/s" if timed else "")
        + f"  ({seconds:.0f} s)",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--section", nargs="+", default=list(SECTIONS))
    parser.add_argument("--seq-len", type=int, default=256)
    parser.add_argument("--calibration-samples", type=int, default=32)
    parser.add_argument("--eval-samples", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = TextSpec(
        source=str(WIKITEXT),
        seq_len=args.seq_len,
        calibration_samples=args.calibration_samples,
        eval_samples=args.eval_samples,
    )
    session = open_session(MODEL, spec, seed=0)
    targets = [load_target(t) for t in TARGETS]
    workload = Workload()
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    for section in args.section:
        print(
            f"\n== {section} (seq_len {args.seq_len}, {args.calibration_samples} calibration / "
            f"{args.eval_samples} eval blocks)"
        )
        rows = [
            measure(session, name, steps, workload, targets, timed=section == "exit")
            for name, steps in SECTIONS[section]()
        ]
        results[section] = {
            "date": time.strftime("%Y-%m-%d"),
            "seq_len": args.seq_len,
            "calibration_samples": args.calibration_samples,
            "eval_samples": args.eval_samples,
            "rows": rows,
        }
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
