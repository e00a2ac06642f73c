"""Published decode rates next to the roofline's predictions, and SmolLM2-135M on every shipped target.

    .venv/bin/python benchmarks/published_comparison.py

prints two Markdown tables (the ones in docs/hardware-targets.md) and writes
benchmarks/results/published_comparison.json.

How a prediction is made (the same for every row):

* The published model's geometry (layers, hidden, MLP width, heads, KV heads, head dim, vocabulary, tied or not)
  becomes a ``ModelProfile`` with ``profile_for``: every block linear, the LM head and the embedding stored at
  16 bits, or at 8/4 bits with one fp16 scale per group of 32 (symmetric) -- the formats
  ``autocompress.models.annotations.set_weight_format`` records. ``check_profile_for`` shows on a randomly
  initialised SmolLM2-135M-shaped ``LlamaForCausalLM`` that this is exactly what ``profile_model`` returns, so the
  larger models (3B-8B) need not be instantiated.
* ``RooflineModel(target).predict(profile, Workload(prompt_tokens=256, context_tokens=512))``; decode tokens/s =
  1000 / ``decode_ms_per_token``. Where the source states its context, the prediction at that context is given too.

Published figures are quoted as found (see ``PUBLISHED``: URL and what the page is); nothing is fitted here.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from autocompress.hardware import LinearProfile, ModelProfile, RooflineModel, Workload, list_targets, load_target

WORKLOAD = Workload(prompt_tokens=256, context_tokens=512)
GROUP = 32
RESULTS = Path(__file__).parent / "results" / "published_comparison.json"


@dataclass(frozen=True)
class Arch:
    """What a decoder-only LM's cost depends on (from each model's Hugging Face config.json)."""

    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool


ARCHS = {
    "SmolLM2-135M": Arch(30, 576, 1536, 9, 3, 64, 49152, True),
    "Qwen3-0.6B": Arch(28, 1024, 3072, 16, 8, 128, 151936, True),
    "Llama-3.2-3B": Arch(28, 3072, 8192, 24, 8, 128, 128256, True),
    "Llama-2-7B": Arch(32, 4096, 11008, 32, 32, 128, 32000, False),
    "Qwen3-8B": Arch(36, 4096, 12288, 32, 8, 128, 151936, False),
}


def profile_for(arch: Arch, bits: int = 16, group_size: int | None = GROUP) -> ModelProfile:
    """The profile ``profile_model`` returns for this geometry with every weight stored at ``bits``."""
    group = None if bits >= 16 else group_size
    h, d = arch.hidden, arch.head_dim
    shapes = [
        ("attn.q", h, arch.heads * d),
        ("attn.k", h, arch.kv_heads * d),
        ("attn.v", h, arch.kv_heads * d),
        ("attn.o", arch.heads * d, h),
        ("mlp.gate", h, arch.intermediate),
        ("mlp.up", h, arch.intermediate),
        ("mlp.down", arch.intermediate, h),
    ]
    linears = [
        LinearProfile(f"layers.{i}.{role}", role, i, n_in, n_out, bits, group)
        for i in range(arch.layers)
        for role, n_in, n_out in shapes
    ]
    linears.append(LinearProfile("lm_head", "lm_head", None, h, arch.vocab, bits, group))
    return ModelProfile(
        arch.layers,
        h,
        arch.heads,
        arch.kv_heads,
        d,
        arch.intermediate,
        arch.vocab,
        tuple(linears),
        embedding_bits=bits,
        tied_embeddings=arch.tied,
        embedding_group_size=group,
    )


def check_profile_for() -> None:
    """``profile_for`` equals ``profile_model`` of a random SmolLM2-135M with the formats recorded on its modules."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from autocompress.hardware import profile_model
    from autocompress.models.adapter import ModelAdapter
    from autocompress.models.annotations import WeightFormat, set_weight_format

    a = ARCHS["SmolLM2-135M"]
    torch.manual_seed(0)
    model = LlamaForCausalLM(
        LlamaConfig(
            hidden_size=a.hidden,
            intermediate_size=a.intermediate,
            num_hidden_layers=a.layers,
            num_attention_heads=a.heads,
            num_key_value_heads=a.kv_heads,
            vocab_size=a.vocab,
            tie_word_embeddings=a.tied,
        )
    ).eval()
    adapter = ModelAdapter(model)
    for bits in (16, 8, 4):
        fmt = WeightFormat(bits, None if bits >= 16 else GROUP)
        for site in adapter.linear_sites(include_lm_head=True):
            set_weight_format(site.module, fmt)
        set_weight_format(adapter.input_embedding, fmt)
        real, mine = profile_model(model), profile_for(a, bits)
        key = lambda p: [
            (lin.role, lin.layer, lin.in_features, lin.out_features, lin.bits, lin.group_size)  # noqa: E731
            for lin in p.linears
        ]
        assert key(real) == key(mine), "layer shapes/formats differ"
        assert (real.weight_bytes(), real.num_parameters) == (mine.weight_bytes(), mine.num_parameters)
        for name in list_targets():
            model_ = RooflineModel(load_target(name))
            assert model_.predict(real, WORKLOAD) == model_.predict(mine, WORKLOAD), name


