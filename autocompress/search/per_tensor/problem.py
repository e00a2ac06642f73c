"""The per-tensor level problem the samplers search (issue 18, item 4).

Every compressible tensor is one categorical Optuna parameter whose choices are *levels* (``method/TYPE``);
each level has exact stored bytes and, where known, a cheap error proxy (GPTQ output error, Fisher).
:class:`Encoding` turns parameter dicts into index vectors and holds the padded (tensor x level) arrays the
knapsack solvers and the additive model work on.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class TensorChoice:
    """One tensor's categorical parameter: its levels (the space's order), bytes and proxy error per level."""

    param: str
    levels: tuple[str, ...]
    nbytes: tuple[float, ...]
    proxy: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        if not self.levels:
            raise ValueError(f"{self.param}: no levels")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"{self.param}: levels repeat: {list(self.levels)}")
        if len(self.nbytes) != len(self.levels):
            raise ValueError(f"{self.param}: {len(self.nbytes)} byte sizes for {len(self.levels)} levels")
        if not all(math.isfinite(b) and b >= 0 for b in self.nbytes):
            raise ValueError(f"{self.param}: byte sizes must be finite and >= 0, got {list(self.nbytes)}")
        if self.proxy is not None:
            if len(self.proxy) != len(self.levels):
                raise ValueError(f"{self.param}: {len(self.proxy)} proxy values for {len(self.levels)} levels")
            if not all(math.isfinite(p) and p >= 0 for p in self.proxy):
                raise ValueError(f"{self.param}: proxy values must be finite and >= 0, got {list(self.proxy)}")


@dataclass(frozen=True)
class LevelProblem:
    """What a per-tensor sampler needs: the tensors' choices, bytes it does not choose, the accuracy objective
    (an index into the study's values, minimised) and total-byte budgets to aim at (may be empty)."""

    tensors: tuple[TensorChoice, ...]
    fixed_bytes: float = 0.0
    accuracy_objective: int = 0
    size_targets: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.tensors:
            raise ValueError("LevelProblem: no tensors")
        names = [t.param for t in self.tensors]
        if len(set(names)) != len(names):
            raise ValueError(
                f"LevelProblem: parameter names repeat: {sorted(n for n in set(names) if names.count(n) > 1)}"
            )
        if not (math.isfinite(self.fixed_bytes) and self.fixed_bytes >= 0):
            raise ValueError(f"LevelProblem: fixed_bytes must be finite and >= 0, got {self.fixed_bytes}")
        if self.accuracy_objective < 0:
            raise ValueError(f"LevelProblem: accuracy_objective must be >= 0, got {self.accuracy_objective}")
        if not all(math.isfinite(b) and b > 0 for b in self.size_targets):
            raise ValueError(f"LevelProblem: size_targets must be finite and > 0, got {list(self.size_targets)}")

    def total_bytes(self, params: Mapping[str, str]) -> float:
        """Bytes of the model a parameter dict describes (fixed bytes included)."""
        total = self.fixed_bytes
        for t in self.tensors:
            if t.param not in params:
                raise ValueError(f"total_bytes: parameter {t.param} missing")
            try:
                total += t.nbytes[t.levels.index(params[t.param])]
            except ValueError:
                raise ValueError(f"total_bytes: {t.param} has no level {params[t.param]!r}") from None
        return total

    @property
    def min_bytes(self) -> float:
        return self.fixed_bytes + sum(min(t.nbytes) for t in self.tensors)

    @property
    def max_bytes(self) -> float:
        return self.fixed_bytes + sum(max(t.nbytes) for t in self.tensors)


@dataclass
class Encoding:
    """Padded arrays of a :class:`LevelProblem`: configurations are int16 vectors of level indices.

    ``nbytes`` is +inf and ``proxy`` NaN where a tensor has fewer levels than the widest one.
    """

    problem: LevelProblem
    nbytes: np.ndarray = field(init=False)  # (T, L) float64
    proxy: np.ndarray = field(init=False)  # (T, L) float64, NaN where unknown
    valid: np.ndarray = field(init=False)  # (T, L) bool
    counts: np.ndarray = field(init=False)  # (T,) levels per tensor
    names: tuple[str, ...] = field(init=False)  # distinct level names, sorted
    name_id: np.ndarray = field(init=False)  # (T, L) index into names, -1 where invalid

    def __post_init__(self) -> None:
        tensors = self.problem.tensors
        T, L = len(tensors), max(len(t.levels) for t in tensors)
        self.nbytes = np.full((T, L), np.inf)
        self.proxy = np.full((T, L), np.nan)
        self.counts = np.array([len(t.levels) for t in tensors])
        self.valid = np.arange(L)[None, :] < self.counts[:, None]
        self.names = tuple(sorted({lvl for t in tensors for lvl in t.levels}))
        index = {n: i for i, n in enumerate(self.names)}
        self.name_id = np.full((T, L), -1)
        self._lookup = [{lvl: j for j, lvl in enumerate(t.levels)} for t in tensors]
        for i, t in enumerate(tensors):
            n = len(t.levels)
            self.nbytes[i, :n] = t.nbytes
            if t.proxy is not None:
                self.proxy[i, :n] = t.proxy
            self.name_id[i, :n] = [index[lvl] for lvl in t.levels]
        self.params = tuple(t.param for t in tensors)
        self.min_config = np.where(self.valid, self.nbytes, np.inf).argmin(axis=1).astype(np.int16)
        self.max_config = np.where(self.valid, self.nbytes, -np.inf).argmax(axis=1).astype(np.int16)

    @property
    def shape(self) -> tuple[int, int]:
        return self.nbytes.shape

    @property
    def has_proxy(self) -> np.ndarray:
        return np.array([t.proxy is not None for t in self.problem.tensors])

    def encode(self, params: Mapping[str, object]) -> np.ndarray | None:
        """Level indices of a parameter dict; None if a tensor parameter is missing or not one of its levels."""
        x = np.empty(len(self.params), dtype=np.int16)
        for i, (name, lookup) in enumerate(zip(self.params, self._lookup)):
            value = params.get(name)
            j = lookup.get(value) if isinstance(value, str) else None
            if j is None:
                return None
            x[i] = j
        return x

    def decode(self, x: np.ndarray) -> dict[str, str]:
        return {t.param: t.levels[int(j)] for t, j in zip(self.problem.tensors, x)}

    def bytes_of(self, X: np.ndarray) -> np.ndarray:
        """Total bytes (fixed included) of one configuration (T,) or many (n, T)."""
        X = np.asarray(X)
        rows = np.arange(X.shape[-1])
        return self.problem.fixed_bytes + self.nbytes[rows, X].sum(axis=-1)

    def value_of(self, table: np.ndarray, X: np.ndarray) -> np.ndarray:
        """Sum over tensors of a (T, L) table at configuration(s) X."""
        X = np.asarray(X)
        return table[np.arange(X.shape[-1]), X].sum(axis=-1)


def key(x: np.ndarray) -> bytes:
    """A hashable, process-independent key of a configuration (for membership tests only, never iteration)."""
    return np.asarray(x, dtype=np.int16).tobytes()


def uniform_configs(enc: Encoding) -> list[np.ndarray]:
    """One configuration per level name: tensors offering it take it, the others the level whose share of
    their largest size is closest to that name's median share (llama.cpp-style "every tensor at TYPE")."""
    share = np.where(enc.valid, enc.nbytes, np.nan) / np.where(enc.valid, enc.nbytes, -np.inf).max(
        axis=1, keepdims=True
    )
    configs = []
    for n in range(len(enc.names)):
        has = enc.name_id == n
        target = float(np.median(share[has]))
        closest = np.where(enc.valid, np.abs(share - target) - 1e-9 * share, np.inf).argmin(axis=1)  # ties: larger
        x = np.where(has.any(axis=1), has.argmax(axis=1), closest).astype(np.int16)
        configs.append(x)
    return configs


def best_uniform(enc: Encoding, budget: float, table: np.ndarray | None = None) -> np.ndarray | None:
    """The uniform configuration within ``budget`` total bytes with the lowest error per ``table`` (T, L)
    (default: the largest); None if none fits."""
    configs = uniform_configs(enc)
    sizes = [float(enc.bytes_of(x)) for x in configs]
    fits = [i for i, s in enumerate(sizes) if s <= budget * (1 + 1e-12)]
    if not fits:
        return None
    score = (lambda i: float(enc.value_of(table, configs[i]))) if table is not None else (lambda i: -sizes[i])
    return configs[min(fits, key=lambda i: (score(i), i))]
