"""Per-tensor building blocks: the level problem, the knapsack solvers (vs brute force), the additive model."""

import itertools
import math

import numpy as np
import pytest

from autocompress.search.per_tensor.additive import AdditiveModel
from autocompress.search.per_tensor.front import budget_schedule, hv_gain, pareto_indices, van_der_corput
from autocompress.search.per_tensor.knapsack import HullSweep, solve_exact
from autocompress.search.per_tensor.problem import LevelProblem, TensorChoice, best_uniform, uniform_configs
from autocompress.search.per_tensor.synthetic import make_problem


def random_instance(rng: np.random.Generator, T: int = 5, L: int = 4):
    counts = rng.integers(2, L + 1, T)
    valid = np.arange(L)[None] < counts[:, None]
    nbytes = np.where(valid, rng.integers(1, 20, (T, L)).astype(float), np.inf)
    values = np.where(valid, rng.random((T, L)), np.inf)
    return values, nbytes, valid


def brute_force(values, nbytes, valid, cap):
    best, arg = math.inf, None
    T = len(values)
    for x in itertools.product(*[range(int(v.sum())) for v in valid]):
        x = np.array(x)
        if nbytes[np.arange(T), x].sum() <= cap and values[np.arange(T), x].sum() < best:
            best, arg = values[np.arange(T), x].sum(), x
    return best, arg


def test_exact_solver_matches_brute_force_and_the_sweep_stays_within_the_lagrangian_gap():
    rng = np.random.default_rng(0)
    gaps = []
    for _ in range(60):
        values, nbytes, valid = random_instance(rng)
        T = len(values)
        lo, hi = np.where(valid, nbytes, np.inf).min(1).sum(), np.where(valid, nbytes, -np.inf).max(1).sum()
        cap = float(rng.uniform(lo, hi))
        best, _ = brute_force(values, nbytes, valid, cap)
        exact = solve_exact(values, nbytes, valid, cap)
        assert nbytes[np.arange(T), exact].sum() <= cap
        assert values[np.arange(T), exact].sum() == pytest.approx(best, abs=1e-9)
        sweep = HullSweep(values, nbytes, valid).solve(cap)
        assert nbytes[np.arange(T), sweep].sum() <= cap
        value = values[np.arange(T), sweep].sum()
        # the Lagrangian bound: at most one tensor's value range above the optimum
        spread = np.nanmax(np.where(valid, values, np.nan), 1) - np.nanmin(np.where(valid, values, np.nan), 1)
        assert best - 1e-12 <= value <= best + spread.max() + 1e-12
        gaps.append(value - best)
    assert np.mean(np.array(gaps) <= 1e-12) >= 0.6  # usually exact on such small instances


def test_sweep_is_exact_at_its_own_breakpoints_and_infeasible_budgets_return_none():
    rng = np.random.default_rng(1)
    for _ in range(20):
        values, nbytes, valid = random_instance(rng, T=4, L=4)
        sweep = HullSweep(values, nbytes, valid)
        for cap in sweep.base + sweep.cum:  # each Lagrangian solution is optimal for its own bytes
            best, _ = brute_force(values, nbytes, valid, cap)
            x = sweep.solve(cap, fill=False)
            assert values[np.arange(4), x].sum() == pytest.approx(best, abs=1e-9)
        assert sweep.solve(sweep.base - 1) is None
        assert solve_exact(values, nbytes, valid, sweep.base - 1) is None


def test_sweep_on_211_tensors_is_within_a_fraction_of_a_percent_of_the_exact_optimum():
    syn = make_problem(seed=3, interaction=0.0)
    enc = syn.enc
    sweep = HullSweep(syn.true, enc.nbytes, enc.valid)
    for budget in syn.problem.size_targets:
        cap = budget - syn.problem.fixed_bytes
        x = sweep.solve(cap)
        exact = solve_exact(syn.true, enc.nbytes, enc.valid, cap)
        assert enc.bytes_of(x) <= budget
        assert enc.value_of(syn.true, x) <= enc.value_of(syn.true, exact) * 1.002


