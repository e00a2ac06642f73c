"""What a hardware model needs to know about a (compressed) model: shapes, bits, sparsity, depth.

A :class:`ModelProfile` is plain data, so cost models never touch torch and a profile can be
written by hand (for a model too large to load) or read from a model with :func:`profile_model`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch
from torch import nn

from autocompress.ggml import ggml_type
from autocompress.models.adapter import LinearSite, ModelAdapter, layer_origin
from autocompress.models.annotations import kv_bits as recorded_kv_bits
from autocompress.models.annotations import kv_type as recorded_kv_type
from autocompress.models.annotations import packed_weight, weight_format

SCALE_BYTES = 2  # one fp16 scale per quantisation group
ZERO_BYTES = 2  # and, for an asymmetric format, one fp16 zero point (or minimum) per group


def stored_bytes(params: int, rows: int, cols: int, bits: int, group_size: int | None, symmetric: bool = True) -> float:
    """Bytes of a ``rows x cols`` weight stored at ``bits``; below 16 bits add per-group parameters:
    a scale (symmetric, e.g. GGUF Q4_0 = 4.5 bits per weight on groups of 32), or a scale and a zero
    point (asymmetric, e.g. Q4_1 = 5 bits per weight).

    ``group_size=None`` means one group per row (per output channel).
    """
    data = params * bits / 8
    if bits >= 16:
        return data
    groups = rows * (math.ceil(cols / group_size) if group_size else 1)
    return data + groups * (SCALE_BYTES + (0 if symmetric else ZERO_BYTES))


@dataclass(frozen=True)
class LinearProfile:
    """One linear layer (``layer=None`` for the LM head)."""

    name: str
    role: str
    layer: int | None
    in_features: int
    out_features: int
    bits: int = 16
    group_size: int | None = None
    symmetric: bool = True  # no zero point stored
    sparsity: float = 0.0  # measured fraction of exact zeros
    sparse_2_4: bool = False  # every 4 consecutive inputs hold at least 2 zeros
    ggml_type: str | None = None  # stored in this llama.cpp type (bytes exact, scales included)

    @property
    def params(self) -> int:
        return self.in_features * self.out_features

    @property
    def nnz(self) -> int:
        return round(self.params * (1.0 - self.sparsity))

    @property
    def dense_bytes(self) -> float:
        """Stored bytes without exploiting sparsity."""
        if self.ggml_type is not None:
            return float(ggml_type(self.ggml_type).tensor_bytes(self.out_features, self.in_features))
        return stored_bytes(
            self.params, self.out_features, self.in_features, self.bits, self.group_size, self.symmetric
        )


@dataclass(frozen=True)
class ModelProfile:
    """Geometry and storage format of a decoder-only LM, as a cost model sees it."""

    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    linears: tuple[LinearProfile, ...]
    embedding_bits: int
    tied_embeddings: bool
    kv_bits: int = 16
    # Early exit: mean depth at which decoding exits, and mean extra LM-head evaluations per token at exit
    # points. NaN: not known yet (measured once the model exists); decode costs then come out NaN too.
    avg_exit_layer: float | None = None
    exit_head_reads: float = 0.0
    embedding_group_size: int | None = None
    embedding_symmetric: bool = True
    embedding_ggml_type: str | None = None
    kv_type: str | None = None  # a llama.cpp cache type (f16, q8_0, q4_0); priced at its bytes
    layer_origin: tuple[int, ...] | None = None  # each block's index in the unpruned model (None: its own)

    def origin(self, layer: int) -> int:
        """Block ``layer``'s index in the unpruned model."""
        return layer if self.layer_origin is None else self.layer_origin[layer]

    @property
    def lm_head(self) -> LinearProfile | None:
        return next((lin for lin in self.linears if lin.role == "lm_head"), None)

    @property
    def block_linears(self) -> tuple[LinearProfile, ...]:
        return tuple(lin for lin in self.linears if lin.layer is not None)

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def embedding_bytes(self) -> float:
        if self.embedding_ggml_type is not None:
            return float(ggml_type(self.embedding_ggml_type).tensor_bytes(self.vocab_size, self.hidden_size))
        return stored_bytes(
            self.embedding_params,
            self.vocab_size,
            self.hidden_size,
            self.embedding_bits,
            self.embedding_group_size,
            self.embedding_symmetric,
        )

    @property
    def num_parameters(self) -> int:
        """Embedding and linear weights (norms and biases are negligible); a tied head counts once."""
        head = self.lm_head
        shared = head.params if (self.tied_embeddings and head is not None) else 0
        return self.embedding_params + sum(lin.params for lin in self.linears) - shared

    def weight_bytes(self) -> float:
        """Dense stored bytes; a tied embedding is the LM head's tensor, stored once."""
        linears = sum(lin.dense_bytes for lin in self.linears)
        return linears + (0.0 if self.tied_embeddings and self.lm_head else self.embedding_bytes)

    def kv_cache_bytes(self, tokens: int, batch: int = 1, kv_bits: float | None = None) -> float:
        """K and V of every layer for ``tokens`` positions."""
        bits: float = self.kv_bits if kv_bits is None else kv_bits
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * tokens * batch * bits / 8

    @property
    def exit_fraction(self) -> float:
        """Share of the blocks a decoded token runs through (1.0 without early exit)."""
        if self.avg_exit_layer is None or self.num_layers == 0:
            return 1.0
        if math.isnan(self.avg_exit_layer):
            return math.nan
        return min(max(self.avg_exit_layer / self.num_layers, 0.0), 1.0)


