"""Write a compressed model as a GGUF file that llama.cpp loads.

Each weight gets the GGUF type its recorded format maps to (:func:`choose_type`): 8 bits on groups
of 32 -> Q8_0, 4 bits symmetric -> Q4_0, asymmetric -> Q4_1, anything else -> the nearest block type
(requantized from the model's effective weight, with the extra error reported), unquantized weights
-> F16 (or F32). A weight quantized on the GGUF grid (``quantize`` with ``grid: gguf``) carries its
codes and scales, which are written verbatim: the file dequantizes to exactly the model's weights.
AWQ's per-input-channel scale is folded into the RMSNorm that feeds q/k/v or gate/up.

Tensor names and metadata follow llama.cpp's ``convert_hf_to_gguf.py`` (llama and qwen2
architectures; pruned depth and uniform pruned widths are plain hyperparameters there).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import gguf
import numpy as np
import torch
from torch import nn

from autocompress.errors import ConfigError
from autocompress.export.gguf_blocks import BLOCK, QUANTIZERS, BlockQuant, block_kind, pack
from autocompress.export.gguf_metadata import copy_tokenizer, write_bpe_tokenizer, write_hyperparameters
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, WeightGrid, weight_format, weight_grid

FLOAT_TYPES = {"F16": gguf.GGMLQuantizationType.F16, "F32": gguf.GGMLQuantizationType.F32}
BLOCK_TYPES = {
    "Q8_0": gguf.GGMLQuantizationType.Q8_0,
    "Q4_0": gguf.GGMLQuantizationType.Q4_0,
    "Q4_1": gguf.GGMLQuantizationType.Q4_1,
}
FILE_TYPES = {
    "F32": gguf.LlamaFileType.ALL_F32,
    "F16": gguf.LlamaFileType.MOSTLY_F16,
    "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    "Q4_0": gguf.LlamaFileType.MOSTLY_Q4_0,
    "Q4_1": gguf.LlamaFileType.MOSTLY_Q4_1,
}


@dataclass(frozen=True)
class Arch:
    """A transformers ``model_type`` llama.cpp knows, and what its converter does differently."""

    gguf_arch: gguf.MODEL_ARCH
    permute_qk: bool  # llama.cpp's llama rotates interleaved pairs; HF rotates halves


ARCHS = {"llama": Arch(gguf.MODEL_ARCH.LLAMA, True), "qwen2": Arch(gguf.MODEL_ARCH.QWEN2, False)}


@dataclass(frozen=True)
class TensorRecord:
    """What one tensor became in the file and how far it is from the model's weight."""

    name: str
    type: str
    source: str  # "grid" (codes written verbatim), "requantized", "requested" (embedding_type), "float"
    max_abs_error: float
    rel_rms_error: float
    note: str = ""


@dataclass
class GGUFReport:
    path: str
    architecture: str
    file_bytes: int = 0
    tensors: list[TensorRecord] = field(default_factory=list)

    @property
    def lossless(self) -> bool:
        """Every quantized weight reached the file without a second rounding."""
        return all(t.source != "requantized" for t in self.tensors)

    def summary(self) -> dict:
        types: dict[str, int] = {}
        for t in self.tensors:
            types[t.type] = types.get(t.type, 0) + 1
        worst = max(
            (t for t in self.tensors if t.source in ("requantized", "requested")),
            key=lambda t: t.rel_rms_error,
            default=None,
        )
        return {
            "path": self.path,
            "architecture": self.architecture,
            "file_bytes": self.file_bytes,
            "tensor_types": types,
            "lossless": self.lossless,
            "requantized": [t.name for t in self.tensors if t.source == "requantized"],
            "max_rel_rms_error": worst.rel_rms_error if worst else 0.0,
            "notes": sorted({t.note for t in self.tensors if t.note}),
        }


def choose_type(bits: int, group: int | None, symmetric: bool, cols: int, float_type: str = "F16") -> tuple[str, str]:
    """The GGUF type of a weight stored at ``bits`` on groups of ``group`` inputs (None/0 = whole row),
    and why, when it is not the exact counterpart of the recorded format."""
    if bits >= 16:
        return float_type, ""
    if cols % BLOCK:
        return float_type, f"input width {cols} is not a multiple of {BLOCK}: stored as {float_type}"
    exact = block_kind(bits, symmetric)
    if exact and group == BLOCK:
        return exact, ""
    nearest = "Q8_0" if bits > 4 else ("Q4_0" if symmetric else "Q4_1")
    label = f"w{bits}g{group or 'row'}{'' if symmetric else 'a'}"
    return nearest, f"{label} has no GGUF counterpart: requantized as {nearest}"


