"""A compact safetensors artifact: bit-packed integer codes, scales and zero points, sparse masks.

``packed/model.safetensors`` holds, per quantized weight (one with a recorded grid), its codes packed
at ``bits`` per value (``.codes``), its scales (fp16 when they are fp16 numbers, else fp32), zero
points (uint8, asymmetric only) and AWQ input scale; per float weight with at least half zeros
(unstructured or 2:4 sparsity) a 1-bit mask and the non-zero values in fp16 (``.mask``, ``.values``;
the same bits as 2:4's "2 values + 2-bit indices" storage); every other tensor in fp16 (norms and
biases fp32). :func:`load_packed` rebuilds the model: quantized weights equal the compressed
model's bit for bit, float weights up to fp16 rounding (what the hardware model prices them at).
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from autocompress.errors import ConfigError
from autocompress.models.annotations import WeightFormat, WeightGrid, set_weight_format, set_weight_grid

PACKED_DIR = "packed"
PACKED_FILE = "model.safetensors"


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned integers ``< 2**bits`` -> a uint8 stream, ``bits`` per value, little-endian bit order."""
    v = values.reshape(-1).numpy().astype(np.uint8)
    planes = ((v[:, None] >> np.arange(bits, dtype=np.uint8)) & 1).astype(np.uint8)
    return torch.from_numpy(np.packbits(planes.reshape(-1), bitorder="little"))


