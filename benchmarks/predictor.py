"""How well the roofline predicts this host, before and after calibration.

Fits the host's efficiency factors on the calibration suite, then measures the validation suite
(20+ configurations the fit never saw: depths, MLP widths, prompt/context lengths, bits, group sizes,
sparsity) and reports MAPE and the share of predictions within ±10 %, for prefill and decode.

    .venv/bin/python benchmarks/predictor.py [--repeats 5] [--runtime torch|llamacpp]

Prints a table and writes benchmarks/results/predictor.json (``--runtime llamacpp``:
predictor-llamacpp.json, GGUF files timed with llama.cpp). Run it on a quiet machine.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import date
from pathlib import Path

from rich.console import Console
from rich.table import Table

from autocompress.hosts import host_runtime
from autocompress.hosts.calibrate import errors, fit, measure_samples, predict_sample


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--runtime", default="torch", help="torch or llamacpp")
    args = parser.parse_args()
    console = Console()
    start = time.time()
    runtime = host_runtime(args.runtime)
    initial = runtime.initial_target(progress=console.log)
    fit_samples = measure_samples(runtime.cases("calibration"), args.repeats, progress=console.log, timer=runtime.time)
    fitted = fit(initial, fit_samples)
    held_out = measure_samples(runtime.cases("validation"), args.repeats, progress=console.log, timer=runtime.time)
    results = {
        name: errors(target, held_out).__dict__
        for name, target in (("uncalibrated roofline (micro-benchmark figures)", initial), ("calibrated", fitted))
    }

    table = Table(title=f"{runtime.target_name} predictor on {len(held_out)} held-out configurations")
    for column in ("predictor", "decode MAPE %", "decode within ±10 %", "prefill MAPE %", "prefill within ±10 %"):
        table.add_column(column, justify="right")
    for name, e in results.items():
        table.add_row(
            name,
            f"{e['decode_mape']:.1f}",
            f"{e['decode_within_10']:.0f}",
            f"{e['prefill_mape']:.1f}",
            f"{e['prefill_within_10']:.0f}",
        )
    console.print(table)
    rows = Table(title="calibrated prediction vs measurement")
    for column in ("config", "prefill ms", "predicted", "decode ms/token", "predicted"):
        rows.add_column(column, justify="right")
    per_config = []
    for s in held_out:
        p = predict_sample(fitted, s)
        rows.add_row(
            s.label,
            f"{s.measured.prefill_ms:.1f}",
            f"{p.prefill_ms:.1f}",
            f"{s.measured.decode_ms_per_token:.2f}",
            f"{p.decode_ms_per_token:.2f}",
        )
        per_config.append({"config": s.label, "measured": s.measured.__dict__, "predicted": p.__dict__})
    console.print(rows)
    suffix = "" if args.runtime == "torch" else f"-{args.runtime}"
    out = Path(__file__).parent / "results" / f"predictor{suffix}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": date.today().isoformat(),
                "repeats": args.repeats,
                "runtime": args.runtime,
                "initial": initial.model_dump(mode="json"),
                "fitted": fitted.model_dump(mode="json"),
                "errors": results,
                "configs": per_config,
                "seconds": time.time() - start,
            },
            indent=2,
        )
    )
    console.print(f"wrote {out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
