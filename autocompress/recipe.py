"""The Recipe: the one description of what was done to a model.

A search trial, an MLflow run's params, a Pareto artifact's provenance and a reproducible
pipeline are all this object.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from autocompress.errors import ConfigError
from autocompress.validation import parse


class TextSpec(BaseModel):
    """Where calibration and held-out evaluation text come from, and how much of it."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field("generated", description="'generated' (by the base model), or a .txt/.jsonl file or folder")
    seq_len: int = Field(128, ge=16, le=4096)
    calibration_samples: int = Field(16, ge=1, le=4096)
    eval_samples: int = Field(8, ge=1, le=4096)


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    technique: str
    params: dict[str, Any] = Field(default_factory=dict)


class Recipe(BaseModel):
    """Ordered, serialisable compression steps applied to a model source with a seed."""

    model_config = ConfigDict(extra="forbid")

    model: str
    seed: int = 0
    calibration: TextSpec = Field(default_factory=TextSpec)
    steps: list[Step] = Field(default_factory=list)

    @model_validator(mode="after")
    def _normalise_steps(self) -> Recipe:
        """Validate each step's params against its technique and fill in defaults."""
        from autocompress.techniques import TECHNIQUES
        from autocompress.techniques.base import check_step_order

        check_step_order([step.technique for step in self.steps])
        for i, step in enumerate(self.steps):
            technique = TECHNIQUES.get(step.technique, f"steps[{i}].technique")
            params = technique.parse_params(step.params, f"steps[{i}].params")
            step.params = params.model_dump(mode="json")
        return self

    # ---- serialisation -----------------------------------------------------------------
    @classmethod
    def parse_obj(cls, data: Any, field: str = "") -> Recipe:
        if not isinstance(data, dict):
            raise ConfigError(field or "recipe", "must be a mapping with keys model, seed, calibration, steps")
        return parse(cls, data, field)

    @classmethod
    def from_yaml(cls, text: str) -> Recipe:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError("recipe", "is not valid YAML") from None
        return cls.parse_obj(data)

    @classmethod
    def from_file(cls, path: str | Path) -> Recipe:
        path = Path(path)
        if not path.is_file():
            raise ConfigError("recipe", f"file {str(path)!r} does not exist")
        return cls.from_yaml(path.read_text())

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def digest(self) -> str:
        """A content hash: equal recipes (after defaults are filled in) hash equally."""
        canonical = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    def summary(self) -> str:
        """One line for tables, e.g. ``drop 2 layers | magnitude 10% | rtn w4g64 mlp.*:w8``."""
        from autocompress.techniques import TECHNIQUES

        return " | ".join(TECHNIQUES[s.technique].describe(s.params) for s in self.steps) or "base model"

    def flatten(self) -> dict[str, str]:
        """Flat ``key -> string`` view for MLflow params, e.g. ``steps.1.quantize.bits``."""
        flat = {"model": self.model, "seed": str(self.seed), "digest": self.digest()}
        for key, value in self.calibration.model_dump().items():
            flat[f"calibration.{key}"] = str(value)
        for i, step in enumerate(self.steps):
            for key, value in step.params.items():
                text = value if isinstance(value, str) else json.dumps(value)
                flat[f"steps.{i}.{step.technique}.{key}"] = text
        return flat