# ---- grids recorded by the quantizer ---------------------------------------------------------------


def grid_blocks(grid: WeightGrid, weight: torch.Tensor, kind: str) -> tuple[BlockQuant, torch.Tensor] | None:
    """The recorded codes of ``weight`` as GGUF blocks of ``kind``, and the stored weight they dequantize
    to (the weight times AWQ's input scale, if any); None when the grid is not that GGUF grid
    (another group, scales that are not fp16 numbers, a zero point fp16 cannot express)."""
    if grid.group != BLOCK or block_kind(grid.bits, grid.symmetric) != kind:
        return None
    scale, zero = grid.scale, grid.zero
    m = None if grid.symmetric else -zero * scale
    if not torch.equal(scale.half().float(), scale) or (m is not None and not torch.equal(m.half().float(), m)):
        return None
    codes = grid.codes(weight)
    stored = replace(grid, input_scale=None).dequantize(codes)
    blocks = BlockQuant(kind, codes.to(torch.int8), scale, m)
    return (blocks, stored) if torch.equal(blocks.dequantize(), stored) else None


# ---- tensors --------------------------------------------------------------------------------------


def _qk_rows(rows: int, heads: int) -> torch.Tensor:
    """convert_hf_to_gguf's ``permute``: HF's half-split rotary pairs -> llama.cpp's interleaved ones."""
    index = torch.arange(rows)
    return index.reshape(heads, 2, rows // heads // 2).transpose(1, 2).reshape(rows)


def _errors(approx: torch.Tensor, exact: torch.Tensor) -> tuple[float, float]:
    delta = approx.to(torch.float32) - exact.to(torch.float32)
    rms = exact.to(torch.float32).pow(2).mean().sqrt().item()
    return delta.abs().max().item(), (delta.pow(2).mean().sqrt().item() / rms) if rms > 0 else 0.0


class _Writer:
    """Collects tensors (numpy arrays in llama.cpp's layout) and their records, then writes the file."""

    def __init__(self, writer: gguf.GGUFWriter, float_type: str):
        self.writer, self.float_type = writer, float_type
        self.records: list[TensorRecord] = []

    def float_tensor(self, name: str, tensor: torch.Tensor, dtype: str | None = None, note: str = "") -> None:
        dtype = dtype or (self.float_type if tensor.dim() > 1 else "F32")  # norms and biases stay F32
        array = tensor.detach().to(torch.float16 if dtype == "F16" else torch.float32).contiguous()
        max_err, rel = _errors(array, tensor)
        self.writer.add_tensor(name, array.numpy(), raw_dtype=FLOAT_TYPES[dtype])
        self.records.append(TensorRecord(name, dtype, "float", max_err, rel, note))

    def block_tensor(self, name: str, blocks: BlockQuant, reference: torch.Tensor, source: str, note: str = "") -> None:
        max_err, rel = _errors(blocks.dequantize(), reference)
        raw = pack(blocks)
        self.writer.add_tensor(name, raw, raw_shape=raw.shape, raw_dtype=BLOCK_TYPES[blocks.kind])
        self.records.append(TensorRecord(name, blocks.kind, source, max_err, rel, note))


def _linear_tensor(
    out: _Writer, name: str, weight: torch.Tensor, fmt: WeightFormat, grid: WeightGrid | None, rows: torch.Tensor | None
) -> None:
    """One weight matrix: recorded codes verbatim when they are on its GGUF type's grid, else requantized."""
    kind, note = choose_type(
        fmt.bits, grid.group if grid else fmt.group_size, fmt.symmetric, weight.shape[1], out.float_type
    )
    perm = (lambda t: t) if rows is None else (lambda t: t[rows])
    if kind in FLOAT_TYPES:
        out.float_tensor(name, perm(weight), kind, note)
        return
    recorded = grid_blocks(grid, weight, kind) if grid is not None else None
    if recorded is not None:
        blocks, stored = recorded
        out.block_tensor(
            name,
            blocks if rows is None else blocks.rows(rows),
            perm(stored),
            "grid",
            "AWQ scale folded into the norm before" if grid.input_scale is not None else note,
        )
        return
    if grid is not None and grid.input_scale is not None:
        raise ConfigError(
            "quantize.grid",
            f"{name}: AWQ weights off the GGUF grid cannot be exported "
            "(their input scale has nowhere to go); quantize with grid: gguf",
        )
    out.block_tensor(
        name,
        QUANTIZERS[kind](perm(weight)),
        perm(weight),
        "requantized",
        note or "not on the GGUF grid (quantize with grid: gguf for a lossless export)",
    )


# ---- the file -------------------------------------------------------------------------------------


@torch.no_grad()
def write_gguf(
    model: nn.Module,
    tokenizer,
    out_path: Path,
    *,
    float_type: str = "F16",
    embedding_type: str | None = None,
    grids: dict[str, WeightGrid] | None = None,
    source_gguf: Path | None = None,
    name: str = "autocompress",
) -> GGUFReport:
    """Write ``model`` (a llama or qwen2 causal LM, possibly compressed) to ``out_path`` as GGUF.

    ``grids``: the recorded grids by module name (``load_grids`` of an artifact); default: the ones
    recorded on the modules in memory. ``embedding_type``: a block type for an input embedding the
    recipe left unquantized (llama.cpp's own quantizer stores a tied embedding as Q8_0 or Q6_K)."""
    if float_type not in FLOAT_TYPES:
        raise ConfigError("--float-type", f"{float_type!r} is not supported; allowed: {', '.join(FLOAT_TYPES)}")
    if embedding_type is not None and embedding_type not in BLOCK_TYPES and embedding_type not in FLOAT_TYPES:
        raise ConfigError(
            "--embedding-type",
            f"{embedding_type!r} is not supported; allowed: {', '.join([*FLOAT_TYPES, *BLOCK_TYPES])}",
        )
    model_type = getattr(model.config, "model_type", None)
    arch = ARCHS.get(model_type)
    if arch is None:
        raise ConfigError("--format", f"gguf export supports the {', '.join(ARCHS)} architectures, not {model_type!r}")
    adapter = ModelAdapter(model)
    sites = adapter.linear_sites()
    widths = {s.module.out_features for s in sites if s.role == "mlp.up"}
    if len(widths) > 1:
        raise ConfigError(
            "--format", f"gguf export needs one MLP width for all layers; this model has {sorted(widths)}"
        )
    names = gguf.get_tensor_name_map(arch.gguf_arch, adapter.num_layers)
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    arch_name = gguf.MODEL_ARCH_NAMES[arch.gguf_arch]
    w = gguf.GGUFWriter(str(tmp), arch_name)
    out = _Writer(w, float_type)
    try:
        w.add_name(name)
        write_hyperparameters(w, adapter, widths.pop() if widths else adapter.config.intermediate_size)
        if source_gguf is None or not copy_tokenizer(w, source_gguf, adapter.vocab_size):
            write_bpe_tokenizer(w, tokenizer, adapter.vocab_size)
        if grids is None:
            grids = {n: g for n, m in model.named_modules() if (g := weight_grid(m)) is not None}
        _write_tensors(out, model, adapter, arch, names, grids, embedding_type)
        kinds = [r.type for r in out.records if r.type in BLOCK_TYPES]
        w.add_file_type(FILE_TYPES[max(set(kinds), key=kinds.count) if kinds else float_type])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        tmp.rename(out_path)
    except BaseException:
        w.close()
        tmp.unlink(missing_ok=True)
        raise
    return GGUFReport(str(out_path), arch_name, out_path.stat().st_size, out.records)


def _norm_scales(adapter: ModelAdapter, grids: dict[str, WeightGrid]) -> dict[int, torch.Tensor]:
    """AWQ: the input scale each norm must be divided by, keyed by ``id(norm)``; the members of an
    input group share one scale (checked)."""
    folded: dict[int, torch.Tensor] = {}
    for group, sites in adapter.input_groups():
        scales = [g.input_scale for s in sites if (g := grids.get(s.name)) and g.input_scale is not None]
        if not scales:
            continue
        if (
            group not in ("attn.in", "mlp.in")
            or len(scales) != len(sites)
            or any(not torch.equal(s, scales[0]) for s in scales)
        ):
            raise ConfigError(
                "quantize.method",
                f"AWQ scales on {sites[0].name} ({group}) cannot be folded "
                "into a norm; use grid: gguf, which scales only q/k/v and gate/up",
            )
        folded[id(adapter.input_norm(sites[0].layer, group))] = scales[0]
    return folded


def _write_tensors(
    out: _Writer,
    model: nn.Module,
    adapter: ModelAdapter,
    arch: Arch,
    names,
    grids: dict[str, WeightGrid],
    embedding_type: str | None,
) -> None:
    linears = {id(s.module): s for s in adapter.linear_sites()}
    folded = _norm_scales(adapter, grids)
    modules = dict(model.named_modules(remove_duplicate=False))
    head = next(n for n, m in modules.items() if m is adapter.lm_head)
    for hf_name, tensor in model.state_dict(keep_vars=False).items():
        if hf_name == f"{head}.weight" and adapter.tied_embeddings:
            continue  # llama.cpp reuses token_embd for a tied head
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ConfigError("--format", f"tensor {hf_name!r} has no GGUF name for {arch.gguf_arch.name.lower()}")
        module_name, _, kind = hf_name.rpartition(".")
        module = modules.get(module_name)
        site = linears.get(id(module))
        if site is not None and kind == "weight":
            rows = None
            if arch.permute_qk and site.role in ("attn.q", "attn.k"):
                heads = adapter.num_heads if site.role == "attn.q" else adapter.num_kv_heads
                rows = _qk_rows(tensor.shape[0], heads)
            _linear_tensor(
                out, gguf_name, tensor, _format(module, grids.get(module_name)), grids.get(module_name), rows
            )
        elif site is not None and arch.permute_qk and site.role in ("attn.q", "attn.k"):
            heads = adapter.num_heads if site.role == "attn.q" else adapter.num_kv_heads
            out.float_tensor(gguf_name, tensor[_qk_rows(tensor.shape[0], heads)])
        elif id(module) in folded and kind == "weight":
            out.float_tensor(gguf_name, tensor / folded[id(module)], "F32", "AWQ input scale folded into this norm")
        elif module is adapter.input_embedding and embedding_type and module_name not in grids:
            note = f"unquantized embedding stored as {embedding_type} (embedding_type)"
            if embedding_type in FLOAT_TYPES:
                out.float_tensor(gguf_name, tensor, embedding_type, note)
            else:
                out.block_tensor(gguf_name, QUANTIZERS[embedding_type](tensor), tensor, "requested", note)
        elif module is adapter.input_embedding or module is adapter.lm_head:
            _linear_tensor(
                out, gguf_name, tensor, _format(module, grids.get(module_name)), grids.get(module_name), None
            )
        else:
            out.float_tensor(gguf_name, tensor)


def _format(module: nn.Module, grid: WeightGrid | None) -> WeightFormat:
    """The storage format of a weight: from its recorded grid (an artifact's) or its annotation."""
    return WeightFormat(grid.bits, grid.group, grid.symmetric) if grid is not None else weight_format(module)


def dequantized_tensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a GGUF file as float32, in the file's layout (what llama.cpp computes with)."""
    reader = gguf.GGUFReader(str(path))
    out = {}
    for t in reader.tensors:
        shape = tuple(int(n) for n in reversed(t.shape))
        out[t.name] = gguf.quants.dequantize(t.data, t.tensor_type).reshape(shape).astype(np.float32)
    return out


def model_bytes_per_token(path: Path) -> int:
    """Bytes of tensor data read per decoded token: every tensor except the input embedding table
    (one row of it is read), plus that row; a tied head reads the whole table."""
    reader = gguf.GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    embedding = sizes.pop("token_embd.weight", 0)
    tied = "output.weight" not in sizes
    rows = next((int(t.shape[1]) for t in reader.tensors if t.name == "token_embd.weight"), 1)
    return sum(sizes.values()) + (embedding if tied else math.ceil(embedding / max(rows, 1)))
