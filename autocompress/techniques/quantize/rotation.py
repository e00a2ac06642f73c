"""QuaRot-style rotation of the residual stream (Ashkboos et al., 2024), computed in float.

With every norm's scale folded into the linears that read it, an RMSNorm commutes with any
orthogonal ``Q`` (``rms(x Q) = rms(x)``). So the residual stream can be carried as ``x Q``: the
embedding becomes ``E Q``, every linear that reads the stream ``W Q``, every linear that writes it
(``o``, ``down``) ``Q^T W``, the LM head ``W Q``. The float model computes the same function; the
rotated weights and activations have far fewer outliers, which is what quantization cares about.
The LM head then differs from the embedding, so a tied head is untied (it costs its own storage).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autocompress.models.adapter import ModelAdapter

_READS_STREAM = ("attn.in", "mlp.in")
_WRITES_STREAM = ("attn.o", "mlp.down")


def hadamard(n: int, seed: int = 0) -> torch.Tensor:
    """An ``n x n`` orthogonal matrix: a normalised Sylvester-Hadamard matrix with random signs
    (QuaRot's randomised Hadamard); for ``n = 2^k m`` with odd ``m > 1``, its Kronecker product
    with a seeded random orthogonal ``m x m`` matrix."""
    power = n & -n  # the largest power of two dividing n
    h = torch.ones(1, 1, dtype=torch.float64)
    while h.shape[0] < power:
        h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)])
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, (power,), generator=gen).double() * 2 - 1
    q = (h * signs) / math.sqrt(power)
    if n // power > 1:
        rest, _ = torch.linalg.qr(torch.randn(n // power, n // power, generator=gen, dtype=torch.float64))
        q = torch.kron(q, rest.contiguous())
    return q


def _fold_scale(norm: nn.Module, linears: list[nn.Linear]) -> None:
    for lin in linears:
        lin.weight.mul_(norm.weight.to(lin.weight.dtype))
    norm.weight.fill_(1.0)


@torch.no_grad()
def rotate(model: nn.Module, seed: int = 0) -> None:
    """Fold the norm scales and rotate the residual stream by :func:`hadamard` in place."""
    adapter = ModelAdapter(model)
    adapter.untie_lm_head()
    q = hadamard(adapter.hidden_size, seed)

    def right(w: torch.Tensor) -> None:  # a linear reading the stream: W <- W Q
        w.copy_((w.double() @ q).to(w.dtype))

    def left(w: torch.Tensor) -> None:  # a linear writing the stream: W <- Q^T W
        w.copy_((q.T @ w.double()).to(w.dtype))

    _fold_scale(adapter.final_norm, [adapter.lm_head])
    right(adapter.lm_head.weight)
    right(adapter.input_embedding.weight)
    for group, sites in adapter.input_groups():
        if group in _READS_STREAM:
            _fold_scale(adapter.input_norm(sites[0].layer, group), [s.module for s in sites])
            for s in sites:
                right(s.module.weight)
        elif group in _WRITES_STREAM:
            for s in sites:
                left(s.module.weight)
                if s.module.bias is not None:
                    s.module.bias.copy_((s.module.bias.double() @ q).to(s.module.bias.dtype))