def unpack_bits(packed: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    planes = np.unpackbits(packed.numpy(), bitorder="little")[: count * bits].reshape(count, bits)
    return torch.from_numpy((planes.astype(np.int32) << np.arange(bits, dtype=np.int32)).sum(1))


def _pack_grid(name: str, weight: torch.Tensor, grid: WeightGrid) -> tuple[dict[str, torch.Tensor], dict]:
    lo, _ = grid.int_range
    codes = grid.codes(weight) - lo
    tensors = {f"{name}.codes": pack_bits(codes, grid.bits)}
    half = grid.scale.half()
    tensors[f"{name}.scale"] = half if torch.equal(half.float(), grid.scale) else grid.scale
    if not grid.symmetric:
        tensors[f"{name}.zero"] = grid.zero.to(torch.uint8)
    if grid.input_scale is not None:
        tensors[f"{name}.input_scale"] = grid.input_scale
    return tensors, {"bits": grid.bits, "group": grid.group, "symmetric": grid.symmetric, "shape": list(weight.shape)}


def _unpack_grid(f, name: str, meta: dict) -> tuple[torch.Tensor, WeightGrid]:
    keys = set(f.keys())
    scale = f.get_tensor(f"{name}.scale").float()
    zero = f.get_tensor(f"{name}.zero").float() if f"{name}.zero" in keys else torch.zeros_like(scale)
    grid = WeightGrid(
        scale,
        zero,
        meta["bits"],
        meta["group"],
        meta["symmetric"],
        f.get_tensor(f"{name}.input_scale") if f"{name}.input_scale" in keys else None,
    )
    shape = tuple(meta["shape"])
    codes = unpack_bits(f.get_tensor(f"{name}.codes"), grid.bits, math.prod(shape)).reshape(shape)
    return grid.dequantize(codes + grid.int_range[0]), grid


def _sparse(weight: torch.Tensor) -> bool:
    return weight.dim() == 2 and (weight == 0).float().mean().item() >= 0.5


@torch.no_grad()
def write_packed(model: nn.Module, grids: dict[str, WeightGrid], folder: Path) -> Path:
    """Write ``folder/model.safetensors`` (+ config.json); returns the safetensors path."""
    folder = Path(folder)
    tmp = folder.with_name(f".{folder.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors: dict[str, torch.Tensor] = {}
    layout: dict[str, dict] = {}
    seen: dict[int, str] = {}
    for key, tensor in model.state_dict().items():
        module = key.rpartition(".")[0]
        if tensor.data_ptr() in seen:  # a tied head: stored once
            layout[key] = {"kind": "alias", "of": seen[tensor.data_ptr()]}
            continue
        seen[tensor.data_ptr()] = key
        if key.endswith(".weight") and module in grids:
            packed, meta = _pack_grid(key, tensor, grids[module])
            tensors |= packed
            layout[key] = {"kind": "grid", **meta}
        elif _sparse(tensor):
            mask = tensor != 0
            tensors[f"{key}.mask"] = pack_bits(mask.to(torch.uint8), 1)
            tensors[f"{key}.values"] = tensor[mask].half()
            layout[key] = {"kind": "sparse", "shape": list(tensor.shape)}
        else:
            tensors[key] = tensor.half().contiguous() if tensor.dim() > 1 else tensor.float().contiguous()
            layout[key] = {"kind": "dense"}
    try:
        save_file(
            {k: v.contiguous() for k, v in tensors.items()},
            str(tmp / PACKED_FILE),
            metadata={"layout": json.dumps(layout)},
        )
        model.config.to_json_file(str(tmp / "config.json"))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder / PACKED_FILE


@torch.no_grad()
def load_packed(folder: Path) -> nn.Module:
    """Rebuild the model from a packed folder (fp32, eval), grids and formats recorded on its modules."""
    from transformers import AutoConfig, AutoModelForCausalLM

    folder = Path(folder)
    path = folder / PACKED_FILE
    if not path.is_file():
        raise ConfigError("packed", f"{str(folder)!r} has no {PACKED_FILE}")
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder), dtype=torch.float32)
    modules = dict(model.named_modules())
    state = {}
    with safe_open(str(path), framework="pt") as f:
        layout = json.loads(f.metadata()["layout"])
        for key, meta in layout.items():
            if meta["kind"] == "grid":
                state[key], grid = _unpack_grid(f, key, meta)
                module = modules[key.rpartition(".")[0]]
                set_weight_grid(module, grid)
                set_weight_format(module, WeightFormat(grid.bits, grid.group, grid.symmetric))
            elif meta["kind"] == "sparse":
                mask = unpack_bits(f.get_tensor(f"{key}.mask"), 1, math.prod(meta["shape"]))
                dense = torch.zeros(meta["shape"])
                dense[mask.reshape(meta["shape"]).bool()] = f.get_tensor(f"{key}.values").float()
                state[key] = dense
            elif meta["kind"] == "dense":
                state[key] = f.get_tensor(key).float()
    missing = model.load_state_dict(state, strict=False).missing_keys
    unexpected = [k for k in missing if layout.get(k, {}).get("kind") != "alias"]
    if unexpected:
        raise ConfigError("packed", f"{str(folder)!r} lacks tensors: {', '.join(unexpected[:3])}")
    model.tie_weights()
    return model.eval()


def export_packed(artifact: Path, out: Path | None = None) -> dict:
    """Pack an artifact folder's model (default ``<artifact>/packed/``); record sizes in deploy.json."""
    from autocompress.export.deploy import load_artifact, update_deploy
    from autocompress.export.grids import load_grids
    from autocompress.hardware.profile import profile_model

    artifact = Path(artifact)
    model, _ = load_artifact(artifact)
    grids = load_grids(artifact)
    for name, module in model.named_modules():  # formats drive the predicted size
        if name in grids:
            set_weight_format(module, WeightFormat(grids[name].bits, grids[name].group, grids[name].symmetric))
    path = write_packed(model, grids, Path(out) if out is not None else artifact / PACKED_DIR)
    result = {
        "path": str(path),
        "file_bytes": path.stat().st_size,
        "predicted_bytes": int(profile_model(model).weight_bytes()),
        "dense_checkpoint_bytes": sum(p.stat().st_size for p in artifact.glob("*.safetensors")),
    }
    update_deploy(artifact, "packed", result)
    return result
