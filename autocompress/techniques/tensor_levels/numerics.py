"""llama.cpp's arithmetic, emulated in the torch model that the search evaluates.

llama.cpp's CPU backend converts the activation operand of every matrix product to the weight type's
``vec_dot`` type (8-bit blocks for quantized weights, fp16 for F16 weights) and keeps the KV cache in its cache
type (f16 by default; q8_0 or q4_0 when asked). With ``runtime_numerics: llamacpp`` the evaluated model does
the same: a forward pre-hook rounds each linear's input, and an attention wrapper rounds the (post-RoPE) keys
and values as the cache would store them, and the queries as the K·Q product does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from autocompress.ggml import KV_CACHE_TYPES, activations, native
from autocompress.models.adapter import ModelAdapter

ATTENTION = "autocompress_llamacpp"
_HOOK_ATTR = "_autocompress_numerics_hook"
_ATTN_ATTR = "_autocompress_numerics_attn"  # on attention modules: (kv type, wrapped implementation)


def _round_cache(t: torch.Tensor, kv_type: str) -> torch.Tensor:
    """``[..., head_dim]`` rows as a llama.cpp cache of ``kv_type`` returns them."""
    if kv_type == "f16":
        return t.half().to(t.dtype)
    if kv_type == "q8_0":
        return activations.emulate(t, "Q8_0").to(t.dtype)
    flat = t.detach().reshape(-1, t.shape[-1]).float().contiguous()
    return native.dequantize(native.quantize(flat, "Q4_0"), "Q4_0", t.shape[-1]).reshape(t.shape).to(t.dtype)


def _attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    kv_type, inner = getattr(module, _ATTN_ATTR)
    q = activations.for_weight(query, KV_CACHE_TYPES[kv_type]).to(query.dtype)  # K·Q runs on the cache's type
    return ALL_ATTENTION_FUNCTIONS[inner](
        module, q, _round_cache(key, kv_type), _round_cache(value, kv_type), attention_mask, **kwargs
    )


AttentionInterface.register(ATTENTION, _attention)


def _input_hook(weight_type: str):
    def hook(module: nn.Module, args: tuple) -> tuple:
        return (activations.for_weight(args[0], weight_type).to(args[0].dtype), *args[1:])

    return hook


def set_runtime_numerics(model: nn.Module, types: Mapping[nn.Module, str], kv_type: str = "f16") -> None:
    """Round each linear's input for its weight type (``types``: module -> ggml type name; the LM head's
    entry is the embedding's type when tied) and the KV cache to ``kv_type``. Replaces earlier hooks."""
    clear_runtime_numerics(model)
    for module, weight_type in types.items():
        if weight_type != "F32":
            setattr(module, _HOOK_ATTR, module.register_forward_pre_hook(_input_hook(weight_type)))
    config: Any = model.config
    inner = config._attn_implementation if config._attn_implementation in ALL_ATTENTION_FUNCTIONS else "sdpa"
    for site in ModelAdapter(model).linear_sites():
        if site.role == "attn.k":
            setattr(model.get_submodule(site.name.rpartition(".")[0]), _ATTN_ATTR, (kv_type, inner))
    config._attn_implementation = ATTENTION


def clear_runtime_numerics(model: nn.Module) -> None:
    """Back to plain float arithmetic."""
    inner = None
    for module in model.modules():
        handle = getattr(module, _HOOK_ATTR, None)
        if handle is not None:
            handle.remove()
            delattr(module, _HOOK_ATTR)
        if hasattr(module, _ATTN_ATTR):
            inner = getattr(module, _ATTN_ATTR)[1]
            delattr(module, _ATTN_ATTR)
    if inner is not None:
        config: Any = model.config
        config._attn_implementation = inner