@torch.no_grad()
def _is_2_4(weight: torch.Tensor) -> bool:
    if weight.shape[-1] % 4:
        return False
    zeros = (weight.reshape(weight.shape[0], -1, 4) == 0).sum(-1)
    return bool((zeros >= 2).all())


def nominal_bits(type_name: str) -> int:
    """The bit width a ggml type is named for (Q5_K -> 5, IQ4_NL -> 4, F16 -> 16): its arithmetic class."""
    digits = re.search(r"\d+", type_name)
    return int(digits.group()) if digits else 16


@torch.no_grad()
def _linear_profile(site: LinearSite, stored_as: nn.Module | None = None) -> LinearProfile:
    """``stored_as``: the module whose recorded storage the weight shares (the embedding of a tied head)."""
    weight = site.module.weight
    fmt = weight_format(stored_as or site.module)
    packed = packed_weight(stored_as or site.module)
    # packed ggml blocks store every code, zero or not: their zeros save nothing
    sparsity = float((weight == 0).float().mean()) if weight.numel() and packed is None else 0.0
    bits = fmt.bits if packed is None else nominal_bits(packed.type)
    return LinearProfile(
        name=site.name,
        role=site.role,
        layer=site.layer,
        in_features=site.module.in_features,
        out_features=site.module.out_features,
        bits=bits,
        group_size=fmt.group_size,
        symmetric=fmt.symmetric,
        sparsity=sparsity,
        sparse_2_4=sparsity >= 0.5 and _is_2_4(weight),
        ggml_type=None if packed is None else packed.type,
    )


def _intermediate_size(adapter: ModelAdapter, linears: tuple[LinearProfile, ...]) -> int:
    widths = [lin.out_features for lin in linears if lin.role in ("mlp.up", "mlp.gate")]
    widths += [lin.out_features // 2 for lin in linears if lin.role == "mlp.gate_up"]
    return max(widths, default=getattr(adapter.config, "intermediate_size", 4 * adapter.hidden_size))


def profile_model(
    model: nn.Module, *, kv_bits: int | None = None, avg_exit_layer: float | None = None, exit_head_reads: float = 0.0
) -> ModelProfile:
    """Profile a (compressed) causal LM: real shapes of the remaining blocks, recorded formats,
    measured sparsity, and the LM head (role ``lm_head``) read at every decode step. ``kv_bits``
    defaults to what the model records (``quantize`` with ``kv_bits``), else 16."""
    kv_bits = recorded_kv_bits(model) if kv_bits is None else kv_bits
    adapter = ModelAdapter(model)
    tied = adapter.input_embedding if adapter.tied_embeddings else None
    linears = tuple(
        _linear_profile(site, tied if site.role == "lm_head" else None)
        for site in adapter.linear_sites(include_lm_head=True)
    )
    emb_fmt = weight_format(adapter.input_embedding)
    emb_packed = packed_weight(adapter.input_embedding)
    return ModelProfile(
        num_layers=adapter.num_layers,
        hidden_size=adapter.hidden_size,
        num_heads=adapter.num_heads,
        num_kv_heads=adapter.num_kv_heads,
        head_dim=adapter.head_dim,
        intermediate_size=_intermediate_size(adapter, linears),
        vocab_size=adapter.vocab_size,
        linears=linears,
        embedding_bits=emb_fmt.bits if emb_packed is None else nominal_bits(emb_packed.type),
        embedding_group_size=emb_fmt.group_size,
        embedding_symmetric=emb_fmt.symmetric,
        tied_embeddings=adapter.tied_embeddings,
        kv_bits=kv_bits,
        avg_exit_layer=avg_exit_layer,
        exit_head_reads=exit_head_reads,
        embedding_ggml_type=None if emb_packed is None else emb_packed.type,
        kv_type=recorded_kv_type(model),
        layer_origin=tuple(layer_origin(model)),
    )
