"""Tensor keys: how a per-tensor recipe names the tensors it compresses.

``<layer>.<role>`` for a decoder linear (``12.mlp.down``), with the layer's index in the *base* model
(pruned blocks keep their original numbers), ``embedding`` for the input embedding (and the LM head when it
is tied to it), ``lm_head`` for an untied LM head.
"""

from __future__ import annotations

import re

from torch import nn

from autocompress.models.adapter import ModelAdapter, layer_origin

EMBEDDING, LM_HEAD = "embedding", "lm_head"
KEY = re.compile(r"^(\d+)\.((?:attn|mlp)\.[a-z_]+)$|^(embedding|lm_head)$")


def check_key(key: str) -> str:
    """``key`` if it is well formed; a ValueError naming the allowed forms otherwise (pydantic validators)."""
    if not KEY.match(key):
        raise ValueError(
            f"{key!r} is not a tensor key; write <layer>.<role> (e.g. 12.mlp.down), {EMBEDDING} or {LM_HEAD}"
        )
    return key


def linear_key(layer: int | None, role: str) -> str:
    """The key of a decoder linear (``layer``: its block's index in the base model)."""
    if layer is None:
        raise ValueError(f"{role}: not a decoder block's linear")
    return f"{layer}.{role}"


def tensor_modules(model: nn.Module) -> dict[str, nn.Linear | nn.Embedding]:
    """Key -> the module holding that tensor (the embedding's module for a tied LM head), in execution order."""
    adapter = ModelAdapter(model)
    origin = layer_origin(model)
    out: dict[str, nn.Linear | nn.Embedding] = {EMBEDDING: adapter.input_embedding}
    for site in adapter.linear_sites():
        out[linear_key(origin[site.layer or 0], site.role)] = site.module
    if not adapter.tied_embeddings:
        out[LM_HEAD] = adapter.lm_head
    return out


def base_keys(model: nn.Module) -> list[str]:
    """Every tensor key of an unpruned model, in execution order."""
    return list(tensor_modules(model))
