"""Weight quantization on SmolLM2-135M: rtn / gptq / awq vs HQQ, warm vs cold cache, mixed precision.

    .venv/bin/pip install hqq==0.2.8.post1   # the established implementation, benchmark only
    .venv/bin/python benchmarks/quantization.py [--cal 32 --eval 16 --seq 256]

Calibration and evaluation are disjoint 256-token blocks of WikiText-2-raw test; KL is KL(base ||
quantized) per token, both as the product measures it (top-64 coarsened, ``kl``) and over the whole
vocabulary (``kl_full``); perplexity on the evaluation blocks. All formats are asymmetric (as HQQ's).
Prints tables and writes benchmarks/results/quantization.json (``--out``).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"
METHOD_VARIANTS = {
    "rtn": dict(method="rtn"),
    "gptq": dict(method="gptq"),
    "awq": dict(method="awq"),
    "gptq-seq": dict(method="gptq", sequential=True),
    "awq-seq": dict(method="awq", sequential=True),
}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cal", type=int, default=32)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--skip", nargs="*", default=[], help="sections to skip: methods hqq act cache mixed")
    ap.add_argument("--out", default="quantization.json", help="file name under benchmarks/results/")
    ap.add_argument("--act-only", nargs="*", default=None, help="run only activation/KV rows containing these words")
    ap.add_argument(
        "--methods",
        nargs="*",
        default=list(METHOD_VARIANTS),
        choices=list(METHOD_VARIANTS),
        help="weight-method rows per format (-seq: sequential, each block on the quantized blocks' outputs)",
    )
    ap.add_argument(
        "--mixed-method",
        default="rtn",
        choices=["rtn", "gptq", "awq"],
        help="weight method of the mixed-precision rows (each module's 3- and 4-bit results are cached)",
    )
    ap.add_argument(
        "--formats",
        nargs="*",
        default=["4:64", "3:64", "4:32", "3:32"],
        help="bits:group pairs for the method table (128 does not divide SmolLM2's width 576)",
    )
    args = ap.parse_args()
    cache = Path(tempfile.mkdtemp(prefix="ac-quant-bench-"))
    os.environ["AUTOCOMPRESS_CACHE"] = str(cache)  # a cold cache for this run
    from autocompress.evaluators.next_token import NextTokenEvaluator
    from autocompress.pipeline import apply_recipe, open_session
    from autocompress.recipe import Recipe, TextSpec

    spec = TextSpec(source=str(DATA), seq_len=args.seq, calibration_samples=args.cal, eval_samples=args.eval)
    session = open_session("smollm2-135m", spec, seed=0)
    full_kl = _full_vocabulary_kl(session.ctx)

    def evaluate(model: torch.nn.Module) -> dict:
        # "kl" is the product's metric (top-64 coarsened KL, a lower bound); "kl_full" sums the whole vocabulary.
        return {**NextTokenEvaluator().evaluate(model, session.ctx), "kl_full": full_kl(model)}

    def recipe(**params) -> Recipe:
        return Recipe(
            model="smollm2-135m", seed=0, calibration=spec, steps=[{"technique": "quantize", "params": params}]
        )

    results: dict = {
        "setup": {
            "model": "smollm2-135m",
            "data": "wikitext-2-raw test",
            "calibration_blocks": args.cal,
            "eval_blocks": args.eval,
            "seq_len": args.seq,
            "torch_threads": torch.get_num_threads(),
            "date": time.strftime("%Y-%m-%d"),
        }
    }
    results["base"] = evaluate(session.base.model)
    print(f"base: perplexity {results['base']['perplexity']:.2f}")

    out = ROOT / "benchmarks" / "results" / args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    save = lambda: out.write_text(json.dumps(results, indent=2))  # noqa: E731  (after every row: runs are long)
    formats = [tuple(map(int, f.split(":"))) for f in args.formats]
    if "methods" not in args.skip:
        rows = results["methods"] = []
        for bits, group in formats:
            for method in args.methods:
                t0 = time.perf_counter()
                model = apply_recipe(
                    session, recipe(**METHOD_VARIANTS[method], bits=bits, group_size=group, symmetric=False)
                )
                seconds = time.perf_counter() - t0
                rows.append(
                    {"method": method, "bits": bits, "group_size": group, "apply_s": seconds, **evaluate(model)}
                )
                print(_row(rows[-1]), flush=True)
                save()
            if "hqq" not in args.skip:
                t0 = time.perf_counter()
                model = _hqq(session.base.model, bits, group)
                rows.append(
                    {
                        "method": "hqq (hqq 0.2.8)",
                        "bits": bits,
                        "group_size": group,
                        "apply_s": time.perf_counter() - t0,
                        **evaluate(model),
                    }
                )
                print(_row(rows[-1]), flush=True)
                save()

    if "act" not in args.skip:
        rows = results["activations"] = []
        for label, params in [
            ("W8A8 (rtn w8 per-channel, a8 per-token)", dict(bits=8, group_size=0, act_bits=8)),
            ("W8A8 + SmoothQuant 0.5", dict(bits=8, group_size=0, act_bits=8, smoothquant_alpha=0.5)),
            ("W8A8 + SmoothQuant 0.8", dict(bits=8, group_size=0, act_bits=8, smoothquant_alpha=0.8)),
            ("W8A8 + Hadamard rotation", dict(bits=8, group_size=0, act_bits=8, rotate="hadamard")),
            ("W4A8 g64 gptq", dict(method="gptq", bits=4, group_size=64, act_bits=8)),
            ("W4A8 g64 gptq + rotation", dict(method="gptq", bits=4, group_size=64, act_bits=8, rotate="hadamard")),
            ("fp weights, KV 8-bit", dict(bits=16, kv_bits=8)),
            ("fp weights, KV 4-bit", dict(bits=16, kv_bits=4)),
        ]:
            if args.act_only is not None and not any(word in label for word in args.act_only):
                continue
            rows.append({"config": label, **evaluate(apply_recipe(session, recipe(**params)))})
            print(rows[-1], flush=True)
            save()

    if "cache" not in args.skip:
        results["cache"] = _cache_timing(session, recipe, cache)
        print(json.dumps(results["cache"], indent=1), flush=True)
        save()

    if "mixed" not in args.skip:
        results["mixed"] = _mixed(session, recipe, evaluate, args.mixed_method)
        print(json.dumps(results["mixed"], indent=1), flush=True)

    save()
    _print_tables(results)
    shutil.rmtree(cache, ignore_errors=True)
    print(f"wrote {out}")


def _full_vocabulary_kl(ctx):
    """KL(base || model) per token over all 49,152 entries, against base log-probs computed once."""
    import torch.nn.functional as F

    from autocompress.evaluators.next_token import _log_probs  # the evaluator's own forward pass

    batches = list(ctx.batches(ctx.evaluation))
    base = [_log_probs(ctx.base_model, ids) for ids in batches]

    def kl(model: torch.nn.Module) -> float:
        total = sum(
            F.kl_div(_log_probs(model, ids), b, log_target=True, reduction="sum").item()
            for ids, b in zip(batches, base)
        )
        return total / ctx.evaluation.numel()

    return kl


def _row(r: dict) -> str:
    return (
        f"{r['method']:<16} w{r['bits']} g{r['group_size']:<4} KL {r['kl']:.4f} (full {r['kl_full']:.4f})  "
        f"ppl {r['perplexity']:7.2f}  top1 {r['top1_agreement']:.3f}  apply {r['apply_s']:.1f}s"
    )


@torch.no_grad()
def _hqq(base: torch.nn.Module, bits: int, group: int) -> torch.nn.Module:
    """HQQ's half-quadratic optimised zero/scale (calibration-free), asymmetric, grouped along the input."""
    import copy

    from hqq.core.quantize import Quantizer

    from autocompress.models.adapter import ModelAdapter

    model = copy.deepcopy(base)
    for site in ModelAdapter(model).linear_sites():
        w = site.module.weight
        wq, meta = Quantizer.quantize(
            w.float(),
            nbits=bits,
            group_size=group,
            optimize=True,
            round_zero=False,
            axis=1,
            compute_dtype=torch.float32,
            device="cpu",
        )
        w.copy_(Quantizer.dequantize(wq, meta).reshape(w.shape).to(w.dtype))
    return model


