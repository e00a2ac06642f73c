"""The search job: what to compress, over which space, for which targets, under which budgets."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autocompress.errors import ConfigError
from autocompress.evaluators import EvalSettings, is_accuracy_metric, known_metrics, never_negative
from autocompress.metrics import COST_METRICS, split_metric_name
from autocompress.models.loading import DEFAULT_MODEL
from autocompress.recipe import TextSpec
from autocompress.validation import parse

JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _never_negative(metric: str) -> bool:
    """Cost metrics, and the accuracy metrics their evaluators declare so: a budget below 0 can never be met."""
    target, name = split_metric_name(metric)
    return name in COST_METRICS if target is not None else never_negative(name)


class Objective(BaseModel):
    model_config = ConfigDict(extra="forbid")

    metric: str
    direction: Literal["minimize", "maximize"] = "minimize"


class Bound(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _one_side(self) -> Bound:
        if self.max is None and self.min is None:
            raise ValueError("give max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}: no value can meet it")
        return self

    def violation(self, value: float) -> float:
        """Optuna's constraint convention: <= 0 means satisfied."""
        parts = []
        if self.max is not None:
            parts.append(value - self.max)
        if self.min is not None:
            parts.append(self.min - value)
        return max(parts) if not math.isnan(value) else math.inf


class SearchSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sampler: Literal["nsga2", "nsga3", "tpe", "gp", "random"] = "nsga2"
    trials: int = Field(20, ge=1, le=100_000, description="finished trials the job wants in total")
    timeout: float | None = Field(None, gt=0, description="seconds for this invocation")
    seed: int = 0
    population_size: int = Field(8, ge=2, description="NSGA-II/III population; GP's random start-up trials")
    heartbeat_seconds: int = Field(10, ge=1, description="how often a running trial says it is alive")
    predict_first: bool = Field(
        True,
        description="predict a trial's cost from its recipe before applying it: a "
        "trial over a cost budget then skips applying and evaluating",
    )
    cost_bound: Literal["expected", "upper"] = Field(
        "expected",
        description="check cost budgets against the prediction or its upper bound "
        "(prediction x (1 + the target's uncertainty))",
    )


class WorkloadSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt_tokens: int = Field(256, ge=1)
    context_tokens: int = Field(512, ge=1)


class RaySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    address: str | None = Field(
        None, description="ray.init address of an existing cluster, e.g. 10.0.0.5:6379; default: a local Ray"
    )
    concurrency: int = Field(2, ge=1, le=1024, description="trials in flight at once")
    cpus_per_trial: float = Field(1.0, gt=0)
    gpus_per_trial: float = Field(0.0, ge=0)
    max_retries: int = Field(2, ge=0, le=100, description="re-runs of a trial whose Ray worker died")


class ExportSettings(BaseModel):
    """What is written for each Pareto-optimal trial; ``export: true/false`` is short for ``checkpoint``."""

    model_config = ConfigDict(extra="forbid")

    checkpoint: bool = Field(True, description="the transformers-loadable safetensors artifact")
    formats: list[Literal["gguf", "packed"]] = Field(
        default_factory=list, description="deployable files beside it (autocompress export)"
    )
    measure: bool = Field(
        False,
        description="run each Pareto GGUF with llama.cpp on this host and log "
        "host.llamacpp.* metrics to its trial run (needs [llamacpp])",
    )

    @model_validator(mode="after")
    def _consistent(self) -> ExportSettings:
        if self.formats and not self.checkpoint:
            raise ValueError("formats: deployable files are written from the checkpoint; set checkpoint: true")
        if self.measure and "gguf" not in self.formats:
            raise ValueError("measure: measuring runs the GGUF; add gguf to formats")
        return self


