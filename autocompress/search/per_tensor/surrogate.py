"""``surrogate``: Thompson sampling on an online additive error model, proposals by knapsack (issue 18).

Each ask: bring the additive model (:mod:`.additive`) up to date with the finished trials, draw the error
table from its posterior (tempered: ``exploration`` 0.5 halves a draw's spread around the mean; measured
better than plain Thompson sampling, see the module's benchmark), and

* at a size target (``target_share`` of the asks, targets in turn): propose the draw's knapsack optimum
  under the target (:class:`.knapsack.HullSweep`), or, if that configuration was already tried, the draw's
  best untried configuration among other draws' optima and single-level switches under the target;
* otherwise pre-screen many candidates -- the draw's knapsack optima over a grid of budgets across the whole
  range, and single-level switches of measured front points -- and propose the one whose predicted
  (bytes, KL) most increases the measured front's hypervolume (log KL; :mod:`.front`).

Before ``startup`` x tensors finished trials (the plan: 2 T / 10) the model is barely fitted: proposals
are proxy allocations (the posterior mean's knapsack optimum) over the budget schedule, or a posterior
draw's when the mean's was tried; without proxies, the uniform configurations first. This is Thompson
sampling for constrained/multi-objective search (cf. TSEMO, Bradford et al. 2018) with EvoPress's
per-level database view (arXiv 2410.14649) and AMQ's predictor-screened candidates (EMNLP 2025).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from autocompress.search.per_tensor.additive import AdditiveModel, ModelOptions
from autocompress.search.per_tensor.base import History, PerTensorSampler
from autocompress.search.per_tensor.front import budget_schedule, hv_gain, pareto_indices
from autocompress.search.per_tensor.knapsack import HullSweep
from autocompress.search.per_tensor.problem import Encoding, LevelProblem, best_uniform, key, uniform_configs


class ModelMixin:
    """An :class:`AdditiveModel` kept up to date with a study's finite trials (fed in trial-number order)."""

    enc: Any
    problem: LevelProblem
    _study_key: Any

    def model(self, hist: History, options: ModelOptions) -> AdditiveModel:
        if getattr(self, "_model_key", None) != self._study_key:
            self._model, self._fed, self._model_key = AdditiveModel(self.enc, options), set[int](), self._study_key
        new = [i for i, number in enumerate(hist.numbers) if number not in self._fed]
        if new:
            self._model.add(hist.X[new], hist.y[new])
            self._fed.update(int(hist.numbers[i]) for i in new)
        return self._model

    def rank_correlation(
        self, held_out_trials: Sequence[FrozenTrial], fit_on: Sequence[FrozenTrial] | None = None
    ) -> float:
        """Spearman rho of the model's predicted vs the measured accuracy objective on ``held_out_trials``
        (trials the model was not fitted on): by default the model as of the last ask; with ``fit_on``, a
        fresh model fitted on those trials only."""
        X, y = self._arrays(held_out_trials)
        if fit_on is not None:
            model = AdditiveModel(self.enc, self.options.model)  # type: ignore[attr-defined]
            Xf, yf = self._arrays(fit_on)
            if len(yf):
                model.add(Xf, yf)
        else:
            model = getattr(self, "_model", None) or AdditiveModel(self.enc, self.options.model)  # type: ignore[attr-defined]
        return model.rank_correlation(X, y) if len(y) else math.nan

    def _arrays(self, trials: Sequence[FrozenTrial]) -> tuple[np.ndarray, np.ndarray]:
        k = self.problem.accuracy_objective
        rows = [
            (x, float(t.values[k]))
            for t in trials
            if t.values is not None
            and len(t.values) > k
            and math.isfinite(t.values[k])
            and (x := self.enc.encode(t.params)) is not None
        ]
        X = np.array([r[0] for r in rows], dtype=np.int16).reshape(-1, len(self.enc.params))
        return X, np.array([r[1] for r in rows])


