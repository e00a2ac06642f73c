"""What the per-tensor samplers share: Optuna plumbing, the study's history as arrays, options, seeding.

A sampler proposes every tensor parameter in ``sample_relative`` (the relative search space is exactly the
problem's tensor parameters); every other parameter of the study goes to an independent ``RandomSampler``
with the same seed. Randomness per ask comes from ``(seed, trial.number)``, and all state the proposals
depend on is rebuilt from the study's trials (caches only save work), so a proposal depends on the seed
and the study's history, not on the process or on how many asks it served.
"""

from __future__ import annotations

import builtins
import dataclasses
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from autocompress.search.per_tensor.problem import Encoding, LevelProblem, key

_controller: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """BLAS/LAPACK on one thread inside the block (threadpoolctl, when installed). The model's matrices
    are small (n <= a few thousand); on a busy CPU a BLAS thread pool costs far more than it saves
    (measured: Cholesky of 2000 x 2000 0.50 s with the pool, 0.11 s on one thread), cf.
    ``autocompress.threads.one_thread`` for torch."""
    global _controller
    if _controller is None:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except ImportError:
            _controller = False
    if not _controller:
        yield
        return
    with _controller.limit(limits=1, user_api="blas"):
        yield


@dataclass
class History:
    """The study's trials as arrays: finite-accuracy completed trials to fit on, and every configuration
    any trial holds (complete, running, queued, failed) so that none is proposed twice."""

    X: np.ndarray  # (n, T) level indices of finite completed trials, by trial number
    y: np.ndarray  # (n,) their accuracy objective
    numbers: np.ndarray  # (n,) their trial numbers
    bytes: np.ndarray  # (n,) their total bytes
    seen: set[builtins.bytes] = field(default_factory=set)

    @property
    def n(self) -> int:
        return len(self.y)


class PerTensorSampler(optuna.samplers.BaseSampler):
    """Base class: subclasses define ``Options`` (a dataclass) and ``propose``."""

    name: ClassVar[str] = "per-tensor"

    @dataclass(frozen=True)
    class Options:
        pass

    def __init__(self, problem: LevelProblem, seed: int | None = None, **options: Any):
        if not isinstance(problem, LevelProblem):
            raise TypeError(f"{self.name}: problem must be a LevelProblem, got {type(problem).__name__}")
        known = {f.name for f in dataclasses.fields(self.Options)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ValueError(f"{self.name}: unknown option(s) {unknown}; known: {sorted(known)}")
        self.options: Any = self.Options(**options)
        self.problem = problem
        self.enc = Encoding(problem)
        self.seed = int(np.random.SeedSequence().entropy) % 2**63 if seed is None else int(seed)  # type: ignore[arg-type]
        self._random = optuna.samplers.RandomSampler(seed=self.seed)
        self.lo, self.hi = problem.min_bytes, problem.max_bytes  # the range budgets are spread over
        self._space = {t.param: CategoricalDistribution(t.levels) for t in problem.tensors}
        self._parsed: dict[int, tuple[TrialState, bytes | None, np.ndarray | None, float]] = {}
        self._study_key: tuple[int, int] | None = None

    # ---- Optuna interface --------------------------------------------------------------------------------
    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        fixed = trial.system_attrs.get("fixed_params", {})
        if all(p in fixed for p in self.enc.params):  # an enqueued seed: nothing to propose
            return {}
        self._check(study)
        with one_blas_thread():
            x = self.propose(study, trial, self.history(study), self.rng(trial))
        return {p: v for p, v in self.enc.decode(x).items() if p in search_space}

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._random.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._random.reseed_rng()

    # ---- for subclasses ----------------------------------------------------------------------------------
    def propose(self, study: optuna.Study, trial: FrozenTrial, hist: History, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def rng(self, trial: FrozenTrial) -> np.random.Generator:
        return np.random.default_rng([self.seed, trial.number])

    def _check(self, study: optuna.Study) -> None:
        k = self.problem.accuracy_objective
        if k >= len(study.directions):
            raise ValueError(
                f"{self.name}: accuracy_objective {k} but the study has {len(study.directions)} objective(s)"
            )
        if study.directions[k] != StudyDirection.MINIMIZE:
            raise ValueError(f"{self.name}: objective {k} (accuracy) must be minimised")

    def history(self, study: optuna.Study) -> History:
        """The study's trials as arrays (each trial parsed once per state)."""
        study_key = (id(study._storage), study._study_id)
        if study_key != self._study_key:
            self._parsed, self._study_key = {}, study_key
        k = self.problem.accuracy_objective
        for t in study.get_trials(deepcopy=False):
            cached = self._parsed.get(t.number)
            if cached is not None and cached[0] == t.state and (cached[2] is not None or t.state != TrialState.RUNNING):
                continue
            params = {**t.system_attrs.get("fixed_params", {}), **t.params}  # a queued trial: its fixed params
            x = self.enc.encode(params)
            value = math.nan
            if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) > k:
                value = float(t.values[k])
            self._parsed[t.number] = (t.state, key(x) if x is not None else None, x, value)
        numbers = sorted(self._parsed)
        fit = [
            i
            for i in numbers
            if self._parsed[i][0] == TrialState.COMPLETE
            and self._parsed[i][2] is not None
            and math.isfinite(self._parsed[i][3])
        ]
        T = len(self.enc.params)
        X = np.array([self._parsed[i][2] for i in fit], dtype=np.int16).reshape(-1, T)
        y = np.array([self._parsed[i][3] for i in fit], dtype=float)
        seen = {cfg for i in numbers if (cfg := self._parsed[i][1]) is not None}
        return History(
            X=X,
            y=y,
            numbers=np.array(fit, dtype=int),
            bytes=self.enc.bytes_of(X) if len(fit) else np.zeros(0),
            seen=seen,
        )

    def clamp(self, budget: float) -> float:
        return min(max(budget, self.lo), self.hi)
