"""llama.cpp's own quantizers and dequantizers, called through ctypes on the libggml shipped by
llama-cpp-python (the ``[llamacpp]`` extra).

``quantize(weight, type, importance)`` runs ``ggml_quantize_chunk`` (the function llama-quantize
calls), ``dequantize(packed, type, cols)`` runs ``dequantize_row_<type>``. Both work in row chunks
on a thread pool: ctypes releases the GIL for the duration of each foreign call. F16 and F32 are
converted by torch (round to nearest even, as ggml's ``ggml_fp32_to_fp16_row``).

Measured with ``python -m autocompress.ggml.bench`` on the 2-core dev machine while other jobs
loaded it (load average 4-5, so +-50 %); 2 threads, median of 3, milliseconds:

    shape [rows x cols]  type     quantize  with imatrix  dequantize
    576x576 (q, o)       Q4_0        0.6        37           0.5
                         Q8_0        1.5         -           0.4
                         IQ4_NL    108         134           0.3
    1536x576 (gate, up)  Q4_0        6          38           0.7
                         Q5_1        2.7       193           1.0
    576x1536 (down)      Q4_K      119         176           0.9
                         Q6_K       43          44           1.3
    49152x576 (embed)    Q8_0      274           -         172
                         Q4_0      132        1396          80
                         Q4_1       88        2868          43
                         IQ4_NL   6648        7100          23

The imatrix and IQ4_NL searches are llama.cpp's own cost (llama-quantize pays the same).
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import torch

from autocompress.errors import ConfigError

from .types import GGMLType, ggml_type

INSTALL_HINT = "pip install 'autocompress[llamacpp]'"
_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}
_CHUNK_WEIGHTS = 1 << 20  # weights per foreign call: big enough to amortise, small enough to balance


def library_path(name: str = "ggml-base") -> Path:
    """Where llama-cpp-python keeps ``lib<name>``; a ConfigError when it is not installed."""
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("llama_cpp", f"llama-cpp-python is not installed; {INSTALL_HINT}")
    suffix = _SUFFIX.get(sys.platform, ".so")
    stem = name if sys.platform == "win32" else f"lib{name}"
    path = Path(next(iter(spec.submodule_search_locations))) / "lib" / f"{stem}{suffix}"
    if not path.is_file():
        raise ConfigError("llama_cpp", f"{path.name} is missing from {path.parent}; {INSTALL_HINT}")
    return path


def _declare(lib: ctypes.CDLL, name: str, restype, *argtypes) -> None:
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, list(argtypes)


_P, _I64 = ctypes.c_void_p, ctypes.c_int64


@cache
def library() -> ctypes.CDLL:
    """libggml-base, loaded once, with the signatures this module calls declared."""
    try:
        lib = ctypes.CDLL(str(library_path("ggml-base")))
    except OSError as err:
        raise ConfigError("llama_cpp", f"cannot load libggml-base ({err}); {INSTALL_HINT}") from None
    _declare(lib, "ggml_quantize_chunk", ctypes.c_size_t, ctypes.c_int, _P, _P, _I64, _I64, _I64, _P)
    _declare(lib, "ggml_quantize_init", None, ctypes.c_int)
    _declare(lib, "ggml_quantize_requires_imatrix", ctypes.c_bool, ctypes.c_int)
    _declare(lib, "ggml_row_size", ctypes.c_size_t, ctypes.c_int, _I64)
    _declare(lib, "ggml_blck_size", _I64, ctypes.c_int)
    _declare(lib, "ggml_fp32_to_fp16_row", None, _P, _P, _I64)
    _declare(lib, "ggml_type_name", ctypes.c_char_p, ctypes.c_int)
    return lib


def c_name(spec: GGMLType) -> str:
    """ggml's own name of a type (``q4_0``, ``q2_K``, ``iq4_nl``), the suffix of its row functions."""
    return library().ggml_type_name(spec.id).decode()


@cache
def cpu_library() -> ctypes.CDLL:
    """libggml-cpu: the host's SIMD activation quantizers (``quantize_row_q8_0`` ...), for checks."""
    library()  # its dependency, by the same path
    try:
        lib = ctypes.CDLL(str(library_path("ggml-cpu")))
    except OSError as err:
        raise ConfigError("llama_cpp", f"cannot load libggml-cpu ({err}); {INSTALL_HINT}") from None
    _declare(lib, "ggml_cpu_init", None)
    lib.ggml_cpu_init()
    return lib


def row_function(lib: ctypes.CDLL, name: str):
    """``void name(const void *x, void *y, int64 k)``: ggml's per-row (de)quantizers share this form."""
    fn = getattr(lib, name, None)
    if fn is None:
        raise ConfigError("llama_cpp", f"this libggml does not export {name}; {INSTALL_HINT}")
    fn.restype, fn.argtypes = None, [_P, _P, _I64]
    return fn


def _ptr(array: np.ndarray, offset_bytes: int = 0) -> int:
    return array.ctypes.data + offset_bytes


def _row_chunks(rows: int, cols: int) -> list[tuple[int, int]]:
    step = max(1, _CHUNK_WEIGHTS // max(cols, 1))
    return [(r, min(step, rows - r)) for r in range(0, rows, step)]


def _run_chunks(work, chunks: list[tuple[int, int]], threads: int | None) -> None:
    threads = min(threads or torch.get_num_threads() or os.cpu_count() or 1, len(chunks))
    if threads <= 1:
        for chunk in chunks:
            work(*chunk)
        return
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda chunk: work(*chunk), chunks))