class SurrogateSampler(ModelMixin, PerTensorSampler):
    name = "surrogate"

    @dataclass(frozen=True)
    class Options:
        startup: float = 0.2  # model-free (proxy) asks: this x tensors finished trials
        min_startup: int = 4
        draws: int = 1  # posterior draws per ask
        target_share: float = 0.5  # share of asks aimed at a size target (when the problem has any)
        grid: int = 24  # budgets per draw for front candidates
        neighbours: int = 8  # measured front points whose single switches are candidates
        exploration: float = 0.5  # posterior draws' spread around the mean (1: Thompson sampling)
        model: ModelOptions = field(default_factory=ModelOptions)

        def __post_init__(self) -> None:
            if isinstance(self.model, dict):
                object.__setattr__(self, "model", ModelOptions(**self.model))
            if not 0 <= self.target_share <= 1:
                raise ValueError(f"surrogate: target_share must be in [0, 1], got {self.target_share}")

    def propose(self, study: optuna.Study, trial: FrozenTrial, hist: History, rng: np.random.Generator) -> np.ndarray:
        o = self.options
        model = self.model(hist, o.model)
        targets = tuple(sorted(self.clamp(t) for t in self.problem.size_targets))
        budget = self.clamp(budget_schedule(trial.number, targets, self.lo, self.hi, o.target_share))
        at_target = budget in targets
        startup = max(o.min_startup, math.ceil(o.startup * len(self.enc.params)))
        if hist.n < startup or not np.isfinite(hist.y).any():
            return self._startup(model, budget, hist, rng)
        mean, tables = model.posterior(rng, o.draws)
        if o.exploration != 1.0:  # tempered Thompson sampling: draws pulled toward the mean
            valid = self.enc.valid[None]
            m = np.where(valid, mean[None], 0.0)
            tables = np.where(valid, m + o.exploration * (np.where(valid, tables, 0.0) - m), np.inf)
        if at_target:
            x = self._best_under(tables, budget, hist, rng)
        else:
            x = self._front_gain(tables, hist, rng)
            if x is None:
                x = self._best_under(tables, budget, hist, rng)
        return x if x is not None else self._fallback(budget, hist, rng)

    # ---- proposals ---------------------------------------------------------------------------------------
    def _startup(self, model: AdditiveModel, budget: float, hist: History, rng: np.random.Generator) -> np.ndarray:
        cap = budget - self.problem.fixed_bytes
        if not model.proxy_mode:  # learn the level names' errors from uniform configurations first
            x = best_uniform(self.enc, budget)
            if x is not None and key(x) not in hist.seen:
                return x
            for x in sorted(uniform_configs(self.enc), key=lambda x: abs(float(self.enc.bytes_of(x)) - budget)):
                if key(x) not in hist.seen:
                    return x
        x = HullSweep(model.mean_table(), self.enc.nbytes, self.enc.valid).solve(cap)
        if x is not None and key(x) not in hist.seen:
            return x
        for table in model.draw_tables(rng, 4):  # the mean's allocation was tried: a posterior draw's
            x = HullSweep(table, self.enc.nbytes, self.enc.valid).solve(cap)
            if x is not None and key(x) not in hist.seen:
                return x
        return self._fallback(budget, hist, rng)

    def _best_under(
        self, tables: np.ndarray, budget: float, hist: History, rng: np.random.Generator
    ) -> np.ndarray | None:
        """The lowest predicted error within ``budget`` among the draws' optima and their single switches."""
        cap = budget - self.problem.fixed_bytes
        cands, scores = [], []
        for table in tables:
            x = HullSweep(table, self.enc.nbytes, self.enc.valid).solve(cap)
            if x is None:
                continue
            if key(x) not in hist.seen:
                cands.append(x)
                scores.append(float(self.enc.value_of(table, x)))
                continue
            bases = [x] + [hist.X[i] for i in self._front(hist) if hist.bytes[i] <= budget][-self.options.neighbours :]
            nx, ns = self._switches(bases, table, hist, budget)
            if nx is not None:
                cands.append(nx)
                scores.append(ns)
        if not cands:
            return None
        return cands[int(np.argmin(scores))]

    def _front_gain(self, tables: np.ndarray, hist: History, rng: np.random.Generator) -> np.ndarray | None:
        """The candidate whose predicted point adds the most hypervolume to the measured front."""
        enc, lo, span = self.enc, self.lo, max(self.hi - self.lo, 1e-300)
        front = self._front(hist)
        floor = max(float(hist.y[hist.y > 0].min()) if (hist.y > 0).any() else 1e-12, 1e-300) * 0.1
        fb = (hist.bytes[front] - lo) / span
        fk = np.log(np.maximum(hist.y[front], floor))
        ref_b, ref_k = 1.0 + 1e-9, float(np.log(max(hist.y.max(), floor))) + math.log(2.0)
        budgets = np.concatenate(
            [
                lo + span * (np.arange(self.options.grid) + rng.random()) / self.options.grid,
                np.array(sorted(self.problem.size_targets)),
            ]
        )
        picks = sorted(rng.permutation(len(front))[: self.options.neighbours])
        bases = [hist.X[front[i]] for i in picks]
        best: tuple[float, np.ndarray | None] = (0.0, None)
        for table in tables:
            sweep = HullSweep(table, enc.nbytes, enc.valid)
            # grid budgets: the plain sweep (critical segments only at the targets: 4x the time per solve)
            xs = [
                x
                for b in budgets
                if (
                    x := sweep.solve(
                        self.clamp(b) - self.problem.fixed_bytes, critical=None if b in self.problem.size_targets else 0
                    )
                )
                is not None
            ]
            pool = Pool(enc, table, xs, bases)
            gain = hv_gain(fb, fk, (pool.bytes - lo) / span, np.log(np.maximum(pool.value, floor)), ref_b, ref_k)
            for i in np.argsort(-gain, kind="stable"):
                if gain[i] <= best[0]:
                    break
                x = pool.config(int(i))
                if key(x) not in hist.seen:
                    best = (float(gain[i]), x)
                    break
        return best[1]

    def _front(self, hist: History) -> np.ndarray:
        return pareto_indices(hist.bytes, hist.y)

    def _switches(
        self, bases: list[np.ndarray], table: np.ndarray, hist: History, budget: float
    ) -> tuple[np.ndarray | None, float]:
        """The best untried single-level switch of the bases within ``budget`` by ``table``."""
        pool = Pool(self.enc, table, [], bases)
        score = np.where(pool.bytes <= budget, pool.value, np.inf)
        for i in np.argsort(score, kind="stable"):
            if not np.isfinite(score[i]):
                break
            x = pool.config(int(i))
            if key(x) not in hist.seen:
                return x, float(score[i])
        return None, math.inf

    def _fallback(self, budget: float, hist: History, rng: np.random.Generator) -> np.ndarray:
        """Everything the model suggests was tried: random level switches of the cheapest config until new."""
        enc = self.enc
        x = HullSweep(np.where(enc.valid, -enc.nbytes, np.inf), enc.nbytes, enc.valid).solve(
            budget - self.problem.fixed_bytes
        )
        x = enc.min_config.copy() if x is None else x
        for _ in range(1000):
            if key(x) not in hist.seen:
                return x
            t = int(rng.integers(len(x)))
            x = x.copy()
            x[t] = rng.integers(enc.counts[t])
        return x


