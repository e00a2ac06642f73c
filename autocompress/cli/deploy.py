"""``autocompress export`` and ``autocompress deploy ...``: deployable files and their measured speed."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from autocompress.errors import ConfigError

app = typer.Typer(no_args_is_help=True, help="Run exported models with a real runtime on this host.")
out = Console()
err = Console(stderr=True)
FORMATS = ("gguf", "packed")


def export_cmd(
    artifact: Path = typer.Argument(..., help="an artifact folder (pipeline run --out, or a job's pareto/trial-N)"),
    fmt: str = typer.Option("gguf", "--format", help="gguf (llama.cpp) or packed (bit-packed safetensors)"),
    out_path: Path | None = typer.Option(None, "--out", help="default: model.gguf / packed/ in the artifact"),
    float_type: str = typer.Option("F16", help="GGUF type of unquantized weights: F16 or F32"),
    embedding_type: str | None = typer.Option(
        None,
        help="GGUF type for an embedding the recipe left unquantized (e.g. Q8_0, as llama.cpp's quantizer stores it)",
    ),
) -> None:
    """Write a compressed model as a deployable file; deploy.json in the artifact says what the runtime gets."""
    if fmt not in FORMATS:
        raise ConfigError("--format", f"{fmt!r} is not supported; allowed: {', '.join(FORMATS)}")
    if not artifact.is_dir():
        raise ConfigError("artifact", f"{str(artifact)!r} is not a folder")
    if fmt == "gguf":
        from autocompress.export.deploy import export_gguf

        with err.status("writing GGUF..."):
            report = export_gguf(
                artifact, out_path, float_type.upper(), embedding_type.upper() if embedding_type else None
            )
        summary = report.summary()
        types = ", ".join(f"{k} x{v}" for k, v in sorted(summary["tensor_types"].items()))
        out.print(f"wrote {report.path} ({report.file_bytes / 1e6:.1f} MB; {types})")
        if summary["lossless"]:
            out.print("lossless: every quantized weight was written with its recorded codes")
        else:
            out.print(
                f"[yellow]requantized[/] {len(summary['requantized'])} tensors "
                f"(worst relative RMS error {summary['max_rel_rms_error']:.3g}): " + "; ".join(summary["notes"])
            )
    else:
        from autocompress.export.packed import export_packed

        with err.status("writing packed safetensors..."):
            result = export_packed(artifact, out_path)
        out.print(
            f"wrote {result['path']} ({result['file_bytes'] / 1e6:.2f} MB; "
            f"predicted {result['predicted_bytes'] / 1e6:.2f} MB)"
        )


@app.command()
def measure(
    artifact: Path = typer.Argument(..., help="an artifact folder"),
    gguf: Path | None = typer.Option(
        None, help="the GGUF to run (default: the artifact's model.gguf, exported if missing)"
    ),
    text: str | None = typer.Option(
        None, help=".txt/.jsonl file or folder for the KL check (default: the recipe's evaluation text)"
    ),
    samples: int = typer.Option(4, min=1, help="held-out blocks for the KL check"),
    seq_len: int = typer.Option(128, min=16),
    prompt_tokens: int = typer.Option(128, min=1),
    decode_tokens: int = typer.Option(32, min=1),
    repeats: int = typer.Option(5, min=1),
    threads: int | None = typer.Option(None, min=1),
    tracking_uri: str | None = typer.Option(None, help="MLflow URI (default: the one the artifact records)"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Load the GGUF in llama.cpp, check its next-token distributions against the torch model, and
    measure prefill/decode tokens/s (warm-up, repeats, median). Needs the [llamacpp] extra."""
    from autocompress.export.deploy import measure as run_measure

    with err.status("measuring with llama.cpp..."):
        metrics = run_measure(
            artifact, gguf, text, samples, seq_len, prompt_tokens, decode_tokens, repeats, threads, tracking_uri
        )
    if as_json:
        print(json.dumps(metrics))
        return
    table = Table(title=f"llama.cpp on this host: {artifact}")
    table.add_column("metric")
    table.add_column("measured", justify="right")
    for name, value in metrics.items():
        table.add_row(name, f"{value:.4g}")
    out.print(table)
