"""``evopress``: EvoPress-style evolutionary search per size target (Sieberling et al., arXiv 2410.14649).

One parent per target: the best measured trial within it and close to it (``window``; elitist: an
offspring replaces the parent when its full evaluation is better), or at first the best uniform
configuration under it (or the proxy allocation). Each ask serves the next target in turn: ``offspring``
children by level-switch mutation that
keeps the budget (raise 1-3 tensors one level -- or switch to another level of the same size -- then lower
random other tensors one level, preferring steps close to the bytes still over, until within the budget;
children with more than ``max_changes`` switches or that give back much more than they took are redrawn),
then multi-step selection: every child scored by ``screener(params, tokens)`` on few tokens, the best ones
again on more tokens, and so on; the last stage's best is the proposal. Without a screener the additive
model's prediction is the selection (one step).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from autocompress.search.per_tensor.additive import ModelOptions
from autocompress.search.per_tensor.base import History, PerTensorSampler
from autocompress.search.per_tensor.knapsack import HullSweep
from autocompress.search.per_tensor.problem import LevelProblem, best_uniform, key
from autocompress.search.per_tensor.surrogate import ModelMixin

Screener = Callable[[dict[str, str], int], float]


class EvoPressSampler(ModelMixin, PerTensorSampler):
    name = "evopress"

    @dataclass(frozen=True)
    class Options:
        offspring: int = 16
        stages: tuple[tuple[int, int], ...] = ((512, 4), (2048, 1))  # (tokens, survivors) per selection step
        max_flips: int = 3  # raises per child: min of two uniform draws in [1, max_flips]
        lateral: float = 0.2  # chance a raise is a switch to another level of the same size
        max_changes: int = 10
        min_fill: float = 0.8  # bytes raised / bytes lowered below this: redraw the child
        init: str = "uniform"  # first parent: "uniform" (best uniform level) or "proxy" (allocation)
        budgets: int = 4  # spread budgets to evolve at when the problem has no size targets
        window: float = 0.05  # parents: trials within the budget and this share of the range below
        model: ModelOptions = field(default_factory=ModelOptions)

        def __post_init__(self) -> None:
            if isinstance(self.model, dict):
                object.__setattr__(self, "model", ModelOptions(**self.model))
            object.__setattr__(self, "stages", tuple(tuple(int(v) for v in s) for s in self.stages))
            if not self.stages or self.stages[-1][1] != 1 or any(s[0] <= 0 or s[1] <= 0 for s in self.stages):
                raise ValueError(
                    "evopress: stages must be (tokens > 0, survivors > 0) pairs ending in 1 survivor, "
                    f"got {self.stages}"
                )
            if self.init not in ("uniform", "proxy"):
                raise ValueError(f"evopress: init must be 'uniform' or 'proxy', got {self.init!r}")
            if self.offspring < 1 or self.max_flips < 1 or self.max_changes < 1:
                raise ValueError("evopress: offspring, max_flips and max_changes must be >= 1")

    def __init__(
        self, problem: LevelProblem, seed: int | None = None, screener: Screener | None = None, **options: Any
    ):
        super().__init__(problem, seed, **options)
        self.screener = screener
        self.screen_calls = 0
        self.screen_tokens = 0
        self.screen_seconds = 0.0
        enc = self.enc
        W = np.where(enc.valid, enc.nbytes, np.nan)
        # per tensor and level: the levels one step up / down in bytes, and those of the same size
        self._up: list[list[list[int]]] = []
        self._down: list[list[list[int]]] = []
        self._same: list[list[list[int]]] = []
        for t in range(len(enc.params)):
            sizes = sorted(set(W[t, : enc.counts[t]].tolist()))
            by_size = {s: [lv for lv in range(enc.counts[t]) if W[t, lv] == s] for s in sizes}
            up, down, same = [], [], []
            for lv in range(enc.counts[t]):
                i = sizes.index(W[t, lv])
                up.append(by_size[sizes[i + 1]] if i + 1 < len(sizes) else [])
                down.append(by_size[sizes[i - 1]] if i > 0 else [])
                same.append([m for m in by_size[W[t, lv]] if m != lv])
            self._up.append(up)
            self._down.append(down)
            self._same.append(same)

    def targets(self) -> tuple[float, ...]:
        if self.problem.size_targets:
            return tuple(sorted(self.clamp(b) for b in self.problem.size_targets))
        k = self.options.budgets
        return tuple(self.lo + (self.hi - self.lo) * (i + 1) / (k + 1) for i in range(k))

    def propose(self, study: optuna.Study, trial: FrozenTrial, hist: History, rng: np.random.Generator) -> np.ndarray:
        targets = self.targets()
        budget = targets[trial.number % len(targets)]
        parent = self._parent(hist, budget)
        if parent is None:  # nothing measured within this target yet: start from the initial configuration
            parent = self._initial(hist, budget)
            if key(parent) not in hist.seen:
                return parent
        children = self._offspring(parent, budget, hist, rng)
        if not children:
            return self._random_new(parent, hist, rng)
        return self._select(children, hist)

    # ---- parents and children ----------------------------------------------------------------------------
    def _parent(self, hist: History, budget: float) -> np.ndarray | None:
        """The best measured trial within the budget and close to it (``window`` of the range below)."""
        low = budget - self.options.window * (self.hi - self.lo)
        ok = np.flatnonzero((hist.bytes <= budget * (1 + 1e-12)) & (hist.bytes >= low))
        if not ok.size:
            return None
        return hist.X[ok[np.argmin(hist.y[ok])]]  # first best by trial number on ties

    def _initial(self, hist: History, budget: float) -> np.ndarray:
        enc = self.enc
        proxy = np.where(enc.valid, enc.proxy, np.inf) if enc.has_proxy.all() else None
        if self.options.init == "uniform" or proxy is None:
            x = best_uniform(enc, budget, table=proxy)
            if x is not None:
                return x
        table = proxy if proxy is not None else np.where(enc.valid, -enc.nbytes, np.inf)
        x = HullSweep(table, enc.nbytes, enc.valid).solve(budget - self.problem.fixed_bytes)
        return x if x is not None else enc.min_config.copy()

    def _offspring(
        self, parent: np.ndarray, budget: float, hist: History, rng: np.random.Generator
    ) -> list[np.ndarray]:
        o = self.options
        children: list[np.ndarray] = []
        keys = {key(parent)}
        for _ in range(50 * o.offspring):
            if len(children) >= o.offspring:
                break
            child = self._mutate(parent, budget, rng)
            if child is None:
                continue
            k = key(child)
            if k in keys or k in hist.seen:
                continue
            keys.add(k)
            children.append(child)
        return children

    def _mutate(self, parent: np.ndarray, budget: float, rng: np.random.Generator) -> np.ndarray | None:
        o, enc = self.options, self.enc
        x = parent.copy()
        cap = budget - self.problem.fixed_bytes
        used = float(enc.nbytes[np.arange(len(x)), x].sum())
        flips = min(int(rng.integers(1, o.max_flips + 1)), int(rng.integers(1, o.max_flips + 1)))
        raised: list[int] = []
        added = removed = 0.0
        for _ in range(flips):
            t = int(rng.integers(len(x)))
            lateral = self._same[t][x[t]] and rng.random() < o.lateral
            options = self._same[t][x[t]] if lateral else self._up[t][x[t]]
            if not options:
                continue
            new = options[int(rng.integers(len(options)))]
            added += enc.nbytes[t, new] - enc.nbytes[t, x[t]]
            used += enc.nbytes[t, new] - enc.nbytes[t, x[t]]
            x[t] = new
            raised.append(t)
        if not raised:
            return None
        changes = len(raised)
        while used > cap:
            over = used - cap
            can = np.array([t for t in range(len(x)) if self._down[t][x[t]] and t not in raised])
            if not can.size or changes >= o.max_changes:
                return None
            step = np.array([enc.nbytes[t, x[t]] - enc.nbytes[t, self._down[t][x[t]][0]] for t in can])
            weight = np.minimum(step, over) / np.maximum(step, over)  # steps close to what is over first
            t = int(can[rng.choice(len(can), p=weight / weight.sum())])
            new = self._down[t][x[t]][int(rng.integers(len(self._down[t][x[t]])))]
            removed += enc.nbytes[t, x[t]] - enc.nbytes[t, new]
            used -= enc.nbytes[t, x[t]] - enc.nbytes[t, new]
            x[t] = new
            changes += 1
        if removed > 0 and added / removed < o.min_fill:
            return None
        return x

    # ---- selection ---------------------------------------------------------------------------------------
    def _select(self, children: list[np.ndarray], hist: History) -> np.ndarray:
        if self.screener is None:
            model = self.model(hist, self.options.model)
            scores = model.predict(np.array(children))
            return children[int(np.argmin(scores))]
        alive = children
        for tokens, survivors in self.options.stages:
            screened = [self._screen(x, tokens) for x in alive]
            order = np.argsort(screened, kind="stable")[:survivors]
            alive = [alive[i] for i in order]
        return alive[0]

    def _screen(self, x: np.ndarray, tokens: int) -> float:
        assert self.screener is not None
        t0 = time.perf_counter()
        try:
            value = float(self.screener(self.enc.decode(x), tokens))
        finally:
            self.screen_seconds += time.perf_counter() - t0
            self.screen_calls += 1
            self.screen_tokens += tokens
        return value if math.isfinite(value) else math.inf

    def _random_new(self, x: np.ndarray, hist: History, rng: np.random.Generator) -> np.ndarray:
        """No new child within the budget: random single switches of the parent until untried."""
        enc = self.enc
        for _ in range(1000):
            if key(x) not in hist.seen:
                return x
            x = x.copy()
            t = int(rng.integers(len(x)))
            x[t] = rng.integers(enc.counts[t])
        return x
