"""An operator-level roofline: every op waits for its bytes or its math, whichever is slower.

Rules (kept deliberately simple; each is one line in the code below):

* **Weights.** A linear stores ``bits/8`` bytes per weight, plus one fp16 scale per quantisation
  group when ``bits < 16`` (per output row when ``group_size`` is ``None``), and one fp16 zero point
  per group when the format is asymmetric (GGUF: Q4_0 4.5 bits per weight, Q4_1 5, Q8_0 8.5).
* **Kernels.** A linear of 5-8 bits computes at the ``int8`` peak, of 1-4 bits at the ``int4``
  peak, only when the target has ``int8_weights``/``int4_weights`` *and* ``int8_activations``.
  Otherwise the weight is dequantised on the fly: it still saves memory traffic but computes at
  the ``fp16`` peak. 16 bits is fp16, 32 bits fp32.
* **Sparsity.** Zeros save nothing unless the target has a kernel for them: with
  ``sparse_unstructured`` a weight is stored as ``nnz * bits/8`` plus a 1-bit-per-weight bitmap,
  with ``sparse_2_4`` (for a 2:4 pattern) as half the weights plus 2 index bits per kept weight;
  either only when that is smaller than dense. FLOPs scale by the density only in that case.
* **KV cache.** ``kv_bits < 16`` counts (as 8 bits) only on targets with ``kv_int8``; a llama.cpp cache type
  (``kv_type`` q8_0, q4_0) counts at its real bytes (8.5, 4.5 bits) on targets that list it in ``kv_types``.
* **Runtime width.** A target with ``runtime_bits`` (e.g. torch eager on the host, 32) stores and
  computes every weight and the KV cache at that width: quantization saves nothing there.
* **Energy** per decoded token = decode time x the target's ``power_w``.
* **TTFT** at batch 1 without queueing is the prefill time (the first token comes from its logits).
* **Decode** (one step = one token per sequence) reads every weight once, the LM head included,
  and the KV cache at ``context_tokens``; with early exit the blocks are scaled by the exit depth.
  The embedding lookup reads one row and is only charged its dispatch cost.
* **Prefill** runs ``prompt_tokens`` through every block with causal attention
  (``P(P+1)/2`` query-key pairs) and the LM head for the last token only.
* Norms, RoPE, residual adds and the activation function move a few vectors per token; they
  are charged only their per-op overhead (``ELEMENTWISE_OPS_PER_LAYER`` ops per block).
* **Peak memory** = stored weights (a tied embedding once) + KV cache at
  ``prompt_tokens + context_tokens`` + prefill activations (residual, norm, attention and MLP
  buffers per token, one layer's attention scores, the last token's logits), in MB of 1e6 bytes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from typing import ClassVar, Literal

from autocompress.ggml import KV_CACHE_TYPES, ggml_type
from autocompress.hardware.profile import LinearProfile, ModelProfile
from autocompress.hardware.target import Feature, HardwareTarget, Precision
from autocompress.registry import Registry

Phase = Literal["decode", "prefill"]
ACT_BYTES = 4  # llama.cpp keeps activations in fp32
ELEMENTWISE_OPS_PER_LAYER = 6  # 2 norms, RoPE, 2 residual adds, SwiGLU
HIDDEN_BUFFERS_PER_TOKEN = 4  # residual stream, norm output, attention output, q/k/v (~hidden)
_WEIGHT_KERNEL: dict[Precision, Feature] = {"int8": "int8_weights", "int4": "int4_weights"}


@dataclass(frozen=True)
class Workload:
    """What the device is asked to do: prefill a prompt, then decode with a KV cache."""

    prompt_tokens: int = 256
    context_tokens: int = 512  # KV length at which a decode step is costed
    batch: int = 1


@dataclass(frozen=True)
class Op:
    """One operator of one forward pass; ``count`` < 1 for blocks skipped by early exit."""

    name: str
    bytes: float
    flops: float
    precision: Precision = "fp16"
    count: float = 1.0


@dataclass(frozen=True)
class PhaseCost:
    """A phase's totals; ``memory_s``/``compute_s`` sum each op's two roofline terms."""

    bytes: float
    flops: float
    memory_s: float
    compute_s: float
    overhead_s: float
    time_s: float


def op_time_s(nbytes: float, flops: float, bytes_per_s: float, flops_per_s: float, overhead_s: float) -> float:
    """The roofline of one op: it waits for whichever is slower, moving its bytes (at the
    sustained bandwidth) or doing its math (at the sustained peak of its precision), and then
    pays the runtime's fixed dispatch/synchronisation cost."""
    return max(nbytes / bytes_per_s, flops / flops_per_s) + overhead_s