def _weight_array(weight: torch.Tensor, spec: GGMLType) -> np.ndarray:
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2 or not weight.is_floating_point():
        raise ConfigError("weight", "must be a 2-D floating-point torch tensor [rows, cols]")
    spec.check_fits(weight.shape[1], "weight")
    array = weight.detach().to("cpu", torch.float32).contiguous().numpy()
    if not np.isfinite(array).all():
        raise ConfigError("weight", "has NaN or infinite values")
    return array


def _importance_array(importance: torch.Tensor | None, cols: int) -> np.ndarray | None:
    if importance is None:
        return None
    imp = torch.as_tensor(importance).detach().to("cpu", torch.float32).contiguous().numpy()
    if imp.shape != (cols,):
        raise ConfigError("importance", f"must have shape [{cols}] (one value per column), got {list(imp.shape)}")
    if not np.isfinite(imp).all() or (imp < 0).any() or not (imp > 0).any():
        raise ConfigError("importance", "must be finite, non-negative and not all zero (mean of x^2 per column)")
    return imp


def quantize(
    weight: torch.Tensor, type: str | GGMLType, importance: torch.Tensor | None = None, threads: int | None = None
) -> torch.Tensor:
    """``weight [rows, cols]`` packed by llama.cpp's quantizer: uint8 ``[rows, row_bytes]``.

    ``importance`` is llama.cpp's imatrix for this weight: per input column, the mean of x^2 over
    the calibration tokens. Types whose quantizer ignores it (Q8_0, F16, F32) accept and ignore it.
    """
    spec = ggml_type(type)
    src = _weight_array(weight, spec)
    imp = _importance_array(importance, src.shape[1])
    rows, cols = src.shape
    if not spec.quantized:
        dtype = torch.float16 if spec.name == "F16" else torch.float32
        return torch.from_numpy(src).to(dtype).contiguous().view(torch.uint8).reshape(rows, -1)
    lib = library()
    row_bytes = spec.row_bytes(cols)
    if lib.ggml_row_size(spec.id, cols) != row_bytes:
        raise ConfigError("llama_cpp", f"libggml's {spec.name} row size differs from gguf's; {INSTALL_HINT}")
    dst = np.empty((rows, row_bytes), dtype=np.uint8)
    lib.ggml_quantize_init(spec.id)
    imp_ptr = None if imp is None else _ptr(imp)

    def work(start: int, count: int) -> None:
        done = lib.ggml_quantize_chunk(spec.id, _ptr(src), _ptr(dst), start * cols, count, cols, imp_ptr)
        assert done == count * row_bytes

    _run_chunks(work, _row_chunks(rows, cols), threads)
    return torch.from_numpy(dst)


def dequantize(packed: torch.Tensor, type: str | GGMLType, cols: int, threads: int | None = None) -> torch.Tensor:
    """Packed ``[rows, row_bytes]`` uint8 back to float32 ``[rows, cols]`` by llama.cpp's dequantizer."""
    spec = ggml_type(type, weights_only=False)
    row_bytes = spec.row_bytes(cols)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8 or packed.dim() != 2:
        raise ConfigError("packed", "must be a 2-D uint8 torch tensor [rows, row_bytes]")
    if packed.shape[1] != row_bytes:
        raise ConfigError("packed", f"rows of {packed.shape[1]} bytes; {cols} columns of {spec.name} take {row_bytes}")
    rows = packed.shape[0]
    src = packed.detach().cpu().contiguous()
    if not spec.quantized:
        dtype = torch.float16 if spec.name == "F16" else torch.float32
        return src.view(dtype).reshape(rows, cols).float()
    fn = row_function(library(), f"dequantize_row_{c_name(spec)}")
    src_np = src.numpy()
    out = np.empty((rows, cols), dtype=np.float32)

    def work(start: int, count: int) -> None:
        fn(_ptr(src_np, start * row_bytes), _ptr(out, start * cols * 4), count * cols)

    _run_chunks(work, _row_chunks(rows, cols), threads)
    return torch.from_numpy(out)


def fp32_to_fp16_row(x: np.ndarray) -> np.ndarray:
    """ggml's own float32 -> float16 conversion (libggml-base), for checking torch's against it."""
    src = np.ascontiguousarray(x, dtype=np.float32)
    out = np.empty(src.shape, dtype=np.float16)
    library().ggml_fp32_to_fp16_row(_ptr(src), _ptr(out), src.size)
    return out


ROW_QUANTIZERS = {"ref": (library, "quantize_row_{}_ref"), "cpu": (cpu_library, "quantize_row_{}")}


def quantize_rows(x: torch.Tensor, type: str | GGMLType, impl: str = "ref") -> torch.Tensor:
    """Rows of ``x`` packed by ggml's per-row quantizer, as the CPU backend does to activations.

    ``impl="ref"``: ggml-quants.c's reference code (libggml-base); ``impl="cpu"``: the host's SIMD
    code in libggml-cpu (``quantize_row_q8_0`` ..., what a matrix product runs). uint8 ``[rows, row_bytes]``.
    """
    spec = ggml_type(type, weights_only=False)
    if impl not in ROW_QUANTIZERS:
        raise ConfigError("impl", f"unknown {impl!r}; allowed: {', '.join(ROW_QUANTIZERS)}")
    src = _weight_array(x, spec)
    rows, cols = src.shape
    load, pattern = ROW_QUANTIZERS[impl]
    fn = row_function(load(), pattern.format(c_name(spec)))
    dst = np.empty((rows, spec.row_bytes(cols)), dtype=np.uint8)
    fn(_ptr(src), _ptr(dst), rows * cols)
    return torch.from_numpy(dst)
