"""Time llama.cpp's (de)quantizers and the fixed grid on SmolLM2-135M's weight shapes.

``python -m autocompress.ggml.bench [--types Q4_0,Q4_K] [--threads N]`` prints one line per
shape x type: quantize without and with importance, dequantize (row chunks on ``--threads``
threads), then Grid build, one column's nearest (on one thread, as GPTQ's loop runs it), the whole
tensor's nearest and a full encode: each the median of 3 runs, in milliseconds.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from autocompress.threads import one_thread

from . import native
from .grid import Grid
from .types import WEIGHT_TYPES, ggml_type

SHAPES = [(576, 576), (1536, 576), (576, 1536), (49152, 576)]  # [rows, cols]: q/o, up/gate, down, embedding


def _ms(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def _row(w: torch.Tensor, name: str, threads: int | None) -> list[float]:
    """The timings of one weight and type, in the header's order."""
    cols = w.shape[1]
    importance = torch.rand(cols) + 0.1
    packed = native.quantize(w, name, threads=threads)
    cells = [
        _ms(lambda: native.quantize(w, name, threads=threads)),
        _ms(lambda: native.quantize(w, name, importance, threads=threads)),
        _ms(lambda: native.dequantize(packed, name, cols, threads=threads)),
    ]
    if not ggml_type(name).quantized:
        return cells
    grid = Grid(packed, name, cols)
    codes, column = grid.codes, w[:, 7].clone()
    with one_thread():
        cells += [_ms(lambda: Grid(packed, name, cols)), _ms(lambda: grid.nearest(column, column=7))]
    return cells + [_ms(lambda: grid.nearest(w)), _ms(lambda: grid.encode(codes))]


def bench(types: list[str], threads: int | None) -> None:
    heads = ["quant", "q+imat", "dequant", "grid", "column", "nearest", "encode"]
    print(f"{'shape':>10} {'type':>7} " + " ".join(f"{h:>8}" for h in heads) + "  (ms)")
    for rows, cols in SHAPES:
        w = torch.randn(rows, cols)
        for name in (n for n in types if ggml_type(n).fits(cols)):
            cells = _row(w, name, threads)
            print(f"{rows}x{cols:<5} {name:>7} " + " ".join(f"{c:8.2f}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--types", default=",".join(n for n in WEIGHT_TYPES if n != "F32"))
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    bench([ggml_type(t).name for t in args.types.split(",")], args.threads)


if __name__ == "__main__":
    main()