def _cache_timing(session, recipe, cache: Path) -> dict:
    """Cold (no quantized weights cached; calibration statistics too when this is the run's first
    use of them), warm (same recipe again), and a new recipe mixing two already-seen choices."""
    from autocompress.pipeline import apply_recipe

    shutil.rmtree(cache / "quant-weights", ignore_errors=True)
    timings = {}
    for label, params in [
        ("cold gptq w4g64", dict(method="gptq", bits=4, group_size=64)),
        ("warm gptq w4g64", dict(method="gptq", bits=4, group_size=64)),
        ("cold awq w3g64", dict(method="awq", bits=3, group_size=64)),
        (
            "mixed: attn gptq w4, mlp awq w3",
            dict(method="gptq", bits=4, group_size=64, overrides=[{"match": "mlp.*", "method": "awq", "bits": 3}]),
        ),
    ]:
        t0 = time.perf_counter()
        apply_recipe(session, recipe(**params))
        timings[label] = time.perf_counter() - t0
    timings["warm/cold ratio"] = timings["warm gptq w4g64"] / timings["cold gptq w4g64"]
    timings["mixed/cold ratio"] = timings["mixed: attn gptq w4, mlp awq w3"] / timings["cold gptq w4g64"]
    return timings


def _mixed(session, recipe, evaluate, method: str) -> dict:
    """3.5 average bits (half of the decoder weights at 3, half at 4, by parameter count), ``method`` g64:
    uniform w4 attn / w3 mlp is not 3.5 bits, so 'uniform' is the nearest 3.5-bit layer-wise split
    (even layers 4 bits, odd 3), vs sensitivity allocation, vs random allocations (5 seeds)."""
    from autocompress.models.adapter import ModelAdapter
    from autocompress.models.annotations import weight_format

    sites = ModelAdapter(session.base.model).linear_sites()
    out: dict = {}
    base = dict(method=method, bits=3, group_size=64, symmetric=False)

    def overrides(four: set[tuple[int, str]]) -> list[dict]:
        return [{"match": role, "layers": str(layer), "bits": 4} for layer, role in sorted(four)]

    def avg_bits(four: set[tuple[int, str]]) -> float:
        total = sum(s.module.weight.numel() for s in sites)
        return sum((4 if (s.layer, s.role) in four else 3) * s.module.weight.numel() for s in sites) / total

    def random_half(seed: int) -> set[tuple[int, str]]:
        rng = random.Random(seed)
        order = rng.sample([(s.layer, s.role) for s in sites], len(sites))
        total, chosen, acc = sum(s.module.weight.numel() for s in sites), set(), 0
        size = {(s.layer, s.role): s.module.weight.numel() for s in sites}
        for key in order:
            if acc + size[key] <= total / 2:
                chosen.add(key)
                acc += size[key]
        return chosen

    from autocompress.hardware import Workload, cost_metrics, load_target, profile_model
    from autocompress.pipeline import apply_recipe

    pi5 = load_target("raspberry-pi-5")

    def pi5_decode_ms(model) -> float:
        return cost_metrics(profile_model(model), [pi5], Workload())["raspberry-pi-5.decode_ms_per_token"]

    uniform = {(s.layer, s.role) for s in sites if s.layer % 2 == 0}
    layerwise = apply_recipe(session, recipe(**base, overrides=overrides(uniform)))
    budget_ms = pi5_decode_ms(layerwise)
    out["layerwise even/odd"] = {"avg_bits": avg_bits(uniform), "pi5_decode_ms": budget_ms, **evaluate(layerwise)}
    runs = []
    for seed in range(5):
        four = random_half(seed)
        model = apply_recipe(session, recipe(**base, overrides=overrides(four)))
        runs.append({"avg_bits": avg_bits(four), **evaluate(model)})
    out["random (5 seeds)"] = {k: sum(r[k] for r in runs) / len(runs) for k in runs[0]}
    out["random runs"] = runs

    def allocated(label: str, **params) -> None:
        model = apply_recipe(session, recipe(**base, allocation="sensitivity", bit_choices=[3, 4], **params))
        bits = {(s.layer, s.role) for s in ModelAdapter(model).linear_sites() if weight_format(s.module).bits == 4}
        out[label] = {"avg_bits": avg_bits(bits), "pi5_decode_ms": pi5_decode_ms(model), **evaluate(model)}
        print(label, out[label], flush=True)

    for proxy in ("gptq", "fisher"):
        allocated(f"sensitivity ({proxy} proxy)", avg_bits=3.5, sensitivity_proxy=proxy)
        # The same decode latency on a Raspberry Pi 5 as the layer-wise split, spent by sensitivity.
        allocated(
            f"sensitivity ({proxy} proxy) under the Pi 5 latency of layerwise",
            sensitivity_proxy=proxy,
            latency_budget={"target": "raspberry-pi-5", "decode_ms_per_token": budget_ms},
        )
    return out


