"""Per-tensor samplers as Optuna samplers: seeds, determinism across processes, enqueued seeds, other
parameters, budgets, failed/infeasible trials, bad input, and the EvoPress screening hook."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest

from autocompress.search.per_tensor import PER_TENSOR_SAMPLERS, EvoPressSampler, SurrogateSampler
from autocompress.search.per_tensor.problem import LevelProblem, TensorChoice, best_uniform
from autocompress.search.per_tensor.synthetic import make_problem

optuna.logging.set_verbosity(optuna.logging.ERROR)
NAMES = sorted(PER_TENSOR_SAMPLERS)
ROOT = Path(__file__).resolve().parents[1]


def objective_with_extras(syn):
    """The synthetic objective plus two parameters the per-tensor samplers leave to random sampling."""

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.suggest_categorical("kv_type", ["f16", "q8_0", "q4_0"])
        trial.suggest_int("prune_depth.drop_layers", 0, 2)
        return syn.objective(trial)

    return objective


def run(name: str, seed: int, trials: int = 24, layers: int = 5, **options) -> optuna.Study:
    syn = make_problem(layers=layers, seed=1)
    sampler = PER_TENSOR_SAMPLERS[name](syn.problem, seed=seed, **options)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective_with_extras(syn), n_trials=trials)
    return study


def params(study: optuna.Study) -> list[dict]:
    return [t.params for t in study.trials]


@pytest.mark.parametrize("name", NAMES)
def test_seed_is_respected_and_no_configuration_repeats(name):
    a, b, c = run(name, 0), run(name, 0), run(name, 1)
    assert params(a) == params(b)
    assert params(a) != params(c)
    tensor_params = [tuple(sorted((k, v) for k, v in p.items() if k.startswith("tensor_levels."))) for p in params(a)]
    assert len(set(tensor_params)) == len(tensor_params)
    kv = {p["kv_type"] for p in params(a)}
    assert len(kv) > 1  # the other parameters are drawn at random, not fixed


SCRIPT = """
import json, sys, optuna
sys.path.insert(0, {root!r}); sys.path.insert(0, {tests!r})
optuna.logging.set_verbosity(optuna.logging.ERROR)
from test_per_tensor_samplers import params, run
print(json.dumps({{n: params(run(n, 7, trials=16)) for n in {names!r}}}))
"""


@pytest.mark.slow
def test_proposals_do_not_depend_on_the_process_hash_seed():
    code = SCRIPT.format(root=str(ROOT), tests=str(ROOT / "tests"), names=NAMES)
    outs = []
    for hash_seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=hash_seed, PYTHONPATH=str(ROOT))
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        outs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    assert outs[0] == outs[1]


@pytest.mark.parametrize("name", NAMES)
def test_enqueued_seed_trials_keep_their_parameters(name):
    syn = make_problem(layers=5, seed=1)
    sampler = PER_TENSOR_SAMPLERS[name](syn.problem, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    seeds = []
    for level in ("imatrix/Q8_0", "imatrix/Q4_0"):
        seed = {t.param: level if level in t.levels else t.levels[0] for t in syn.problem.tensors}
        seed["kv_type"] = "q8_0"
        study.enqueue_trial(seed)
        seeds.append(seed)
    study.optimize(objective_with_extras(syn), n_trials=8)
    for seed, trial in zip(seeds, study.trials):
        assert {k: trial.params[k] for k in seed} == seed
    assert all(len(t.params) == len(syn.problem.tensors) + 2 for t in study.trials)


def test_budgets_are_met():
    syn = make_problem(layers=5, seed=1)
    targets = sorted(syn.problem.size_targets)
    evo = run("evopress", 0, trials=30)
    for t in evo.trials:
        assert syn.problem.total_bytes(t.params) <= targets[t.number % len(targets)]
    alloc = run("allocate", 0, trials=3)
    assert [syn.problem.total_bytes(t.params) <= b for t, b in zip(alloc.trials, targets)] == [True] * 3
    sur = run("surrogate", 0, trials=30, target_share=1.0)
    for t in sur.trials:
        assert syn.problem.total_bytes(t.params) <= targets[t.number % len(targets)]


@pytest.mark.parametrize("name", NAMES)
def test_failed_and_infeasible_trials_are_skipped_for_fitting(name):
    syn = make_problem(layers=5, seed=1)
    sampler = PER_TENSOR_SAMPLERS[name](syn.problem, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)

    def objective(trial):
        kl, size = syn.objective(trial)
        if trial.number % 5 == 3:
            raise RuntimeError("out of memory")
        return (math.inf if trial.number % 5 == 4 else kl), size  # infeasible: accuracy not measured

    study.optimize(objective, n_trials=20, catch=(RuntimeError,))
    states = [t.state for t in study.trials]
    assert states.count(optuna.trial.TrialState.FAIL) == 4
    hist = sampler.history(study)
    assert hist.n == 12 and np.isfinite(hist.y).all()


def test_bad_input_is_a_one_line_error():
    syn = make_problem(layers=2, seed=0)
    with pytest.raises(ValueError, match=r"surrogate: unknown option\(s\) \['drawz'\]"):
        SurrogateSampler(syn.problem, seed=0, drawz=3)
    with pytest.raises(ValueError, match="evopress: stages must be"):
        EvoPressSampler(syn.problem, seed=0, stages=((512, 4),))
    no_proxy = make_problem(layers=2, seed=0, with_proxy=False)
    with pytest.raises(ValueError, match="allocate: needs a proxy for every tensor; tensor_levels.0.attn.q has none"):
        PER_TENSOR_SAMPLERS["allocate"](no_proxy.problem, seed=0)
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=SurrogateSampler(syn.problem, seed=0))
    with pytest.raises(ValueError, match="surrogate: objective 0 \\(accuracy\\) must be minimised"):
        study.optimize(syn.objective, n_trials=1)


def test_evopress_screens_offspring_in_steps_and_counts_the_calls():
    syn = make_problem(layers=5, seed=1)
    calls = []

    def screener(params: dict, tokens: int) -> float:
        calls.append(tokens)
        return syn.kl(params) * (1 + 0.05 * np.sin(tokens + len(calls)))  # noisier on fewer tokens

    sampler = EvoPressSampler(syn.problem, seed=0, screener=screener, offspring=8, stages=((64, 3), (256, 1)))
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(syn.objective, n_trials=12)
    targets = sorted(syn.problem.size_targets)
    evolved = 12 - len(targets)  # the first ask per target proposes its starting parent
    assert calls == ([64] * 8 + [256] * 3) * evolved
    assert sampler.screen_calls == len(calls) and sampler.screen_tokens == sum(calls) and sampler.screen_seconds > 0
    # each child is a few level switches away from its parent: the best measured trial within its target
    enc = sampler.enc
    for trial in study.trials[len(targets) :]:
        budget = targets[trial.number % len(targets)]
        low = budget - 0.05 * (syn.problem.max_bytes - syn.problem.min_bytes)
        earlier = [t for t in study.trials[: trial.number] if low <= syn.problem.total_bytes(t.params) <= budget]
        parent = min(earlier, key=lambda t: t.values[0])
        assert 1 <= int((enc.encode(trial.params) != enc.encode(parent.params)).sum()) <= 10


def test_sampler_without_proxies_starts_from_uniform_configurations():
    syn = make_problem(layers=5, seed=1, with_proxy=False)
    sampler = SurrogateSampler(syn.problem, seed=0)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(syn.objective, n_trials=20)
    first = best_uniform(sampler.enc, sorted(syn.problem.size_targets)[0])
    assert study.trials[0].params == sampler.enc.decode(first)
    assert len({tuple(sorted(t.params.items())) for t in study.trials}) == 20


def test_small_problem_with_one_level_tensor():
    tensors = (
        TensorChoice("a", ("F16",), (10.0,), (0.0,)),
        TensorChoice("b", ("Q8_0", "Q4_0"), (8.5, 4.5), (0.01, 0.2)),
        TensorChoice("c", ("Q8_0", "Q4_0"), (8.5, 4.5), (0.02, 0.1)),
    )
    problem = LevelProblem(tensors, size_targets=(20.0,))
    for name in NAMES:
        study = optuna.create_study(
            directions=["minimize", "minimize"], sampler=PER_TENSOR_SAMPLERS[name](problem, seed=0)
        )
        study.optimize(
            lambda t: (
                sum(
                    {"F16": 0, "Q8_0": 0.01, "Q4_0": 0.1}[t.suggest_categorical(p.param, list(p.levels))]
                    for p in tensors
                ),
                1.0,
            ),
            n_trials=5,
        )
        assert (
            len({tuple(sorted(t.params.items())) for t in study.trials}) == 4
        )  # all 4 configs, then a repeat-free fallback
