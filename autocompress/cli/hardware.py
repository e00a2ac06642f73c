"""``autocompress hardware ...``: list, show, predict, calibrate and validate targets."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(no_args_is_help=True, help="Hardware targets and their cost models.")
out = Console()
err = Console(stderr=True)


@app.command("list")
def list_cmd() -> None:
    """The targets (shipped, and your own such as a calibrated host)."""
    from autocompress.hardware.target import list_targets, load_target

    table = Table(title="hardware targets")
    table.add_column("name", no_wrap=True)
    for column in ("GB/s", "fp16 GFLOP/s", "int8 GOP/s", "GB", "W", "kernels"):
        table.add_column(column)
    for name in list_targets():
        t = load_target(name)
        table.add_row(
            name,
            f"{t.memory_bandwidth_gbps:g}",
            f"{t.peak_gflops.fp16:g}",
            f"{t.peak_gflops.int8:g}",
            f"{t.memory_capacity_gb:g}",
            f"{t.power_w:g}",
            " ".join(t.features),
        )
    out.print(table)


@app.command()
def show(target: str = typer.Argument(..., help="target name or YAML path")) -> None:
    """Print a target's YAML, sources included."""
    from autocompress.catalog import resolve

    print(resolve("targets", target, "target").read_text())


@app.command()
def predict(
    target: list[str] = typer.Option(..., help="target name (repeatable)"),
    recipe: Path = typer.Option(..., help="recipe YAML whose compressed model to cost"),
    prompt_tokens: int = typer.Option(256),
    context_tokens: int = typer.Option(512),
    as_json: bool = typer.Option(False, "--json", help="one JSON object keyed by metric name"),
) -> None:
    """Predicted decode/prefill latency, memory and energy of a recipe's model."""
    from autocompress.hardware import cost_metrics, load_target, profile_model
    from autocompress.hardware.roofline import Workload
    from autocompress.pipeline import apply_recipe, open_session
    from autocompress.recipe import Recipe

    targets = [load_target(t, f"--target[{i}]") for i, t in enumerate(target)]
    parsed = Recipe.from_file(recipe)
    with err.status("applying the recipe..."):
        session = open_session(parsed.model, parsed.calibration, parsed.seed)
        model = apply_recipe(session, parsed)
    metrics = cost_metrics(profile_model(model), targets, Workload(prompt_tokens, context_tokens))
    if as_json:
        print(json.dumps(metrics, indent=2))
        return
    table = Table()
    table.add_column("metric")
    table.add_column("predicted", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4g}")
    out.print(table)


def _sample_line(index: int, sample) -> str:
    m = sample.measured
    return f"[{index}] {sample.label}: prefill {m.prefill_ms:.1f} ms, decode {m.decode_ms_per_token:.2f} ms/token"


def _measure(runtime, suite: str, repeats: int):
    """Measure a runtime's suite, printing one line per sample (to stderr)."""
    from itertools import count

    from autocompress.hosts.calibrate import measure_samples

    index = count(1)
    return measure_samples(
        runtime.cases(suite), repeats, timer=runtime.time, measured=lambda s: err.print(_sample_line(next(index), s))
    )


@app.command()
def calibrate(
    out_path: Path | None = typer.Option(
        None, "--out", help="default: your catalog, so the target's name (host, host-llamacpp) resolves to it"
    ),
    runtime: str = typer.Option(
        "torch",
        help="the runtime to measure: torch (eager fp32, target `host`) or "
        "llamacpp (GGUF through llama.cpp, target `host-llamacpp`)",
    ),
    model: str = typer.Option("smollm2-135m", help="the architecture whose shapes are measured"),
    repeats: int = typer.Option(5, min=3),
) -> None:
    """Micro-benchmark the host, measure real prefill/decode, fit the efficiency factors, write the target."""
    from autocompress.catalog import user_catalog_dir
    from autocompress.hosts import host_runtime
    from autocompress.hosts.calibrate import errors, fit

    start = time.perf_counter()
    host = host_runtime(runtime, model)
    initial = host.initial_target(progress=lambda step: err.print(f"[dim]{step}...[/dim]"))
    samples = _measure(host, "calibration", repeats)
    before = errors(initial, samples)
    fitted = fit(initial, samples)
    after = errors(fitted, samples)
    worst = max(after.decode_mape, after.prefill_mape)
    if worst > 50:
        err.print(f"[yellow]the fit misses by {worst:.0f}% on average: was the machine busy?[/yellow]")
    fitted = fitted.model_copy(update={"uncertainty": min(round(2 * worst / 100, 3), 2.0)})  # the field's bound
    path = out_path or user_catalog_dir("targets") / f"{host.target_name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(host.target_yaml(fitted, len(samples), after))
    out.print(
        f"fit on {len(samples)} models: decode MAPE {before.decode_mape:.1f}% -> {after.decode_mape:.1f}%, "
        f"prefill MAPE {before.prefill_mape:.1f}% -> {after.prefill_mape:.1f}%"
    )
    out.print(f"wrote {path} ({time.perf_counter() - start:.0f} s)")


@app.command()
def validate(
    target: str = typer.Option("host", help="a target calibrated on this machine (host, host-llamacpp)"),
    model: str = typer.Option("smollm2-135m"),
    repeats: int = typer.Option(5, min=3),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Measure 20+ configurations the calibration did not see; print MAPE and the share within ±10%."""
    from autocompress.hardware.target import load_target
    from autocompress.hosts import runtime_for_target
    from autocompress.hosts.calibrate import errors, predict_sample

    start = time.perf_counter()
    loaded = load_target(target, "--target")
    host = runtime_for_target(loaded, "--target")(model)
    samples = _measure(host, "validation", repeats)
    result = errors(loaded, samples)
    rows = []
    for s in samples:
        p = predict_sample(loaded, s)
        rows.append(
            {
                "config": s.label,
                "prompt_tokens": s.workload.prompt_tokens,
                "context_tokens": s.workload.context_tokens,
                "prefill_ms": {"measured": s.measured.prefill_ms, "predicted": p.prefill_ms},
                "decode_ms_per_token": {"measured": s.measured.decode_ms_per_token, "predicted": p.decode_ms_per_token},
            }
        )
    summary = {
        "target": target,
        "configurations": len(samples),
        **result.__dict__,
        "seconds": round(time.perf_counter() - start, 1),
    }
    if as_json:
        print(json.dumps({"summary": summary, "rows": rows}, indent=2))
        return
    table = Table(title=f"{target}: predicted vs measured ({len(samples)} configurations)")
    for column in ("config", "prefill ms", "pred", "decode ms", "pred"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(
            r["config"],
            f"{r['prefill_ms']['measured']:.1f}",
            f"{r['prefill_ms']['predicted']:.1f}",
            f"{r['decode_ms_per_token']['measured']:.2f}",
            f"{r['decode_ms_per_token']['predicted']:.2f}",
        )
    out.print(table)
    out.print(
        f"decode MAPE {result.decode_mape:.1f}% ({result.decode_within_10:.0f}% within ±10%), "
        f"prefill MAPE {result.prefill_mape:.1f}% ({result.prefill_within_10:.0f}% within ±10%); "
        f"{summary['seconds']:.0f} s"
    )