class HardwareModel(ABC):
    """Predicts cost metrics of a profiled model on one target."""

    name: ClassVar[str]

    def __init__(self, target: HardwareTarget):
        self.target = target

    @abstractmethod
    def predict(self, profile: ModelProfile, workload: Workload) -> dict[str, float]:
        """``decode_ms_per_token``, ``prefill_ms``, ``peak_memory_mb`` and ``energy_mj_per_token``."""


HARDWARE_MODELS: Registry[type[HardwareModel]] = Registry("hardware model", "autocompress.hardware_models")


@HARDWARE_MODELS.decorator()
class RooflineModel(HardwareModel):
    """Operator-level roofline over a :class:`ModelProfile` (rules in the module docstring)."""

    name = "roofline"

    # ---- per-linear rules ------------------------------------------------------------
    def as_stored(self, lin: LinearProfile) -> LinearProfile:
        """The linear as the runtime holds it (a fixed-width runtime ignores quantization)."""
        bits = self.target.runtime_bits
        return lin if bits is None else replace(lin, bits=bits, group_size=None)

    def precision(self, bits: int) -> Precision:
        """The arithmetic a weight of ``bits`` runs at on this target."""
        if bits >= 32:
            return "fp32"
        if bits > 8:
            return "fp16"
        key: Precision = "int4" if bits <= 4 else "int8"
        if self.target.has(_WEIGHT_KERNEL[key]) and self.target.has("int8_activations"):
            return key
        return "fp16"

    def _sparse_bytes(self, lin: LinearProfile) -> float | None:
        """Stored bytes in the target's sparse format, or None if it has no kernel for it."""
        scales = lin.dense_bytes - lin.params * lin.bits / 8
        if lin.sparse_2_4 and self.target.has("sparse_2_4"):
            return lin.params / 2 * lin.bits / 8 + lin.params / 8 + scales
        if lin.sparsity > 0 and self.target.has("sparse_unstructured"):
            return lin.nnz * lin.bits / 8 + lin.params / 8 + scales
        return None

    def weight_bytes(self, lin: LinearProfile) -> float:
        sparse = self._sparse_bytes(lin)
        return lin.dense_bytes if sparse is None else min(lin.dense_bytes, sparse)

    def density(self, lin: LinearProfile) -> float:
        """Share of the dense FLOPs executed: below 1 only when a sparse format is used."""
        sparse = self._sparse_bytes(lin)
        if sparse is None or sparse >= lin.dense_bytes:
            return 1.0
        return 0.5 if lin.sparse_2_4 and self.target.has("sparse_2_4") else lin.nnz / lin.params

    def kv_bits(self, profile: ModelProfile) -> float:
        if self.target.runtime_bits is not None:
            return self.target.runtime_bits
        if profile.kv_type is not None:  # a llama.cpp cache type: its real bytes where the runtime has it
            return (
                ggml_type(KV_CACHE_TYPES[profile.kv_type]).bits_per_weight
                if profile.kv_type in self.target.kv_types
                else 16
            )
        if profile.kv_bits >= 16:
            return profile.kv_bits
        return max(profile.kv_bits, 8) if self.target.has("kv_int8") else 16

    # ---- the ops of one pass ---------------------------------------------------------
    def _linear_op(self, lin: LinearProfile, tokens: int, count: float) -> Op:
        lin = self.as_stored(lin)
        return Op(
            lin.name,
            bytes=self.weight_bytes(lin) + tokens * (lin.in_features + lin.out_features) * ACT_BYTES,
            flops=2 * lin.in_features * lin.out_features * tokens * self.density(lin),
            precision=self.precision(lin.bits),
            count=count,
        )

    def ops(self, profile: ModelProfile, workload: Workload, phase: Phase) -> list[Op]:
        """Every op of one decode step or of the prefill, in execution order."""
        b, p = workload.batch, workload.prompt_tokens
        tokens = b if phase == "decode" else b * p
        count = profile.exit_fraction if phase == "decode" else 1.0
        kv_layer = profile.kv_cache_bytes(1, b, self.kv_bits(profile)) / max(profile.num_layers, 1)
        qk_width = profile.num_heads * profile.head_dim
        if phase == "decode":  # one query per sequence against context_tokens keys
            ctx = workload.context_tokens
            attn = Op("attention", bytes=kv_layer * ctx, flops=4 * qk_width * ctx * b, count=count)
        else:  # causal: P(P+1)/2 query-key pairs; K/V written then read, Q and O move once
            attn = Op(
                "attention",
                bytes=2 * kv_layer * p + 2 * tokens * qk_width * ACT_BYTES,
                flops=4 * qk_width * p * (p + 1) / 2 * b,
            )
        blocks: dict[int | None, list[LinearProfile]] = {layer: [] for layer in range(profile.num_layers)}
        for lin in profile.block_linears:
            blocks.setdefault(lin.layer, []).append(lin)
        ops = [Op("embedding", 0.0, 0.0)]
        for block in blocks.values():
            ops += [self._linear_op(lin, tokens, count) for lin in block]
            ops.append(attn)
            ops += [Op("elementwise", 0.0, 0.0, count=count)] * ELEMENTWISE_OPS_PER_LAYER
        ops.append(Op("final_norm", 0.0, 0.0))
        if profile.lm_head is not None:  # logits of the last token only, also in prefill
            head_reads = 1.0 + (profile.exit_head_reads if phase == "decode" else 0.0)  # + early-exit checks
            ops.append(self._linear_op(profile.lm_head, b, head_reads))
        return ops

    def phase_cost(self, profile: ModelProfile, workload: Workload, phase: Phase) -> PhaseCost:
        bw, overhead = self.target.sustained_bytes_per_s, self.target.per_op_overhead_us * 1e-6
        nbytes = flops = memory_s = compute_s = overhead_s = time_s = 0.0
        for op in self.ops(profile, workload, phase):
            fps = self.target.sustained_flops_per_s(op.precision)
            nbytes += op.count * op.bytes
            flops += op.count * op.flops
            memory_s += op.count * op.bytes / bw
            compute_s += op.count * op.flops / fps
            overhead_s += op.count * overhead
            time_s += op.count * op_time_s(op.bytes, op.flops, bw, fps, overhead)
        return PhaseCost(nbytes, flops, memory_s, compute_s, overhead_s, time_s)

    # ---- memory ----------------------------------------------------------------------
    def peak_memory_bytes(self, profile: ModelProfile, workload: Workload) -> float:
        b, p = workload.batch, workload.prompt_tokens
        weights = sum(self.weight_bytes(self.as_stored(lin)) for lin in profile.linears)
        if not (profile.tied_embeddings and profile.lm_head is not None):
            runtime_bits = self.target.runtime_bits
            weights += profile.embedding_bytes if runtime_bits is None else profile.embedding_params * runtime_bits / 8
        kv = profile.kv_cache_bytes(p + workload.context_tokens, b, self.kv_bits(profile))
        per_token = HIDDEN_BUFFERS_PER_TOKEN * profile.hidden_size + 2 * profile.intermediate_size
        scores = profile.num_heads * p * p  # one layer's attention scores
        activations = (b * p * per_token + b * scores + b * profile.vocab_size) * ACT_BYTES
        return weights + kv + activations

    def predict(self, profile: ModelProfile, workload: Workload | None = None) -> dict[str, float]:
        workload = workload or Workload()
        decode_ms = self.phase_cost(profile, workload, "decode").time_s * 1e3
        return {
            "decode_ms_per_token": decode_ms,
            "prefill_ms": self.phase_cost(profile, workload, "prefill").time_s * 1e3,
            "peak_memory_mb": self.peak_memory_bytes(profile, workload) / 1e6,
            "energy_mj_per_token": decode_ms * self.target.power_w,  # ms x W = mJ
        }
