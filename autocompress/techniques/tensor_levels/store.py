"""The compressed-layer store: every (tensor, level) compressed once, kept on disk as llama.cpp's bytes.

An entry is the packed ggml bytes of one tensor at one level, computed from the base model's weights and
calibration statistics, so its key is (model digest, calibration digest, tensor, level, method version).
Entries are safetensors files (``packed`` uint8 ``[rows, row_bytes]``; metadata: type, columns, the bytes'
SHA-256, build seconds, the level's output error) under ``<cache>/levels/<model>/<data>/``:

- written atomically (a unique temporary name in the same folder, then ``os.replace``);
- verified on read: an entry whose checksum, type or shape is wrong is deleted and rebuilt, never used;
- built once when several workers want it (an ``flock`` per entry: the others wait, then read);
- a full disk is one clear error, with the temporary file removed and the store unchanged;
- bounded with the other caches (``levels`` is evictable, least recently used first).

Dequantized float32 tensors are kept in an in-memory LRU, so assembling a trial swaps references.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from autocompress.cache import mark_used
from autocompress.errors import AutocompressError
from autocompress.ggml import native
from autocompress.techniques.tensor_levels.levels import Level, TensorInputs

FOLDER = "levels"
RAM_ENV = "AUTOCOMPRESS_LEVELS_RAM_GB"


class StoreFullError(AutocompressError):
    """The disk filled up while an entry was written; nothing was left behind."""


@dataclass(frozen=True)
class Entry:
    """One stored tensor at one level."""

    tensor: str
    level: str
    type: str
    packed: torch.Tensor  # uint8 [rows, row_bytes]
    cols: int
    seconds: float  # what it cost to build
    error: float  # tr(dW H dW^T): the level's output error on the calibration inputs (nan without inputs)
    built: bool  # built now (False: read from disk)

    @property
    def nbytes(self) -> int:
        return self.packed.numel()

    def weight(self) -> torch.Tensor:
        return native.dequantize(self.packed, self.type, self.cols)


def _sha256(packed: torch.Tensor) -> str:
    return hashlib.sha256(packed.contiguous().numpy().tobytes()).hexdigest()


def _safe(name: str) -> str:
    return name.replace("/", "-")


class LevelStore:
    """Entries of one base model and one calibration text, on disk under ``root``."""

    def __init__(self, cache_dir: Path, model_digest: str, data_digest: str, ram_bytes: int | None = None):
        # without both digests nothing can be keyed: entries are computed, kept in memory only
        self.root = (
            Path(cache_dir) / FOLDER / model_digest[:16] / data_digest[:16] if model_digest and data_digest else None
        )
        gb = float(os.environ.get(RAM_ENV, "8"))
        self.ram_bytes = int(gb * 2**30) if ram_bytes is None else ram_bytes
        self._weights: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._ram_used = 0
        self.built = self.read = 0
        self.build_seconds = 0.0

    # ---- disk --------------------------------------------------------------------------------------
    def path(self, tensor: str, level: Level) -> Path:
        if self.root is None:
            raise ValueError("this store keeps nothing on disk (its context knows no model or text digest)")
        return self.root / tensor / f"{_safe(level.name)}.v{level.method_class.version}.safetensors"

    def load(self, tensor: str, level: Level, cols: int) -> Entry | None:
        """The stored entry, verified; None if absent. A damaged entry is deleted (and reported None)."""
        path = self.path(tensor, level)
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                packed = f.get_tensor("packed")
            ok = (
                meta.get("sha256") == _sha256(packed)
                and meta.get("type") == level.type.name
                and int(meta.get("cols", -1)) == cols
                and packed.shape[1] == level.type.row_bytes(cols)
            )
        except (SafetensorError, OSError, ValueError, KeyError):
            ok = False
        if not ok:
            path.unlink(missing_ok=True)
            return None
        mark_used(path)
        self.read += 1
        return Entry(
            tensor,
            level.name,
            level.type.name,
            packed,
            cols,
            float(meta.get("seconds", "nan")),
            float(meta.get("error", "nan")),
            built=False,
        )

    def _write(self, path: Path, entry: Entry) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
        meta = {
            "sha256": _sha256(entry.packed),
            "type": entry.type,
            "cols": str(entry.cols),
            "seconds": repr(entry.seconds),
            "error": repr(entry.error),
            "tensor": entry.tensor,
            "level": entry.level,
        }
        try:
            save_file({"packed": entry.packed.contiguous()}, str(tmp), metadata=meta)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            if exc.errno == errno.ENOSPC:
                raise StoreFullError(
                    f"store: the disk under {self.root} is full while writing "
                    f"{entry.tensor} {entry.level}; free space or lower "
                    "AUTOCOMPRESS_CACHE_MAX_GB"
                ) from None
            raise

    def get(self, tensor: str, level: Level, weight: torch.Tensor, inputs: TensorInputs | None) -> Entry:
        """The entry, built now if it is missing or damaged (once across processes)."""
        cols = weight.shape[1]
        level.type.check_fits(cols, f"{tensor}: {level.name}")
        if self.root is None:
            return self._build(tensor, level, weight, inputs)
        found = self.load(tensor, level, cols)
        if found is not None:
            return found
        path = self.path(tensor, level)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path.with_name(path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # another worker building it: wait, then read its entry
            try:
                found = self.load(tensor, level, cols)
                if found is not None:
                    return found
                entry = self._build(tensor, level, weight, inputs)
                self._write(path, entry)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)
        return entry

    def _build(self, tensor: str, level: Level, weight: torch.Tensor, inputs: TensorInputs | None) -> Entry:
        start = time.perf_counter()
        packed = level.compress(weight, inputs if level.method_class.needs_inputs else None)
        seconds = time.perf_counter() - start
        error = output_error(weight, native.dequantize(packed, level.type, weight.shape[1]), inputs)
        self.built += 1
        self.build_seconds += seconds
        return Entry(tensor, level.name, level.type.name, packed, weight.shape[1], seconds, error, built=True)

    # ---- memory ------------------------------------------------------------------------------------
    def weight(self, tensor: str, level: Level, weight: torch.Tensor, inputs: TensorInputs | None) -> torch.Tensor:
        """The dequantized float32 tensor of an entry, from the in-memory LRU when it is there."""
        key = (tensor, level.name)
        cached = self._weights.get(key)
        if cached is not None:
            self._weights.move_to_end(key)
            return cached
        value = self.get(tensor, level, weight, inputs).weight()
        self._weights[key] = value
        self._ram_used += value.numel() * 4
        while self._ram_used > self.ram_bytes and len(self._weights) > 1:
            _, old = self._weights.popitem(last=False)
            self._ram_used -= old.numel() * 4
        return value

    # ---- reports -----------------------------------------------------------------------------------
    def summary(self) -> dict[str, dict[str, float]]:
        """Per level: entries, bytes on disk and build seconds (what ``store show`` prints)."""
        out: dict[str, dict[str, float]] = {}
        for path in sorted(self.root.glob("*/*.safetensors")) if self.root is not None else []:
            try:
                with safe_open(str(path), framework="pt") as f:
                    meta = f.metadata() or {}
            except (SafetensorError, OSError):
                continue
            row = out.setdefault(meta.get("level", path.stem), {"entries": 0, "bytes": 0, "build_s": 0.0})
            row["entries"] += 1
            row["bytes"] += path.stat().st_size
            row["build_s"] += float(meta.get("seconds", 0.0))
        return out


def output_error(weight: torch.Tensor, approx: torch.Tensor, inputs: TensorInputs | None) -> float:
    """``tr(dW H dW^T)``: the mean squared output error per token on the calibration inputs."""
    if inputs is None:
        return float("nan")
    delta = (approx - weight).to(torch.float32)
    return float(((delta @ inputs.hessian) * delta).sum())
