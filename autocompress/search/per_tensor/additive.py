"""Online additive error model KL(x) ~ sum_t f_t(x_t), as Bayesian ridge regression in function space.

Prior, per tensor t and level l (proxy shape ``s`` = the proxy normalised to a mean per-tensor error of 1,
``Y`` = the proxy-to-KL scale fitted by non-negative least squares)::

    f_t(l) = Y * ( s_tl (1 + r0 z0 + rn z_name(l) + rd z_t)  +  c_tl u_tl ),   all z, u ~ N(0, 1)

i.e. beta_t * proxy_t(l) with beta_t = Y (1 + r0 z0 + rd z_t) (a common and a per-tensor scale; ``rn``: a
scale per level name shared by all tensors, for a proxy biased for one format) plus a per-(tensor, level)
correction with a ridge prior toward 0 (sd ``c_tl = rc * s_tl + floor``). Without proxies
the shape is "one-hot per level name with shrinkage": f_t(l) = mu_name(l) + Y * rc * u_tl, mu around its NNLS
estimate. Noise: relative misfit ``noise * max(KL, floor)`` (interactions scale with the error).

The posterior is computed in trial space (kernel form of the same ridge regression): K = Y^2 K0 + diag(v) with
K0 grown one row per trial and its Cholesky factor extended in O(n^2), so an ask costs O(n^2 + n T L) rather
than O(P^3) for P = T L coefficients. ``Y``, the mean and the noise floor are re-estimated (and K refactored)
each time the data grow by ``growth``; the relative hyperparameters (noise, rc) are chosen by marginal
likelihood on a small grid while n <= ``evidence_max_n``. Posterior draws (Thompson sampling) use Matheron's
rule: a prior draw corrected by the kernel-weighted residual.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.linalg import cho_solve, cholesky, solve_triangular
from scipy.optimize import nnls

from autocompress.search.per_tensor.problem import Encoding


@dataclass(frozen=True)
class ModelOptions:
    global_scale: float = 0.5  # r0: prior sd of the common proxy scale, relative
    tensor_scale: float = 0.5  # rd: prior sd of each tensor's proxy scale, relative
    name_scale: float = 0.3  # rn: prior sd of each level name's proxy scale (shared by tensors)
    level_correction: float = 0.3  # rc: prior sd of each (tensor, level) correction, relative to its mean
    correction_floor: float = 0.02  # floor of that sd, relative to the mean per-tensor error
    noise: float = 0.05  # sd of the misfit relative to the measured KL
    noise_grid: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.4)
    correction_grid: tuple[float, ...] = (0.1, 0.3, 1.0)
    evidence_max_n: int = 400  # choose (noise, rc) by marginal likelihood while n is at most this
    growth: float = 1.5  # re-estimate scale and mean when the data grow by this factor
    max_trials: int = 3000  # beyond it, keep the most recent 3/4 (memory: ~9 n^2 bytes)


class AdditiveModel:
    """Posterior over per-(tensor, level) errors f (a (T, L) table); ``add`` trials, then ask for the mean
    table or posterior draws. Deterministic: the same additions in the same order give the same numbers."""

    def __init__(self, enc: Encoding, options: ModelOptions = ModelOptions()):
        self.enc, self.opt = enc, options
        T, L = enc.shape
        self.T, self.L = T, L
        has = enc.has_proxy
        self.proxy_mode = bool(has.any()) and float(np.nanmax(enc.proxy)) > 0
        if self.proxy_mode:
            shape = enc.proxy.copy()
            if not has.all():  # impute a missing tensor's proxy by its level name's median among the others
                for t in np.flatnonzero(~has):
                    for lv in range(enc.counts[t]):
                        donors = enc.proxy[has][enc.name_id[has] == enc.name_id[t, lv]]
                        shape[t, lv] = np.median(donors) if donors.size else np.nanmedian(enc.proxy[has])
            per_tensor = np.nanmean(np.where(enc.valid, shape, np.nan), axis=1)
            self.shape = np.where(enc.valid, shape / per_tensor.mean(), 0.0)
            # global features of each (t, l): the proxy (common scale), the proxy per level name
            names = [self.shape * (enc.name_id == k) for k in range(len(enc.names))] if options.name_scale > 0 else []
            self.global_table = np.stack([self.shape, *names])
            self.gsd = np.array([options.global_scale] + [options.name_scale] * len(names))
        else:
            self.shape = np.zeros((T, L))
            self.global_table = np.stack([(enc.name_id == k).astype(float) for k in range(len(enc.names))])
            self.gsd = np.full(len(enc.names), options.global_scale)
        self.m = len(self.global_table)
        self.rc = options.level_correction
        self.noise = options.noise
        cap = 64
        self.X = np.zeros((cap, T), dtype=np.int16)
        self.y = np.zeros(cap)
        self.G = np.zeros((cap, self.m))
        self.Phi = np.zeros((cap, T))
        self.Psi = np.zeros((cap, T * L))
        self.K0 = np.zeros((cap, cap))
        # Cholesky factor of K, Fortran order, padded with an identity block to the capacity: LAPACK then
        # solves with it in place (a leading n x n view would be copied on every solve)
        self.Lc = np.eye(cap, order="F")
        self.n = 0
        self.n_factored = 0
        self.n_refit = 0
        self.Y = 1.0
        self.coef = np.eye(self.m)[0] if self.proxy_mode else np.ones(self.m)  # prior mean: Y shape, or mu per name
        self.floor_y = 0.0

    # ---- data -------------------------------------------------------------------------------------------
    def _c(self) -> np.ndarray:
        """(T, L) prior sd of the corrections, unitless."""
        if self.proxy_mode:
            return np.where(self.enc.valid, self.rc * self.shape + self.opt.correction_floor, 0.0)
        return np.where(self.enc.valid, self.rc, 0.0)

    def _grow(self, need: int) -> None:
        cap = len(self.y)
        if need <= cap:
            return
        new = max(need, cap + cap // 4)  # 1.25x: padded solves cost at most ~1.6x an exact-size one
        for name in ("X", "y", "G", "Phi", "Psi"):
            old = getattr(self, name)
            arr = np.zeros((new,) + old.shape[1:], dtype=old.dtype)
            arr[:cap] = old
            setattr(self, name, arr)
        K0 = np.zeros((new, new))
        K0[:cap, :cap] = self.K0
        self.K0 = K0
        Lc = np.eye(new, order="F")
        Lc[:cap, :cap] = self.Lc
        self.Lc = Lc

    def add(self, X: np.ndarray, y: np.ndarray) -> None:
        """Append trials (configurations (k, T), finite errors (k,))."""
        X, y = np.atleast_2d(np.asarray(X, dtype=np.int16)), np.atleast_1d(np.asarray(y, dtype=float))
        if not np.isfinite(y).all():
            raise ValueError("AdditiveModel.add: errors must be finite")
        if self.n + len(y) > self.opt.max_trials:
            keep = max(self.opt.max_trials * 3 // 4 - len(y), 0)
            Xk, yk = self.X[self.n - keep : self.n].copy(), self.y[self.n - keep : self.n].copy()
            self.n = self.n_factored = self.n_refit = 0
            self.add(Xk, yk)
        self._grow(self.n + len(y))
        rows = np.arange(self.T)
        c2 = self._c() ** 2
        for x, v in zip(X, y):
            i = self.n
            self.X[i], self.y[i] = x, v
            self.G[i] = self.global_table[:, rows, x].sum(axis=1)
            self.Phi[i] = self.shape[rows, x]
            self.Psi[i] = 0.0
            self.Psi[i, rows * self.L + x] = 1.0
            self.n = i + 1
            self.K0[i, : i + 1] = self._k0_row(i, c2)
            self.K0[: i + 1, i] = self.K0[i, : i + 1]

    def _k0_row(self, i: int, c2: np.ndarray) -> np.ndarray:
        o = self.opt
        x = self.X[i]
        rows = np.arange(self.T)
        k = self.G[: i + 1] @ (self.gsd**2 * self.G[i])
        if self.proxy_mode:
            k += o.tensor_scale**2 * (self.Phi[: i + 1] @ self.Phi[i])
        k += (self.X[: i + 1] == x) @ c2[rows, x]
        return k

    # ---- fit --------------------------------------------------------------------------------------------
    def _noise_var(self, y: np.ndarray) -> np.ndarray:
        return (self.noise * np.maximum(y, self.floor_y)) ** 2 + 1e-300

    def _prior_mean(self, n: int) -> np.ndarray:
        return self.Y * (self.G[:n] @ self.coef) if self.proxy_mode else self.G[:n] @ self.coef

    def _refit(self) -> None:
        """Re-estimate the scale, the prior mean and (small n) the relative hyperparameters; refactor K."""
        n = self.n
        y = self.y[:n]
        pos = y[y > 0]
        typical = float(np.median(pos)) if pos.size else 1.0
        self.floor_y = 0.05 * typical
        w = 1.0 / np.maximum(y, self.floor_y)  # relative errors: the misfit scales with the KL
        if self.proxy_mode:
            coef, _ = nnls(self.G[:n, :1] * w[:, None], y * w)
            self.Y = float(coef[0]) if coef[0] > 0 else typical / max(float(self.G[:n, 0].mean()), 1e-300)
        else:
            coef, _ = nnls(self.G[:n] * w[:, None], y * w)
            seen = self.G[:n].sum(axis=0) > 0
            known = coef[seen & (coef > 0)]
            # a level name no trial used yet: assume the worst seen (the search then tries it cautiously)
            self.coef = np.where(seen & (coef > 0), coef, known.max() if known.size else typical / self.T)
            self.Y = float(self.coef.mean())
        if 4 <= n <= self.opt.evidence_max_n:
            self._choose_hyperparameters()
        K = self.Y**2 * self.K0[:n, :n] + np.diag(self._noise_var(y))
        cap = len(self.Lc)
        self.Lc[:, :] = 0.0
        self.Lc[:n, :n] = self._cholesky(K)
        self.Lc[np.arange(n, cap), np.arange(n, cap)] = 1.0
        self.n_factored = self.n_refit = n

    def _cholesky(self, K: np.ndarray) -> np.ndarray:
        jitter = 1e-10 * float(np.mean(np.diag(K)))
        return cholesky(K + jitter * np.eye(len(K)), lower=True, check_finite=False)

    def _choose_hyperparameters(self) -> None:
        """Marginal likelihood over (noise, rc) on a small grid (the first maximum in grid order wins)."""
        n, o = self.n, self.opt
        y = self.y[:n]
        r = y - self._prior_mean(n)
        base = (self.G[:n] * self.gsd**2) @ self.G[:n].T
        onehot = self.Psi[:n]
        f = o.correction_floor
        if self.proxy_mode:
            base += o.tensor_scale**2 * (self.Phi[:n] @ self.Phi[:n].T)
            s = self.shape.reshape(-1)
            M2, M1, M0 = ((onehot * s**p) @ onehot.T for p in (2, 1, 0))
            match = lambda rc: rc**2 * M2 + 2 * rc * f * M1 + f**2 * M0  # noqa: E731  c = rc s + f
        else:
            M0 = onehot @ onehot.T
            match = lambda rc: rc**2 * M0  # noqa: E731
        best = (-math.inf, self.noise, self.rc)
        for rc, noise in itertools.product(o.correction_grid, o.noise_grid):
            self.noise = noise
            try:
                L = self._cholesky(self.Y**2 * (base + match(rc)) + np.diag(self._noise_var(y)))
            except np.linalg.LinAlgError:
                continue
            a = solve_triangular(L, r, lower=True, check_finite=False)
            ll = -0.5 * float(a @ a) - float(np.log(np.diag(L)).sum())
            if ll > best[0] + 1e-9:
                best = (ll, noise, rc)
        _, self.noise, self.rc = best
        self.K0[:n, :n] = base + match(self.rc)

    def _factor(self) -> None:
        n = self.n
        if n == 0:
            return
        if self.n_refit == 0 or n <= 16 or n >= self.opt.growth * self.n_refit:
            self._refit()
            return
        if self.n_factored == n:
            return
        k = self.n_factored
        Knew = self.Y**2 * self.K0[k:n, :n]
        Knew[:, k:] += np.diag(self._noise_var(self.y[k:n]))
        # block extension: [L 0; B C] with B = Knew[:, :k] L^-T and C C^T = Knew[:, k:] - B B^T
        # (rows >= k of the padded factor are still identity rows, so the padded solve gives L^-1 on top)
        B = self._solve_lower(Knew[:, :k].T)[:k].T
        self.Lc[k:n, :k] = B
        self.Lc[k:n, k:n] = self._cholesky(Knew[:, k:] - B @ B.T)
        self.n_factored = n

    def _solve_lower(self, rhs: np.ndarray) -> np.ndarray:
        """L^-1 rhs for rhs with n (or fewer) rows, through the padded factor."""
        pad = np.zeros((len(self.Lc),) + rhs.shape[1:], order="F")
        pad[: len(rhs)] = rhs
        return solve_triangular(self.Lc, pad, lower=True, check_finite=False, overwrite_b=True)

    def _solve(self, rhs: np.ndarray) -> np.ndarray:
        """K^-1 rhs for rhs with n rows."""
        pad = np.zeros((len(self.Lc),) + rhs.shape[1:], order="F")
        pad[: len(rhs)] = rhs
        return cho_solve((self.Lc, True), pad, check_finite=False, overwrite_b=True)[: len(rhs)]

    @property
    def chol(self) -> np.ndarray:
        """The Cholesky factor of the n x n kernel matrix (a view)."""
        return self.Lc[: self.n_factored, : self.n_factored]

    # ---- posterior --------------------------------------------------------------------------------------
    def _prior_table(self) -> np.ndarray:
        if self.proxy_mode:
            return self.Y * self.shape
        return np.einsum("m,mtl->tl", self.coef, self.global_table)

    def _project(self, alpha: np.ndarray) -> np.ndarray:
        """k(f_tl, X) @ alpha for alpha (n, d): the (d, T, L) posterior correction of the table."""
        n, o = self.n, self.opt
        ga = (self.G[:n].T @ alpha) * (self.gsd**2)[:, None]  # (m, d)
        out = np.einsum("mtl,md->dtl", self.global_table, ga)
        if self.proxy_mode:
            pa = self.Phi[:n].T @ alpha  # (T, d)
            out += o.tensor_scale**2 * self.shape[None] * pa.T[:, :, None]
        oa = (self.Psi[:n].T @ alpha).T.reshape(-1, self.T, self.L)  # one-hot sums
        out += (self._c() ** 2)[None] * oa
        return self.Y**2 * out

    def mean_table(self) -> np.ndarray:
        """(T, L) posterior mean of the per-(tensor, level) errors (the prior mean before any trial)."""
        return self.posterior(None, 0)[0]

    def draw_tables(self, rng: np.random.Generator, d: int = 1) -> np.ndarray:
        """(d, T, L) posterior draws of the error table (Thompson sampling), by Matheron's rule."""
        return self.posterior(rng, d)[1]

    def posterior(self, rng: np.random.Generator | None, d: int) -> tuple[np.ndarray, np.ndarray]:
        """The mean table and ``d`` draws, with one solve against the kernel matrix."""
        o, T, L = self.opt, self.T, self.L
        self._factor()
        prior = self._prior_table()
        f0 = np.repeat(prior[None], d + 1, axis=0)  # [mean, draw 1, ..., draw d]
        if d:
            assert rng is not None
            z0 = rng.standard_normal((d, self.m))
            zt = rng.standard_normal((d, T))
            u = rng.standard_normal((d, T, L))
            f0[1:] += self.Y * (np.einsum("dm,mtl->dtl", z0 * self.gsd, self.global_table) + self._c()[None] * u)
            if self.proxy_mode:
                f0[1:] += self.Y * o.tensor_scale * zt[:, :, None] * self.shape[None]
        if self.n:
            n = self.n
            rows = np.arange(T)
            F0 = f0[:, rows, self.X[:n]].sum(axis=2).T  # (n, d + 1)
            noise = np.zeros((n, d + 1))
            if d:
                assert rng is not None
                noise[:, 1:] = rng.standard_normal((n, d)) * np.sqrt(self._noise_var(self.y[:n]))[:, None]
            f0 = f0 + self._project(self._solve(self.y[:n, None] - F0 - noise))
        out = np.where(self.enc.valid[None], f0, np.inf)
        return out[0], out[1:]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.enc.value_of(self.mean_table(), np.atleast_2d(X))

    def rank_correlation(self, X: np.ndarray, y: np.ndarray) -> float:
        """Spearman rho of predicted vs measured error on trials (X, y) the model was not fitted on."""
        y = np.asarray(y, dtype=float)
        ok = np.isfinite(y)
        if ok.sum() < 3:
            return math.nan
        return float(stats.spearmanr(self.predict(np.atleast_2d(X)[ok]), y[ok]).statistic)
