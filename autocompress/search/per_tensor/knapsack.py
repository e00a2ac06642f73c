"""Multiple-choice knapsack over (tensor, level) tables: minimise sum_t v[t, x_t] s.t. sum_t w[t, x_t] <= cap.

Two solvers:

* :class:`HullSweep` -- the Lagrangian relaxation (HAWQ-V3 / ModelOpt AutoQuantize / llama.cpp
  ``--target-bpw`` allocate this way). Each tensor's levels reduce to their lower convex hull in
  (bytes, value); sorting all hull segments by value saved per byte gives, as prefixes, the solutions of
  ``min v + lambda w`` for every lambda at once. A budget takes the longest prefix that fits, then a greedy
  fill spends what is left on the best single level switches (any level, hull or not). Exact bytes (no
  bucketing), O(T L log T L) once per table and O(T L) per budget; the gap to the optimum is at most one
  tensor's value range and in practice ~0 with 200 tensors. The samplers' inner loop (many posterior
  draws x budgets per ask) uses it.
  A DP on bucketed bytes was not chosen: rounding 211 tensors' sizes to 1/2000 of the range moves the
  budget by up to ~10 % of the range, more than the hull's gap.
* :func:`solve_exact` -- the 0/1 integer program solved by HiGHS (``scipy.optimize.milp``): exact, for
  ``allocate`` (AutoQuantize solves the same program) and as the reference in tests.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.optimize import Bounds, LinearConstraint, milp


class HullSweep:
    """Lagrangian sweep + greedy fill for one (T, L) value table; ``solve(cap)`` for any number of budgets."""

    def __init__(self, values: np.ndarray, nbytes: np.ndarray, valid: np.ndarray, critical: int = 4):
        T, L = values.shape
        self.critical = critical
        self.V = np.where(valid, values, np.inf)
        self.W = np.where(valid, nbytes, np.inf)
        rows = np.arange(T)
        # start: the cheapest level, the lowest value among equally cheap ones
        wmin = self.W.min(axis=1, keepdims=True)
        start = np.where(self.W == wmin, self.V, np.inf).argmin(axis=1)
        cur = start.copy()
        seg_t, seg_level, seg_db, seg_slope, seg_pos = [], [], [], [], []
        active = np.ones(T, dtype=bool)
        prev = np.full(T, np.inf)
        for pos in range(L):
            dv = self.V[rows, cur][:, None] - self.V  # value saved by moving to each level
            db = self.W - self.W[rows, cur][:, None]  # bytes it costs
            with np.errstate(divide="ignore", invalid="ignore"):
                slope = np.where((db > 0) & (dv > 0) & np.isfinite(self.V), dv / db, -np.inf)
            best = np.minimum(slope.max(axis=1), prev)  # convex: slopes never rise (rounding of collinear points)
            # steepest next hull point; among equal slopes the nearest (keeps collinear points)
            nxt = np.where(slope >= best[:, None] * (1 - 1e-12), db, np.inf).argmin(axis=1)
            move = active & (best > 0)
            if not move.any():
                break
            t = np.flatnonzero(move)
            seg_t.append(t)
            seg_level.append(nxt[t])
            seg_db.append(db[t, nxt[t]])
            seg_slope.append(best[t])
            seg_pos.append(np.full(len(t), pos))
            cur = np.where(move, nxt, cur)
            prev = np.where(move, best, prev)
            active = move
        self.start = start.astype(np.int16)
        self.base = float(self.W[rows, start].sum())
        if seg_t:
            seg = [np.concatenate(a) for a in (seg_t, seg_level, seg_db, seg_slope, seg_pos)]
            t_all, lvl, db_all, slope_all, pos_all = seg
            order = np.lexsort((pos_all, t_all, -slope_all))  # steepest first; ties by tensor, then hull position
            self.seg_t, self.seg_level, self.seg_pos = t_all[order], lvl[order], pos_all[order]
            self.cum = np.cumsum(db_all[order])
        else:
            self.seg_t = self.seg_level = self.seg_pos = np.zeros(0, dtype=int)
            self.cum = np.zeros(0)

    def solve(self, cap: float, fill: bool = True, critical: int | None = None) -> np.ndarray | None:
        """Levels within ``cap`` bytes (the chosen tensors' bytes only); None if even the cheapest exceeds it.

        Besides the longest fitting prefix, the next ``critical`` segments that do not fit are each forced
        in, paying for them with the prefix's least efficient segments of other tensors (a big tensor's
        step -- the embedding is ~1/4 of SmolLM2's bytes -- can be worth many small ones); after the greedy
        fill, the lowest value wins."""
        if cap < self.base * (1 - 1e-12):
            return None
        room = cap - self.base
        k = int(np.searchsorted(self.cum, room, side="right"))
        best = self._levels(np.arange(k))
        if fill:
            best = self.fill(best, cap)
        if not fill or k >= len(self.cum):
            return best.astype(np.int16)
        rows = np.arange(len(best))
        best_value = float(self.V[rows, best].sum())
        db = np.diff(self.cum, prepend=0.0)
        for j in range(k, min(k + (self.critical if critical is None else critical), len(self.cum))):
            if db[j] > room:
                continue
            keep = np.ones(j + 1, dtype=bool)
            other = np.flatnonzero(self.seg_t[:j] != self.seg_t[j])[::-1]  # least efficient first
            excess = self.cum[j] - room
            need = int(np.searchsorted(np.cumsum(db[other]), excess, side="left")) + 1
            if need > len(other):
                continue
            keep[other[:need]] = False
            # a tensor losing a segment loses its later ones too (they come later in the order)
            lost = np.zeros(len(best), dtype=bool)
            for t in np.unique(self.seg_t[other[:need]]):
                pos = self.seg_pos[other[:need]][self.seg_t[other[:need]] == t].min()
                lost[t] = True
                keep &= ~((self.seg_t[: j + 1] == t) & (self.seg_pos[: j + 1] >= pos))
            x = self.fill(self._levels(np.flatnonzero(keep)), cap)
            value = float(self.V[rows, x].sum())
            if value < best_value and float(self.W[rows, x].sum()) <= cap:
                best, best_value = x, value
        return best.astype(np.int16)

    def _levels(self, taken: np.ndarray) -> np.ndarray:
        """Levels after taking the given segments (indices into the order, per tensor a prefix of its hull)."""
        x = self.start.astype(np.int64)
        if len(taken):
            last = np.full(len(x), -1)
            last[self.seg_t[taken]] = taken  # later writes win: the furthest segment of each tensor
            has = last >= 0
            x[has] = self.seg_level[last[has]]
        return x

    def fill(self, x: np.ndarray, cap: float) -> np.ndarray:
        """Greedy fill: while some single level switch fits the remaining bytes and lowers the value, take
        the one that lowers it most."""
        rows = np.arange(len(x))
        x = x.copy()
        for _ in range(len(x)):
            rem = cap - float(self.W[rows, x].sum())
            gain = self.V[rows, x][:, None] - self.V
            cost = self.W - self.W[rows, x][:, None]
            gain = np.where((cost <= rem) & (gain > 0) & np.isfinite(gain), gain, 0.0)
            flat = int(gain.argmax())
            if gain.flat[flat] <= 0:
                break
            x[flat // gain.shape[1]] = flat % gain.shape[1]
        return x


def solve_exact(
    values: np.ndarray, nbytes: np.ndarray, valid: np.ndarray, cap: float, time_limit: float = 60.0
) -> np.ndarray | None:
    """The optimum by HiGHS' branch and bound (``scipy.optimize.milp``); None if nothing fits ``cap``."""
    T, L = values.shape
    idx = np.flatnonzero(valid.ravel())
    t_of = idx // L
    wmin = np.where(valid, nbytes, np.inf).min(axis=1)
    if cap < wmin.sum() * (1 - 1e-12):
        return None
    # well-scaled: bytes above each tensor's cheapest level, over the budget's headroom
    w = nbytes.ravel()[idx] - wmin[t_of]
    head = max(cap - wmin.sum(), 0.0)
    scale = max(head, float(w.max()), 1e-300)
    v = values.ravel()[idx]
    vscale = max(float(np.abs(v).max()), 1e-300)
    one_each = sparse.csr_array((np.ones(len(idx)), (t_of, np.arange(len(idx)))), shape=(T, len(idx)))
    res = milp(
        v / vscale,
        integrality=np.ones(len(idx)),
        bounds=Bounds(0, 1),
        constraints=[LinearConstraint(one_each, 1, 1), LinearConstraint(w[None, :] / scale, -np.inf, head / scale)],
        options={"time_limit": time_limit, "mip_rel_gap": 1e-6},
    )
    if res.x is None:
        raise RuntimeError(f"solve_exact: HiGHS found no solution ({res.message})")
    chosen = idx[res.x > 0.5]
    x = np.empty(T, dtype=np.int16)
    x[chosen // L] = chosen % L
    # HiGHS' feasibility tolerance may round a hair over the budget: repair by the cheapest exact step down
    rows = np.arange(T)
    while nbytes[rows, x].sum() > cap:
        down = np.where(valid & (nbytes < nbytes[rows, x][:, None]), values - values[rows, x][:, None], np.inf)
        flat = int(down.argmin())
        x[flat // L] = flat % L
    return x
