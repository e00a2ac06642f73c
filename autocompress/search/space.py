"""Search spaces: YAML that declares Optuna distributions per technique parameter.

```yaml
name: demo
steps:
  - technique: quantize
    params:
      bits: {choice: [4, 8]}            # categorical
      group_size: 128                   # fixed
    groups:                             # per-layer-group choices -> quantize overrides
      - {name: mlp_late, match: "mlp.*", layers: late, params: {bits: {choice: [3, 4, 8]}}}
  - technique: sparsify
    params:
      sparsity: {float: [0.0, 0.5], step: 0.1}   # also {int: [lo, hi], step: k, log: false}
```
Optuna parameter names are ``<technique>.<param>`` and ``<technique>.<group>.<param>``.
"""

from __future__ import annotations

from typing import Any

import optuna
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autocompress import catalog
from autocompress.errors import ConfigError
from autocompress.recipe import Recipe, Step, TextSpec
from autocompress.techniques import TECHNIQUES
from autocompress.techniques.base import check_step_order
from autocompress.validation import parse

_DISTRIBUTION_KEYS = ("choice", "int", "float")


class Distribution(BaseModel):
    """Exactly one of ``choice``, ``int`` or ``float`` (with optional ``step`` and ``log``)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    choice: list[Any] | None = Field(None, min_length=1)
    int_range: tuple[int, int] | None = Field(None, alias="int")
    float_range: tuple[float, float] | None = Field(None, alias="float")
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _exactly_one(self) -> Distribution:
        given = [v for v in (self.choice, self.int_range, self.float_range) if v is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of {', '.join(_DISTRIBUTION_KEYS)}")
        bounds = self.int_range or self.float_range
        if bounds and bounds[0] > bounds[1]:
            raise ValueError(f"range {list(bounds)} is empty")
        return self

    def admits(self, value: Any) -> bool:
        if self.choice is not None:
            return value in self.choice
        low, high = self.int_range or self.float_range
        return isinstance(value, (int, float)) and low <= value <= high

    def values_to_check(self) -> list[Any]:
        return list(self.choice) if self.choice is not None else list(self.int_range or self.float_range)

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choice is not None:
            return trial.suggest_categorical(name, self.choice)
        if self.int_range is not None:
            return trial.suggest_int(name, *self.int_range, step=int(self.step or 1), log=self.log)
        return trial.suggest_float(name, *self.float_range, step=self.step, log=self.log)


def _is_distribution(value: Any) -> bool:
    return isinstance(value, dict) and any(k in value for k in _DISTRIBUTION_KEYS)


class GroupSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_]+$")
    match: str = "*"
    layers: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


class StepSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    technique: str
    params: dict[str, Any] = Field(default_factory=dict)
    groups: list[GroupSpace] = Field(default_factory=list)


class SearchSpace(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    steps: list[StepSpace] = Field(min_length=1)
    seeds: list[dict[str, Any]] = Field(default_factory=list, description="first trials: Optuna param -> value")

    @classmethod
    def load(cls, ref: str, field: str = "space") -> SearchSpace:
        path = catalog.resolve("search_spaces", ref, field)
        space = parse(cls, catalog.read_yaml(path, field), f"{field} ({path.name})")
        space._validate_against_techniques(f"{field} ({path.name})")
        return space

    def _validate_against_techniques(self, field: str) -> None:
        seen = set()
        check_step_order([step.technique for step in self.steps], f"{field}: steps")
        for i, step in enumerate(self.steps):
            where = f"{field}: steps[{i}]"
            technique = TECHNIQUES.get(step.technique, f"{where}.technique")
            if step.technique in seen:
                raise ConfigError(f"{where}.technique", f"{step.technique!r} appears twice; each technique once")
            seen.add(step.technique)
            # Every declared value must be acceptable on its own to the technique.
            for key, value in step.params.items():
                for option in self._options(value, f"{where}.params.{key}"):
                    technique.parse_params({key: option}, f"{where}.params")
            for g, group in enumerate(step.groups):
                for key, value in group.params.items():
                    for option in self._options(value, f"{where}.groups[{g}].params.{key}"):
                        override = {"match": group.match, "layers": group.layers, key: option}
                        technique.parse_params({"overrides": [override]}, f"{where}.groups[{g}]")

        distributions = self.distributions()
        for i, seed in enumerate(self.seeds):
            for key, value in seed.items():
                if key not in distributions:
                    raise ConfigError(
                        f"{field}: seeds[{i}].{key}",
                        f"not a parameter of this space; parameters: {', '.join(distributions)}",
                    )
                if not distributions[key].admits(value):
                    raise ConfigError(f"{field}: seeds[{i}].{key}", f"{value!r} is outside the space")

    def distributions(self) -> dict[str, Distribution]:
        """Every searched parameter by its Optuna name."""
        found = {}
        for step in self.steps:
            for key, value in step.params.items():
                if _is_distribution(value):
                    found[f"{step.technique}.{key}"] = Distribution.model_validate(value)
            for group in step.groups:
                for key, value in group.params.items():
                    if _is_distribution(value):
                        found[f"{step.technique}.{group.name}.{key}"] = Distribution.model_validate(value)
        return found

    @staticmethod
    def _options(value: Any, field: str) -> list[Any]:
        if _is_distribution(value):
            return parse(Distribution, value, field).values_to_check()
        return [value]

    def sample(self, trial: optuna.Trial, model: str, seed: int, calibration: TextSpec) -> Recipe:
        """Turn a trial's suggestions into a validated Recipe."""
        steps = []
        for step in self.steps:
            params = {key: self._draw(trial, f"{step.technique}.{key}", value) for key, value in step.params.items()}
            overrides = []
            for group in step.groups:
                drawn = {
                    key: self._draw(trial, f"{step.technique}.{group.name}.{key}", value)
                    for key, value in group.params.items()
                }
                overrides.append({"match": group.match, "layers": group.layers, **drawn})
            if overrides:
                params["overrides"] = overrides
            steps.append(Step(technique=step.technique, params=params))
        return Recipe(model=model, seed=seed, calibration=calibration, steps=steps)

    @staticmethod
    def _draw(trial: optuna.Trial, name: str, value: Any) -> Any:
        return Distribution.model_validate(value).suggest(trial, name) if _is_distribution(value) else value