class Pool:
    """Candidates: whole configurations, then every single-level switch of each base configuration, with
    their total bytes and value by ``table``, computed as deltas (a switch is materialised on demand)."""

    def __init__(self, enc: Encoding, table: np.ndarray, configs: list[np.ndarray], bases: list[np.ndarray]):
        self.enc, self.configs = enc, configs
        whole = np.array(configs, dtype=np.int16).reshape(-1, len(enc.params))
        bytes_, value = [enc.bytes_of(whole)], [enc.value_of(table, whole)]
        switch_base: list[np.ndarray] = []
        switch_t: list[np.ndarray] = []
        switch_l: list[np.ndarray] = []
        for b, x in enumerate(bases):
            t, lv = np.nonzero(enc.valid & (np.arange(enc.shape[1])[None] != x[:, None]))
            bytes_.append(enc.bytes_of(x) - enc.nbytes[t, x[t]] + enc.nbytes[t, lv])
            value.append(enc.value_of(table, x) - table[t, x[t]] + table[t, lv])
            switch_base.append(np.full(len(t), b))
            switch_t.append(t)
            switch_l.append(lv)
        self.bases = bases
        self.bytes, self.value = np.concatenate(bytes_), np.concatenate(value)
        cat = lambda a: np.concatenate(a) if a else np.zeros(0, dtype=int)  # noqa: E731
        self.switch_base, self.switch_t, self.switch_l = cat(switch_base), cat(switch_t), cat(switch_l)

    def config(self, i: int) -> np.ndarray:
        if i < len(self.configs):
            return self.configs[i]
        j = i - len(self.configs)
        x = self.bases[self.switch_base[j]].copy()
        x[self.switch_t[j]] = self.switch_l[j]
        return x
