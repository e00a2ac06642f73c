"""Distillation recovers accuracy of compressed SmolLM2-135M: KL to the base model on held-out WikiText-2.

    .venv/bin/python benchmarks/distillation.py [--part width qat sparse timing] [--steps 200] [--device cpu]

Rows: 25% of MLP channels removed (prune_width) + KD; 3-bit RTN + QAT-KD (weights checked on the grid);
2:4 Wanda + KD (masks checked). KL is the full-vocabulary KL(base || model) per token, averaged over the
held-out blocks; calibration (training) and evaluation blocks are disjoint blocks of
../shared/data/wikitext-2-raw/wiki.test.raw. ``timing`` measures seconds per distillation step on CPU
with 2 threads. Each row is merged into benchmarks/results/distillation.json as soon as it is measured.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from autocompress.models import annotations
from autocompress.models.adapter import ModelAdapter
from autocompress.pipeline import apply_recipe, open_session
from autocompress.recipe import Recipe, TextSpec
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.sparsify.masks import keep_mask

ROOT = Path(__file__).resolve().parents[1]
WIKITEXT = ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"
RESULTS = ROOT / "benchmarks" / "results" / "distillation.json"
MODEL = "smollm2-135m"

PARTS = {
    "width": ("prune_width 25% MLP", [{"technique": "prune_width", "params": {"ffn_ratio": 0.25}}]),
    "qat": ("rtn w3 g64", [{"technique": "quantize", "params": {"method": "rtn", "bits": 3, "group_size": 64}}]),
    "sparse": ("wanda 2:4", [{"technique": "sparsify", "params": {"method": "wanda", "pattern": "2:4"}}]),
}


@torch.no_grad()
def full_kl(model, base, blocks: torch.Tensor, device: str, batch: int = 8) -> float:
    """Mean over tokens of KL(base || model), full vocabulary."""
    total, count = 0.0, 0
    for ids in blocks.split(batch):
        ids = ids.to(device)
        logp = F.log_softmax(base(input_ids=ids).logits.float(), -1)
        logq = F.log_softmax(model(input_ids=ids).logits.float(), -1)
        total += float((logp.exp() * (logp - logq)).sum(-1).sum())
        count += ids.numel()
    return total / count


def checks(model, before: dict[str, torch.Tensor]) -> dict:
    """Shapes unchanged, pruned weights of sparse linears still zero, weights exactly on their recorded grids."""
    sites = ModelAdapter(model).linear_sites()
    out = {"shapes_unchanged": all(tuple(s.module.weight.shape) == tuple(before[s.name].shape) for s in sites)}
    sparse = [s for s in sites if keep_mask(s.module) is not None]
    if sparse:
        out["masks_kept"] = all(bool((s.module.weight.cpu()[before[s.name] == 0] == 0).all()) for s in sparse)
        out["masks_checked"] = len(sparse)
    read = getattr(annotations, "weight_grid", None)
    grids = [(s, read(s.module)) for s in sites] if read else []
    grids = [(s, g) for s, g in grids if g is not None]
    if grids:
        weights = {s.name: s.module.weight.detach().cpu() for s, _ in grids}
        out["on_grid"] = all(torch.equal(g.dequantize(g.codes(weights[s.name])), weights[s.name]) for s, g in grids)
        out["grids_checked"] = len(grids)
    return out


def save(key: str, row: dict) -> None:
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    results[key] = row
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2))


def run_part(session, part: str, distill: dict, device: str) -> dict:
    name, steps = PARTS[part]
    base = session.base.model
    base.to("cpu")  # the compression steps measure their statistics on CPU batches
    model = apply_recipe(session, Recipe(model=session.model_ref, seed=0, calibration=session.calibration, steps=steps))
    before = {s.name: s.module.weight.detach().cpu().clone() for s in ModelAdapter(model).linear_sites()}
    base.to(device), model.to(device)
    evaluation = session.ctx.evaluation
    kl_base = full_kl(model, base, evaluation, device)
    technique = TECHNIQUES["distill"]
    params = technique.Params(**distill)
    start = time.perf_counter()
    model = technique().apply(model, params, session.ctx)
    seconds = time.perf_counter() - start
    kl_after = full_kl(model, base, evaluation, device)
    row = {
        "name": name,
        "distill": params.model_dump(mode="json"),
        "kl_before": kl_base,
        "kl_after": kl_after,
        "kl_reduction": 1 - kl_after / kl_base,
        "train_seconds": round(seconds, 1),
        "seconds_per_step": round(seconds / max(params.steps - model.distill_report["resumed_from"], 1), 3),
        "first_loss": model.distill_report["first_loss"],
        "last_loss": model.distill_report["last_loss"],
        **checks(model, before),
    }
    print(
        f"{name:<22} KL {kl_base:.4f} -> {kl_after:.4f} ({row['kl_reduction']:+.0%} of the gap)  "
        f"{row['seconds_per_step']:.2f} s/step  "
        + "  ".join(f"{k} {v}" for k, v in row.items() if k in ("shapes_unchanged", "masks_kept", "on_grid")),
        flush=True,
    )
    return row


def timing(session, distill: dict, steps: int = 4) -> list[dict]:
    """Seconds per step on CPU with 2 threads, for each trainable set, after the width-pruning recipe."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    session.base.model.to("cpu")
    rows = []
    for train in ("all", "lora", "norms"):
        model = apply_recipe(
            session, Recipe(model=session.model_ref, seed=0, calibration=session.calibration, steps=PARTS["width"][1])
        )
        params = TECHNIQUES["distill"].Params(**(distill | {"steps": steps, "train": train, "warmup_steps": 0}))
        model_digest, session.ctx.model_digest = session.ctx.model_digest, ""  # no checkpoint: always train
        try:
            model = TECHNIQUES["distill"]().apply(model, params, session.ctx)
        finally:
            session.ctx.model_digest = model_digest
        row = {
            "train": train,
            "batch_size": params.batch_size,
            "seq_len": params.seq_len,
            "steps": steps,
            "seconds_per_step": round(model.distill_report["seconds"] / steps, 2),
            "threads": 2,
        }
        print(
            f"timing train={train:<6} bs {params.batch_size} x {params.seq_len}: {row['seconds_per_step']:.2f} s/step",
            flush=True,
        )
        rows.append(row)
    torch.set_num_threads(threads)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--part", nargs="+", default=[*PARTS, "timing"])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lr", type=float, default=3e-4)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--train", default="all")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--hidden-weight", type=float, default=0.0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--calibration-samples", type=int, default=128)
    parser.add_argument("--eval-samples", type=int, default=32)
    parser.add_argument("--tag", default="", help="suffix of the result keys")
    parser.add_argument("--model", default=MODEL, help="alias or .gguf path (a GPU host without the package)")
    parser.add_argument("--wikitext", default=str(WIKITEXT))
    args = parser.parse_args()
    torch.manual_seed(0)
    spec = TextSpec(
        source=args.wikitext, seq_len=256, calibration_samples=args.calibration_samples, eval_samples=args.eval_samples
    )
    session = open_session(args.model, spec, seed=0)
    distill = {
        "steps": args.steps,
        "lr": args.lr,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "train": args.train,
        "temperature": args.temperature,
        "hidden_weight": args.hidden_weight,
    }
    where = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": args.device,
        "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None,
        "host": platform.node(),
        "torch": torch.__version__,
        "text": spec.model_dump(),
        "note": "calibration and eval blocks are disjoint",
    }
    print(
        f"== distillation on {args.device} ({where['gpu'] or 'CPU'}), {args.steps} steps, bs {args.batch_size} x "
        f"{args.seq_len}, lr {args.lr:g}, train {args.train}"
    )
    for part in args.part:
        if part == "timing":
            save(f"timing{args.tag}", where | {"rows": timing(session, distill)})
        else:
            save(f"{part}{args.tag}", where | run_part(session, part, distill, args.device))


if __name__ == "__main__":
    main()