def _print_tables(results: dict) -> None:
    if "methods" in results:
        print("\n| method | bits | group | KL (top-64) | KL (full) | perplexity | top-1 agree | apply s |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results["methods"]:
            print(
                f"| {r['method']} | {r['bits']} | {r['group_size']} | {r['kl']:.4f} | {r['kl_full']:.4f} | "
                f"{r['perplexity']:.2f} | {r['top1_agreement']:.3f} | {r['apply_s']:.1f} |"
            )
    if "activations" in results:
        print("\n| activations / KV cache | KL (top-64) | KL (full) | perplexity |")
        print("|---|---|---|---|")
        for r in results["activations"]:
            print(f"| {r['config']} | {r['kl']:.4f} | {r['kl_full']:.4f} | {r['perplexity']:.2f} |")
    if "cache" in results:
        print("\n| cache timing | seconds / ratio |")
        print("|---|---|")
        for k, v in results["cache"].items():
            print(f"| {k} | {v:.3f} |")
    if "mixed" in results:
        print("\n| allocation (3.5 avg bits, g64 asymmetric) | avg bits | KL (top-64) | KL (full) | perplexity |")
        print("|---|---|---|---|---|")
        for name, r in results["mixed"].items():
            if name != "random runs" and "kl" in r:
                print(f"| {name} | {r['avg_bits']:.3f} | {r['kl']:.4f} | {r['kl_full']:.4f} | {r['perplexity']:.2f} |")


if __name__ == "__main__":
    main()
