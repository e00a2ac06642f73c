"""The Technique protocol and its registry."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel
from torch import nn

from autocompress.errors import ConfigError
from autocompress.registry import Registry
from autocompress.validation import parse

if TYPE_CHECKING:
    from autocompress.context import CompressionContext
    from autocompress.hardware.profile import ModelProfile


@dataclass(frozen=True)
class RuntimeSupport:
    """What the deployment runtime (llama.cpp, through the GGUF export) gets of a step, and what it does not."""

    gets: list[str] = field(default_factory=list)
    lacks: list[str] = field(default_factory=list)


P = TypeVar("P", bound=BaseModel)


class Technique(ABC, Generic[P]):
    """One compression transform. ``Params`` names everything it needs (``P``); ``apply`` edits in place."""

    name: ClassVar[str]
    Params: ClassVar[type[BaseModel]]
    excludes: ClassVar[tuple[str, ...]] = ()  # techniques a recipe with this one may not contain

    @classmethod
    def parse_params(cls, params: dict[str, Any], field: str) -> BaseModel:
        return parse(cls.Params, params, field)

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        """A short summary for tables: the params that differ from the defaults."""
        defaults = cls.Params().model_dump(mode="json")
        changed = ", ".join(f"{k}={v}" for k, v in params.items() if defaults.get(k) != v)
        return f"{cls.name}({changed})"

    @abstractmethod
    def apply(self, model: nn.Module, params: P, ctx: CompressionContext) -> nn.Module:
        """Compress ``model`` (in place where possible) and return it."""

    def predict_profile(self, profile: ModelProfile, params: P, ctx: CompressionContext) -> ModelProfile | None:
        """The profile of the model ``apply`` would leave, from the profile of the model it gets, without
        touching weights (cost prediction before the expensive work). None: only applying tells (the default;
        e.g. a depth measured on text). Must raise the errors ``apply`` raises for these params and shapes."""
        return None

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        """What llama.cpp gets of a step with these (recipe) params, for ``deploy.json``; the default says
        the exporter does not know the technique."""
        return RuntimeSupport(lacks=[f"{cls.name}: not known to the exporter"])


TECHNIQUES: Registry[type[Technique[Any]]] = Registry("technique", "autocompress.techniques")

# The one order in which the built-in techniques compose. Each step measures what it needs on the model
# the earlier steps left: blocks are dropped first, then the remaining blocks are narrowed, the final shapes
# are sparsified (Wanda/SparseGPT statistics of the pruned model), the sparse weights are quantized (zeros
# stay zero), distillation then recovers accuracy under all of those constraints at once (shapes, masks,
# quantization grids: one training run, QAT included), and early exit is decided last, on the final
# weights, where its exit depth is measured. Techniques not listed (plugins) may go anywhere.
STEP_ORDER = ("prune_depth", "prune_width", "sparsify", "quantize", "tensor_levels", "distill", "early_exit")


def check_step_order(techniques: list[str], field: str = "steps") -> None:
    """A ConfigError naming the first step that comes after one it must precede."""
    for i, name in enumerate(techniques):
        excluded = sorted(set(TECHNIQUES[name].excludes) & set(techniques)) if name in TECHNIQUES else []
        if excluded:
            raise ConfigError(f"{field}[{i}].technique", f"{name!r} cannot be combined with {excluded[0]!r}")
    ranked = [(i, STEP_ORDER.index(name)) for i, name in enumerate(techniques) if name in STEP_ORDER]
    for (_, rank_a), (i, rank_b) in zip(ranked, ranked[1:]):
        if rank_b < rank_a:
            raise ConfigError(
                f"{field}[{i}].technique",
                f"{techniques[i]!r} must come before {STEP_ORDER[rank_a]!r}; the order is {' -> '.join(STEP_ORDER)}",
            )


def register_technique(cls: type[Technique[Any]]) -> type[Technique[Any]]:
    return TECHNIQUES.register(cls)
