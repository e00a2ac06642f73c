"""Optuna samplers by name. Budgets reach them through ``trial.set_constraint``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.trial import FrozenTrial, TrialState

from autocompress.search.job import SearchSettings

SEEN_STATES = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)


class NoRepeatChildren:
    """For genetic samplers: a child whose every parameter equals an earlier trial's is drawn again.

    Crossover of parents that share most values, in a small categorical space, often rebuilds a
    parent; that trial teaches nothing (the runner reuses its metrics) yet uses up one of the job's
    trials. Up to ``redraws`` new children are drawn; if all repeat, the trial is sampled at random.
    Children with a mutated parameter (left to independent sampling) pass as they are.
    """

    redraws = 8

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        seen = {
            tuple(sorted(t.params.items()))
            for t in study.get_trials(deepcopy=False, states=SEEN_STATES)
            if t.number != trial.number
        }
        for _ in range(self.redraws):
            child = super().sample_relative(study, trial, search_space)  # type: ignore[misc]
            if not child:  # the first generation: random
                return child
            # mutated: drawn at random now rather than later, in the space's order (a set's order
            # changes with the process's string-hash seed, and with it which draw goes to which name);
            # the genetic samplers' sample_independent is their own random sampler's draw
            for name in [name for name in search_space if name not in child]:
                child[name] = self.sample_independent(study, trial, name, search_space[name])  # type: ignore[attr-defined]
            if tuple(sorted(child.items())) not in seen:
                return child
        return {}


class NSGAII(NoRepeatChildren, optuna.samplers.NSGAIISampler):
    pass


class NSGAIII(NoRepeatChildren, optuna.samplers.NSGAIIISampler):
    pass


SAMPLERS: dict[str, Callable[[SearchSettings], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda s: NSGAII(seed=s.seed, population_size=s.population_size),
    "nsga3": lambda s: NSGAIII(seed=s.seed, population_size=s.population_size),
    "gp": lambda s: optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.population_size),
    "tpe": lambda s: optuna.samplers.TPESampler(seed=s.seed, multivariate=True),
    "random": lambda s: optuna.samplers.RandomSampler(seed=s.seed),
}


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    return SAMPLERS[settings.sampler](settings)
