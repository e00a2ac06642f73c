"""Samplers on synthetic per-tensor problems: best KL within each size target / the exact additive optimum's.

``python -m autocompress.search.per_tensor.benchmark --trials 200 --seeds 0 1 2 surrogate random nsga2
'surrogate:draws=4'`` prints one row per sampler spec (``name[:option=value,...]``): the ratio at each target
(mean over seeds; < 1 is possible, the non-additive part lets a lucky configuration beat the additive
optimum), and the median / max seconds per ask.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from typing import Any

import numpy as np
import optuna

from autocompress.search.per_tensor.synthetic import Synthetic, make_problem


def build(spec: str, syn: Synthetic, seed: int) -> optuna.samplers.BaseSampler:
    from autocompress.search.per_tensor import PER_TENSOR_SAMPLERS

    name, _, rest = spec.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        try:
            options[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            options[k] = v
    if name in PER_TENSOR_SAMPLERS:
        return PER_TENSOR_SAMPLERS[name](syn.problem, seed=seed, **options)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, **options)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, **options)
    raise ValueError(f"benchmark: unknown sampler {name!r}")


def run(spec: str, syn: Synthetic, seed: int, trials: int) -> dict[str, Any]:
    sampler = build(spec, syn, seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    asks = []
    original = sampler.sample_relative

    def timed(*a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        out = original(*a, **k)
        asks.append(time.perf_counter() - t0)
        return out

    sampler.sample_relative = timed  # type: ignore[method-assign]
    study.optimize(syn.objective, n_trials=trials)
    ratios = []
    for budget in syn.problem.size_targets:
        within = [t.values[0] for t in study.trials if t.values[1] <= budget]
        ratios.append((min(within) if within else float("inf")) / syn.optimum(budget)[1])
    return {"ratios": ratios, "ask_median_s": float(np.median(asks)), "ask_max_s": float(np.max(asks))}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("specs", nargs="+")
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--interaction", type=float, default=0.1)
    parser.add_argument("--json", action="store_true", help="one JSON line per spec")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    problems = {s: make_problem(layers=args.layers, seed=s, interaction=args.interaction) for s in args.seeds}
    for spec in args.specs:
        rows = [run(spec, problems[s], s, args.trials) for s in args.seeds]
        ratios = np.mean([r["ratios"] for r in rows], axis=0)
        out = {
            "spec": spec,
            "ratios": [round(float(r), 3) for r in ratios],
            "ask_median_ms": round(1000 * float(np.median([r["ask_median_s"] for r in rows])), 1),
            "ask_max_ms": round(1000 * float(np.max([r["ask_max_s"] for r in rows])), 1),
        }
        print(
            json.dumps(out)
            if args.json
            else f"{spec:40s} ratio at targets {out['ratios']}  "
            f"ask {out['ask_median_ms']} ms (max {out['ask_max_ms']})",
            flush=True,
        )


if __name__ == "__main__":
    main()