@dataclass(frozen=True)
class Published:
    target: str
    model: str  # key of ARCHS
    quant: str  # as the source names it
    bits: int  # what we predict it with (4 and 8 with group-32 scales, 16 = fp16)
    tok_s: float  # published decode tokens/s
    runtime: str
    source: str  # what the page is
    url: str
    credibility: str  # "measured" (a run with its setup shown), "vendor", "user report", "low"
    source_ctx: int | None = None  # KV length the source decoded at, when stated (tg128 averages ~64)
    why: str = ""  # one sentence: what explains the gap


PUBLISHED = [
    Published(
        "raspberry-pi-5",
        "Llama-3.2-3B",
        "Q4_K_M (Ollama llama3.2:3b)",
        4,
        4.61,
        "Ollama 0.x (llama.cpp), CPU",
        "Jeff Geerling, geerlingguy/ai-benchmarks README, 'Llama 3.2:3b' table, row 'Pi 5 - 8GB' (details: issue #1)",
        "https://github.com/geerlingguy/ai-benchmarks",
        "measured",
        why="4.61 tok/s x ~2.0 GB of weights is >= 9.3 GB/s, i.e. >= 55% of 17.07 GB/s: the target's "
        "sustained fraction was raised from 0.4 to 0.55 from this figure, so the match is fitted.",
    ),
    Published(
        "snapdragon-8-gen3-cpu",
        "Qwen3-0.6B",
        "Q4_K_M",
        4,
        18.0,
        "llama.cpp (llama.rn), CPU",
        "Off Grid app docs, 'Hardware acceleration' page, table 'Snapdragon 8 Gen 3 (Adreno 750)', CPU-only column",
        "https://www.mintlify.com/alichherawalla/off-grid-mobile-ai/technical/hardware-acceleration",
        "low",
        why="Low-credibility figure (round numbers, no setup, lists a 'Qwen 3 7B' that does not exist); 18 tok/s "
        "x 0.37 GB is only 7 GB/s, far below any 8 Gen 3 llama.cpp CPU rate we would expect.",
    ),
    Published(
        "snapdragon-8-gen3-cpu",
        "Llama-3.2-3B",
        "Q4_K_M",
        4,
        8.0,
        "llama.cpp (llama.rn), CPU",
        "Off Grid app docs, same table, CPU-only column",
        "https://www.mintlify.com/alichherawalla/off-grid-mobile-ai/technical/hardware-acceleration",
        "low",
        why="Same low-credibility source: 8 tok/s x 2.0 GB = 16 GB/s against the 34.6 GB/s the 0.45 fraction "
        "assumes; an app's thread count or throttling, or a too-high fraction.",
    ),
    Published(
        "snapdragon-8-gen3-gpu",
        "Qwen3-0.6B",
        "Q4_K_M",
        4,
        28.0,
        "llama.cpp OpenCL (llama.rn), 33 layers offloaded",
        "Off Grid app docs, same table, GPU column",
        "https://www.mintlify.com/alichherawalla/off-grid-mobile-ai/technical/hardware-acceleration",
        "low",
        why="Low-credibility figure; llama.cpp's Adreno backend had no Q4_K kernels at introduction (PR #10693), "
        "so K-quant layers may have run elsewhere, and the 15 us launch estimate dominates a 0.6B model.",
    ),
    Published(
        "snapdragon-8-gen3-gpu",
        "Llama-3.2-3B",
        "Q4_K_M",
        4,
        14.0,
        "llama.cpp OpenCL (llama.rn), 33 layers offloaded",
        "Off Grid app docs, same table, GPU column",
        "https://www.mintlify.com/alichherawalla/off-grid-mobile-ai/technical/hardware-acceleration",
        "low",
        why="Low-credibility figure; 14 tok/s x 2 GB = 28 GB/s, well under the 46 GB/s the target assumes, "
        "consistent with Adreno 4-bit GEMV kernels that do not stream at bus speed (a dev.to user measured "
        "Q4_0 slower than Q8_0 with the Adreno backend).",
    ),
    Published(
        "snapdragon-8-gen3-npu",
        "Llama-3.2-3B",
        "w4a16 (AI Hub Llama-v3.2-3B-Chat)",
        4,
        20.0,
        "Qualcomm Genie / QNN HTP (AI Hub context binaries)",
        "pytorch/executorch issue #7411 'comparison with qualcomm ai hub model' (user report; ExecuTorch QNN "
        "W4A16 on the same phone: 10 tok/s)",
        "https://github.com/pytorch/executorch/issues/7411",
        "user report",
        why="Within 6%, but our all-int4 profile (2.0 GB) is lighter than AI Hub's 2.4 GB bundle (w8a16 "
        "layers), so at equal bytes we'd predict ~18 tok/s (0.9x); "
        "ExecuTorch QNN (10 tok/s) would be over-predicted 2x.",
    ),
    Published(
        "apple-m2-gpu",
        "Llama-2-7B",
        "F16",
        16,
        6.72,
        "llama.cpp Metal, build 8e672ef",
        "llama.cpp discussion #4167 'Performance of llama.cpp on Apple Silicon M-series', M2 (10 GPU cores) row",
        "https://github.com/ggml-org/llama.cpp/discussions/4167",
        "measured",
        source_ctx=64,
        why="The thread implies 88% of 102.4 GB/s for F16, overheads included; the target's fraction is "
        "capped at the catalog's 0.8 bound, hence ~10% slow (this thread set that fraction: a consistency check).",
    ),
    Published(
        "apple-m2-gpu",
        "Llama-2-7B",
        "Q8_0",
        8,
        12.21,
        "llama.cpp Metal, build 8e672ef",
        "llama.cpp discussion #4167, M2 (10 GPU cores) row",
        "https://github.com/ggml-org/llama.cpp/discussions/4167",
        "measured",
        source_ctx=64,
        why="The 0.8 cap, as F16 (our int8 format stores Q8_0's 8.5 bits/weight: one fp16 scale per 32).",
    ),
    Published(
        "apple-m2-gpu",
        "Llama-2-7B",
        "Q4_0",
        4,
        21.91,
        "llama.cpp Metal, build 8e672ef",
        "llama.cpp discussion #4167, M2 (10 GPU cores) row",
        "https://github.com/ggml-org/llama.cpp/discussions/4167",
        "measured",
        source_ctx=64,
        why="The 0.8 cap, as F16 (our int4 format stores Q4_0's 4.5 bits/weight).",
    ),
    Published(
        "jetson-orin-nano",
        "Llama-3.2-3B",
        "INT4 (MLC q4f16)",
        4,
        43.07,
        "MLC-LLM (NVIDIA's benchmark)",
        "NVIDIA Technical Blog 'NVIDIA Jetson Orin Nano Developer Kit Gets a Super Boost', LLM table, Super "
        "mode (read via the copy in msmcs-robotics/WayfindR-driver docs/jetson_orin_nano_llm_benchmarks.md)",
        "https://developer.nvidia.com/blog/nvidia-jetson-orin-nano-developer-kit-gets-a-super-boost/",
        "vendor",
        why="MLC's q4f16 stores ~4.5 bits/weight (~1.8 GB; we assume 5, 2.0 GB) and so streams ~78 GB/s "
        "(76%) against the uncalibrated 0.7, and 8 us x ~400 launches (3.2 ms) is too much for MLC's fused kernels.",
    ),
    Published(
        "jetson-orin-nano",
        "SmolLM2-135M",
        "~4-bit GGUF (101 MB file; consistent with Q4_K_M)",
        4,
        165.2,
        "llama.cpp CUDA, -ngl 99, 25 W mode",
        "smolhub.com 'Tiny LLM Benchmark: Jetson Orin Nano Super 8GB -- Four Power Modes x Eight Models', "
        "Table 1 (ctx=2048, gen=256)",
        "https://www.smolhub.com/posts/jetson-nano-super-benchmark-non-reasoning/",
        "measured",
        source_ctx=2176,
        why="Launch-bound: 8 us x 423 ops = 3.4 ms of the 5.3 ms predicted at the source's 2k context (1.15x); "
        "the run used 25 W mode (GPU at 820 MHz, not 1020) and its throughput may include the 2k-token prefill.",
    ),
    Published(
        "intel-core-ultra-cpu",
        "Qwen3-8B",
        "Q4_K_M",
        4,
        3.86,
        "llama.cpp SYCL build with -ngl 0 (weights and decode on the CPU)",
        "Oaklight/openvino-meteor-lake-ai-inference results/x1c-gen12-ultra7-155h.md (ThinkPad X1 Carbon "
        "Gen 12, 32 GB), tg128 = 3.86 +/- 0.81",
        "https://github.com/Oaklight/openvino-meteor-lake-ai-inference/blob/main/results/x1c-gen12-ultra7-155h.md",
        "low",
        source_ctx=64,
        why="Not a clean CPU-backend run (SYCL build, +/-21% spread, laptop power mode unknown); 3.86 tok/s x "
        "~5 GB = 19 GB/s, half of what the target's 0.4 fraction assumes.",
    ),
]


