"""KV-cache quantization, simulated inside attention: keys (after RoPE) and values are rounded
per token and head (one asymmetric group of ``head_dim``) before the attention product, as a
cache stored at ``bits`` would return them. The bits are recorded on the model (``models.annotations``)
for the memory model.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from autocompress.models import annotations
from autocompress.models.adapter import ModelAdapter
from autocompress.techniques.quantize.grid import QuantFormat, rtn, straight_through

KV_ATTENTION = "autocompress_kv"
_MODULE_ATTR = "_autocompress_kv"  # on each attention module: (bits, wrapped implementation)


def quantize_per_head(t: torch.Tensor, bits: int) -> torch.Tensor:
    """Round ``[..., head_dim]`` vectors, one asymmetric group per vector."""
    flat = t.detach().reshape(-1, t.shape[-1])
    return straight_through(t, rtn(flat.float(), QuantFormat(bits, 0, symmetric=False)).reshape(t.shape).to(t.dtype))


def _kv_quant_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
    bits, inner = getattr(module, _MODULE_ATTR)
    attend = ALL_ATTENTION_FUNCTIONS[inner]
    return attend(module, query, quantize_per_head(key, bits), quantize_per_head(value, bits), attention_mask, **kwargs)


AttentionInterface.register(KV_ATTENTION, _kv_quant_attention)


def set_kv_bits(model: nn.Module, bits: int) -> None:
    """Make every attention layer see its K/V at ``bits`` (16 = unchanged)."""
    if bits >= 16:
        return
    config = model.config
    inner = config._attn_implementation
    if inner == KV_ATTENTION:  # already wrapped: keep the original implementation
        inner = next(getattr(m, _MODULE_ATTR)[1] for m in model.modules() if hasattr(m, _MODULE_ATTR))
    inner = inner if inner in ALL_ATTENTION_FUNCTIONS else "sdpa"  # eager computes the same product
    for site in ModelAdapter(model).linear_sites():
        if site.role == "attn.k":
            setattr(model.get_submodule(site.name.rpartition(".")[0]), _MODULE_ATTR, (bits, inner))
    config._attn_implementation = KV_ATTENTION
    annotations.set_kv_bits(model, bits)