class Job(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    model: str = DEFAULT_MODEL
    space: str = "demo"
    targets: list[str] = Field(min_length=1)
    objectives: list[Objective] = Field(min_length=1)
    budgets: dict[str, Bound] = Field(default_factory=dict)
    search: SearchSettings = Field(default_factory=SearchSettings)
    calibration: TextSpec = Field(default_factory=TextSpec)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)
    evaluation: EvalSettings = Field(default_factory=EvalSettings)
    storage: str | None = Field(None, description="SQLAlchemy URL; default sqlite:///<workdir>/optuna.db")
    tracking: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///<workdir>/mlflow.db; 'none' disables"
    )
    workdir: str = "./runs"
    export: ExportSettings = Field(
        default_factory=ExportSettings,
        description="Pareto-optimal artifacts: true/false, or checkpoint/formats/measure",
    )
    backend: str = Field("local", description="where trials run: local (in this process) or ray")
    ray: RaySettings = Field(default_factory=RaySettings)
    workers: int = Field(1, ge=1, le=64, description="service workers that may run this job's trials at once")
    trust_remote_code: bool = Field(False, description="allow a model whose config names its own Python code")

    @field_validator("export", mode="before")
    @classmethod
    def _export_flag(cls, value: Any) -> Any:
        return {"checkpoint": value} if isinstance(value, bool) else value

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not JOB_NAME.match(value) or ".." in value:
            raise ValueError("must be 1-64 letters, digits, '-', '_' or '.', starting with a letter or digit")
        return value

    @field_validator("storage")
    @classmethod
    def _storage_url(cls, value: str | None) -> str | None:
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if value is not None:
            try:
                make_url(value)
            except ArgumentError:
                raise ValueError(
                    f"{value!r} is not a SQLAlchemy URL (e.g. sqlite:///runs/optuna.db or "
                    "postgresql://user@127.0.0.1:5432/db)"
                ) from None
        return value

    @model_validator(mode="after")
    def _known_metrics(self) -> Job:
        for i, objective in enumerate(self.objectives):
            self._check_metric(objective.metric, f"objectives[{i}].metric")
        if len({o.metric for o in self.objectives}) != len(self.objectives):
            raise ValueError("objectives: each metric may appear once")
        for metric, bound in self.budgets.items():
            self._check_metric(metric, f"budgets.{metric}")
            if _never_negative(metric) and bound.max is not None and bound.max < 0:
                raise ValueError(f"budgets.{metric}: max {bound.max} can never be met (the metric is never negative)")
        for i, metric in enumerate(self.evaluation.costly):
            if not is_accuracy_metric(metric):
                raise ValueError(
                    f"evaluation.costly[{i}]: {metric!r} is not an accuracy metric; allowed: "
                    f"{', '.join(known_metrics())}"
                )
            if metric in self.metric_names:
                raise ValueError(
                    f"evaluation.costly[{i}]: {metric!r} is an objective or budget, so every trial "
                    "measures it; list only metrics to measure near the front"
                )
        if not is_accuracy_metric(self.evaluation.proxy):
            raise ValueError(f"evaluation.proxy: {self.evaluation.proxy!r} is not an accuracy metric")
        return self

    def _check_metric(self, metric: str, field: str) -> None:
        target, name = split_metric_name(metric)
        if target is None:
            if not is_accuracy_metric(name):
                raise ValueError(
                    f"{field}: unknown metric {metric!r}; accuracy metrics: {', '.join(known_metrics())}; "
                    f"cost metrics: <target>.{{{','.join(COST_METRICS)}}}"
                )
        elif target not in self.targets:
            raise ValueError(f"{field}: target {target!r} is not in targets {self.targets}")
        elif name not in COST_METRICS:
            raise ValueError(f"{field}: unknown cost metric {name!r}; allowed: {', '.join(COST_METRICS)}")

    # ---- paths --------------------------------------------------------------------------
    @property
    def workdir_path(self) -> Path:
        return Path(self.workdir).expanduser().resolve()

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{self.workdir_path / 'optuna.db'}"

    @property
    def tracking_uri(self) -> str | None:
        if self.tracking == "none":
            return None
        return self.tracking or f"sqlite:///{self.workdir_path / 'mlflow.db'}"

    @property
    def job_dir(self) -> Path:
        return self.workdir_path / self.name

    @property
    def metric_names(self) -> list[str]:
        return list(dict.fromkeys([o.metric for o in self.objectives] + list(self.budgets)))

    @classmethod
    def from_dict(cls, data: Any) -> Job:
        if not isinstance(data, dict):
            raise ConfigError("job", "must be a YAML mapping")
        return parse(cls, data)

    @classmethod
    def from_file(cls, path: str | Path) -> Job:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("job", f"file {str(path)!r} does not exist")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            raise ConfigError("job", f"{path} is not valid YAML") from None
        return cls.from_dict(data)