def tok_s(target: str, arch: Arch, bits: int, context: int | None = None) -> float:
    workload = WORKLOAD if context is None else Workload(WORKLOAD.prompt_tokens, context)
    ms = RooflineModel(load_target(target)).predict(profile_for(arch, bits), workload)["decode_ms_per_token"]
    return 1000.0 / ms


def published_rows() -> list[dict]:
    rows = []
    for p in PUBLISHED:
        arch = ARCHS[p.model]
        pred = tok_s(p.target, arch, p.bits)
        at_ctx = tok_s(p.target, arch, p.bits, p.source_ctx) if p.source_ctx else None
        rows.append(
            {
                **asdict(p),
                "predicted_tok_s": round(pred, 2),
                "predicted_tok_s_at_source_ctx": None if at_ctx is None else round(at_ctx, 2),
                "ratio_predicted_over_published": round(pred / p.tok_s, 2),
                "weights_gb": round(profile_for(arch, p.bits).weight_bytes() / 1e9, 3),
            }
        )
    return rows


def smollm_rows() -> dict[str, dict[str, float]]:
    arch = ARCHS["SmolLM2-135M"]
    return {
        name: {
            label: round(tok_s(name, arch, bits), 1) for label, bits in (("fp16", 16), ("int8_g32", 8), ("int4_g32", 4))
        }
        for name in list_targets()
    }


