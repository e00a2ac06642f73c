"""``tensor_levels``: every tensor its own level, fetched from the compressed-layer store.

```yaml
- technique: tensor_levels
  params:
    default: imatrix/Q4_0            # level of every tensor not listed
    embedding: rtn/Q8_0              # the input embedding (and the tied LM head): its own choice
    tensors: {0.attn.v: gptq/Q5_0, 29.mlp.down: imatrix/Q6_K}
    kv_type: f16                     # llama.cpp's cache type: f16 | q8_0 | q4_0
    runtime_numerics: llamacpp       # evaluate with llama.cpp's activation rounding (or none)
```

Levels are computed from the *base* model's weights and calibration statistics (that is what makes them
storable and a trial cheap), so the step combines only with ``prune_depth`` before it and ``early_exit``
after it. Each weight becomes exactly the dequantization of its stored bytes, and the module records those
bytes (:class:`~autocompress.models.annotations.PackedWeight`) for the cost model and the GGUF export.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any, ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from autocompress.context import CompressionContext
from autocompress.errors import ConfigError
from autocompress.hardware.profile import ModelProfile, nominal_bits
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import PackedWeight, set_kv_type, set_packed_weight
from autocompress.techniques.base import RuntimeSupport, Technique, register_technique
from autocompress.techniques.tensor_levels.inputs import base_inputs
from autocompress.techniques.tensor_levels.keys import (
    EMBEDDING,
    LM_HEAD,
    base_keys,
    check_key,
    linear_key,
    tensor_modules,
)
from autocompress.techniques.tensor_levels.levels import Level, level_name, parse_level
from autocompress.techniques.tensor_levels.numerics import set_runtime_numerics
from autocompress.techniques.tensor_levels.store import LevelStore


class TensorLevelsParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    default: str = Field("imatrix/Q8_0", description="level of every tensor not listed in tensors")
    embedding: str = Field("rtn/Q8_0", description="level of the input embedding (and of a tied LM head)")
    tensors: dict[str, str] = Field(default_factory=dict, description="tensor key -> level")
    kv_type: Literal["f16", "q8_0", "q4_0"] = Field("f16", description="llama.cpp's KV-cache type")
    runtime_numerics: Literal["none", "llamacpp"] = Field(
        "llamacpp", description="emulate llama.cpp's activation and cache rounding when evaluating"
    )

    _levels = field_validator("default", "embedding")(lambda v: level_name(v))

    @field_validator("tensors")
    @classmethod
    def _tensor_levels(cls, value: dict[str, str]) -> dict[str, str]:
        return {check_key(k): level_name(v, f"tensors.{k}") for k, v in sorted(value.items())}

    def level_of(self, key: str) -> Level:
        fallback = self.embedding if key == EMBEDDING else self.default
        return parse_level(self.tensors.get(key, fallback), f"tensor_levels.tensors.{key}")


def store_for(ctx: CompressionContext) -> LevelStore:
    """The store of the context's base model and calibration text (one per context)."""
    return ctx.memo("level_store", lambda: LevelStore(ctx.cache_dir, ctx.model_digest, ctx.data_digest), of_base=True)


def check_keys(params: TensorLevelsParams, base_model: nn.Module) -> None:
    """An error for a listed key the base model does not have (keys of pruned blocks are fine: unused)."""
    known = base_keys(base_model)
    unknown = sorted(set(params.tensors) - set(known))
    if unknown:
        raise ConfigError(
            f"tensor_levels.tensors.{unknown[0]}", f"no such tensor in the base model; e.g. {', '.join(known[:4])}"
        )


def assignment(modules: Mapping[str, nn.Linear | nn.Embedding], params: TensorLevelsParams) -> dict[str, Level]:
    """Key -> level for every tensor of the model; an error for a level whose type cannot hold its rows."""
    levels = {key: params.level_of(key) for key in modules}
    for key, level in levels.items():
        level.type.check_fits(modules[key].weight.shape[1], f"tensor_levels.tensors.{key}")
    return levels


@register_technique
class TensorLevels(Technique[TensorLevelsParams]):
    name = "tensor_levels"
    Params = TensorLevelsParams
    excludes: ClassVar[tuple[str, ...]] = ("prune_width", "sparsify", "quantize")

    @classmethod
    def describe(cls, params: dict[str, Any]) -> str:
        p = TensorLevelsParams.model_validate(params)
        counts: dict[str, int] = {}
        for level in [p.default, *p.tensors.values()]:
            counts[level] = counts.get(level, 0) + 1
        top = ", ".join(f"{level} x{n}" for level, n in sorted(counts.items(), key=lambda kv: -kv[1])[:3])
        return f"levels {p.default} ({len(p.tensors)} set: {top}) emb {p.embedding} kv {p.kv_type}"

    @classmethod
    def runtime_support(cls, params: dict[str, Any]) -> RuntimeSupport:
        p = TensorLevelsParams.model_validate(params)
        lacks = [] if p.kv_type == "f16" else [f"kv_type {p.kv_type}: a run setting (type_k/type_v), not in the file"]
        return RuntimeSupport(
            gets=["every tensor in the llama.cpp type it was evaluated in (its bytes written verbatim)"], lacks=lacks
        )

    @torch.no_grad()
    def apply(self, model: nn.Module, params: TensorLevelsParams, ctx: CompressionContext) -> nn.Module:
        check_keys(params, ctx.base_model)
        modules = tensor_modules(model)
        levels = assignment(modules, params)
        store, inputs = store_for(ctx), base_inputs(ctx)
        for key, module in modules.items():
            entry = store.get(key, levels[key], module.weight, inputs[key])
            module.weight.copy_(entry.weight())
            set_packed_weight(module, PackedWeight(entry.type, entry.packed))
        set_kv_type(model, params.kv_type)
        self.set_numerics(model, params, {k: lv.type.name for k, lv in levels.items()})
        return model

    @staticmethod
    def set_numerics(model: nn.Module, params: TensorLevelsParams, types: dict[str, str]) -> None:
        if params.runtime_numerics == "none":
            return
        adapter = ModelAdapter(model)
        modules = tensor_modules(model)
        by_module: dict[nn.Module, str] = {modules[k]: t for k, t in types.items() if k != EMBEDDING}
        by_module[adapter.lm_head] = types[LM_HEAD if LM_HEAD in types else EMBEDDING]
        set_runtime_numerics(model, by_module, params.kv_type)

    def predict_profile(
        self, profile: ModelProfile, params: TensorLevelsParams, ctx: CompressionContext
    ) -> ModelProfile:
        """Every linear and the embedding priced at its level's ggml type; the KV cache at its type."""
        check_keys(params, ctx.base_model)
        linears = []
        for lin in profile.linears:
            if lin.layer is None:
                key = EMBEDDING if profile.tied_embeddings else LM_HEAD
            else:
                key = linear_key(profile.origin(lin.layer), lin.role)
            level = params.level_of(key)
            level.type.check_fits(lin.in_features, f"tensor_levels.tensors.{key}")
            linears.append(replace(lin, ggml_type=level.type.name, bits=nominal_bits(level.type.name)))
        embedding = params.level_of(EMBEDDING).type
        embedding.check_fits(profile.hidden_size, f"tensor_levels.{EMBEDDING}")
        return replace(
            profile,
            linears=tuple(linears),
            embedding_ggml_type=embedding.name,
            embedding_bits=nominal_bits(embedding.name),
            kv_type=params.kv_type,
        )