def test_problem_validation_is_one_line_and_bytes_are_exact():
    with pytest.raises(ValueError, match="levels repeat"):
        TensorChoice("a", ("x", "x"), (1.0, 2.0))
    with pytest.raises(ValueError, match="2 byte sizes for 3 levels"):
        TensorChoice("a", ("x", "y", "z"), (1.0, 2.0))
    with pytest.raises(ValueError, match="proxy values must be finite and >= 0"):
        TensorChoice("a", ("x", "y"), (1.0, 2.0), (0.1, -1.0))
    with pytest.raises(ValueError, match="parameter names repeat"):
        LevelProblem((TensorChoice("a", ("x",), (1.0,)), TensorChoice("a", ("y",), (1.0,))))
    problem = LevelProblem(
        (TensorChoice("a", ("x", "y"), (1.0, 2.0)), TensorChoice("b", ("y", "z"), (3.0, 5.0))), fixed_bytes=10
    )
    assert problem.total_bytes({"a": "y", "b": "z"}) == 17
    with pytest.raises(ValueError, match="b has no level 'x'"):
        problem.total_bytes({"a": "y", "b": "x"})
    for error in (ValueError,):
        with pytest.raises(error):
            problem.total_bytes({"a": "y"})
    assert (problem.min_bytes, problem.max_bytes) == (14, 17)


def test_uniform_configurations_take_each_level_name_where_offered():
    syn = make_problem(layers=2, seed=0)
    enc = syn.enc
    configs = uniform_configs(enc)
    assert len(configs) == len(enc.names)
    for name, x in zip(enc.names, configs):
        picked = [syn.problem.tensors[t].levels[j] for t, j in enumerate(x)]
        offered = [name in t.levels for t in syn.problem.tensors]
        assert all(p == name for p, o in zip(picked, offered) if o)
    q4 = best_uniform(enc, syn.problem.size_targets[0])
    assert enc.bytes_of(q4) <= syn.problem.size_targets[0]
    assert best_uniform(enc, syn.problem.min_bytes - 1) is None


def test_front_helpers():
    assert [van_der_corput(i) for i in (1, 2, 3, 4)] == [0.5, 0.25, 0.75, 0.125]
    sched = [budget_schedule(i, (10.0, 20.0), 0.0, 100.0) for i in range(6)]
    assert sched == [10.0, 50.0, 20.0, 25.0, 10.0, 75.0]
    idx = pareto_indices(np.array([1.0, 2.0, 3.0, 2.5]), np.array([5.0, 3.0, 1.0, 4.0]))
    assert idx.tolist() == [0, 1, 2]
    # one front point (1, 1) in a [0, 2] x [0, 2] box: a candidate at (0, 0) adds 4 - 1
    gain = hv_gain(np.array([1.0]), np.array([1.0]), np.array([0.0, 1.5, 1.0]), np.array([0.0, 1.5, 1.0]), 2.0, 2.0)
    assert gain.tolist() == [3.0, 0.0, 0.0]


def test_additive_model_learns_an_additive_truth_and_ranks_held_out_configs():
    syn = make_problem(layers=4, seed=2, interaction=0.0)
    enc = syn.enc
    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, c, 260) for c in enc.counts], 1).astype(np.int16)
    y = syn.kl_of(X)
    model = AdditiveModel(enc)
    model.add(X[:200], y[:200])
    assert model.rank_correlation(X[200:], y[200:]) > 0.95
    # trials added between refits extend the Cholesky factor: equal to factoring the whole kernel again
    model.add(X[200:210], y[200:210])
    model.mean_table()
    assert model.n_refit == 200 and model.n_factored == 210
    K = model.Y**2 * model.K0[:210, :210] + np.diag(model._noise_var(model.y[:210]))
    np.testing.assert_allclose(model.chol @ model.chol.T, K, rtol=1e-8, atol=1e-12 * np.abs(K).max())
    draws = model.draw_tables(np.random.default_rng(1), 3)
    assert draws.shape == (3,) + enc.shape and np.isinf(draws[:, ~enc.valid]).all()


def test_additive_model_without_proxies_uses_level_means():
    syn = make_problem(layers=4, seed=2, interaction=0.0, with_proxy=False)
    enc = syn.enc
    model = AdditiveModel(enc)
    assert not model.proxy_mode
    rng = np.random.default_rng(0)
    X = np.stack([rng.integers(0, c, 150) for c in enc.counts], 1).astype(np.int16)
    model.add(X[:120], syn.kl_of(X[:120]))
    assert model.rank_correlation(X[120:], syn.kl_of(X[120:])) > 0.8