def main() -> None:
    check_profile_for()
    rows, smol = published_rows(), smollm_rows()
    print(
        f"Workload: prompt {WORKLOAD.prompt_tokens}, context {WORKLOAD.context_tokens}; "
        f"8/4-bit weights with group-{GROUP} scales\n"
    )
    print(
        "| target | model | quant | published tok/s | predicted tok/s | pred. at source ctx "
        "| predicted/published | credibility |"
    )
    print("|---|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        ctx = (
            ""
            if r["predicted_tok_s_at_source_ctx"] is None
            else f"{r['predicted_tok_s_at_source_ctx']:.1f} (ctx {r['source_ctx']})"
        )
        print(
            f"| {r['target']} | {r['model']} | {r['quant']} | {r['tok_s']:g} | {r['predicted_tok_s']:.1f} | {ctx} "
            f"| {r['ratio_predicted_over_published']:.2f} | {r['credibility']} |"
        )
    print("\nSmolLM2-135M predicted decode tok/s\n")
    print("| target | fp16 | int8 (g32) | int4 (g32) |")
    print("|---|---:|---:|---:|")
    for name, v in smol.items():
        print(f"| {name} | {v['fp16']:.1f} | {v['int8_g32']:.1f} | {v['int4_g32']:.1f} |")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(
        json.dumps(
            {
                "generated_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
                "workload": asdict(WORKLOAD),
                "group_size": GROUP,
                "published": rows,
                "smollm2_135m_tok_s": smol,
                "archs": {k: asdict(v) for k, v in ARCHS.items()},
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
