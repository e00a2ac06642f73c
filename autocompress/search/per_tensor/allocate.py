"""``allocate``: the sensitivity allocation solved exactly under each budget with the fixed proxy.

The ModelOpt AutoQuantize / HAWQ-V3 way: a per-(tensor, level) score (here the problem's proxy: Fisher or
GPTQ output error) is taken as additive, and ``min sum proxy s.t. sum bytes <= budget`` is solved exactly
(HiGHS, :func:`.knapsack.solve_exact`). No learning: proposals sweep the size targets, then a refining
grid of budgets over the whole range (van der Corput: 1/2, 1/4, 3/4, ...); a budget whose allocation was
already tried is skipped. A baseline for benchmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from autocompress.search.per_tensor.base import History, PerTensorSampler
from autocompress.search.per_tensor.front import van_der_corput
from autocompress.search.per_tensor.knapsack import HullSweep, solve_exact
from autocompress.search.per_tensor.problem import LevelProblem, key


class AllocateSampler(PerTensorSampler):
    name = "allocate"

    @dataclass(frozen=True)
    class Options:
        exact: bool = True  # HiGHS; False: the Lagrangian sweep + greedy fill
        time_limit: float = 30.0  # seconds per exact solve
        max_budgets: int = 512  # budgets tried per ask before falling back to random switches

    def __init__(self, problem: LevelProblem, seed: int | None = None, **options: Any):
        super().__init__(problem, seed, **options)
        missing = [t.param for t in problem.tensors if t.proxy is None]
        if missing:
            raise ValueError(f"allocate: needs a proxy for every tensor; {missing[0]} has none")
        self._table = np.where(self.enc.valid, self.enc.proxy, np.inf)
        self._solved: dict[float, np.ndarray | None] = {}
        self._sweep = HullSweep(self._table, self.enc.nbytes, self.enc.valid)

    def budget(self, i: int) -> float:
        """The i-th budget of the sweep: the size targets (ascending), then the refining grid."""
        targets = sorted(self.clamp(b) for b in self.problem.size_targets)
        if i < len(targets):
            return targets[i]
        return self.lo + (self.hi - self.lo) * van_der_corput(i - len(targets) + 1)

    def allocation(self, budget: float) -> np.ndarray | None:
        if budget not in self._solved:
            cap = budget - self.problem.fixed_bytes
            self._solved[budget] = (
                solve_exact(self._table, self.enc.nbytes, self.enc.valid, cap, self.options.time_limit)
                if self.options.exact
                else self._sweep.solve(cap)
            )
        return self._solved[budget]

    def propose(self, study: optuna.Study, trial: FrozenTrial, hist: History, rng: np.random.Generator) -> np.ndarray:
        for i in range(self.options.max_budgets):
            x = self.allocation(self.budget(i))
            if x is not None and key(x) not in hist.seen:
                return x
        x = self.enc.min_config.copy()  # every budget tried: random single switches until untried
        for _ in range(1000):
            if key(x) not in hist.seen:
                break
            t = int(rng.integers(len(x)))
            x = x.copy()
            x[t] = rng.integers(self.enc.counts[t])
        return x
