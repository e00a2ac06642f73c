"""Optuna samplers by name. Budgets reach them through ``trial.set_constraint``."""

from __future__ import annotations

from typing import Callable

import optuna

from autocompress.search.job import SearchSettings

SAMPLERS: dict[str, Callable[[SearchSettings], optuna.samplers.BaseSampler]] = {
    "nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s.seed, population_size=s.population_size),
    "nsga3": lambda s: optuna.samplers.NSGAIIISampler(seed=s.seed, population_size=s.population_size),
    "gp": lambda s: optuna.samplers.GPSampler(seed=s.seed, n_startup_trials=s.population_size),
    "tpe": lambda s: optuna.samplers.TPESampler(seed=s.seed, multivariate=True),
    "random": lambda s: optuna.samplers.RandomSampler(seed=s.seed),
}


def make_sampler(settings: SearchSettings) -> optuna.samplers.BaseSampler:
    return SAMPLERS[settings.sampler](settings)
