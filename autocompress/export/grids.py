"""The quantization grids of a model's weights, saved beside its checkpoint.

The dense checkpoint holds dequantized floats; ``quant_grid.safetensors`` holds, per quantized
module, the scales, zero points and (AWQ) input scales that recover its integer codes exactly
(:class:`~autocompress.models.annotations.WeightGrid`). Exporters and QAT read them from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from autocompress.models.annotations import WeightGrid, weight_grid

GRID_FILE = "quant_grid.safetensors"


def model_grids(model: nn.Module) -> dict[str, WeightGrid]:
    """The recorded grid of every quantized module, by its name in ``model.named_modules()``."""
    return {name: grid for name, module in model.named_modules() if (grid := weight_grid(module)) is not None}


def save_grids(model: nn.Module, folder: Path) -> Path | None:
    """Write ``quant_grid.safetensors`` into ``folder``; nothing when no weight is quantized."""
    grids = model_grids(model)
    if not grids:
        return None
    tensors: dict[str, torch.Tensor] = {}
    formats = {}
    for name, grid in grids.items():
        # clone: a tied embedding and LM head share one grid, and safetensors refuses shared memory
        tensors[f"{name}.scale"] = grid.scale.clone()
        tensors[f"{name}.zero"] = grid.zero.clone()
        if grid.input_scale is not None:
            tensors[f"{name}.input_scale"] = grid.input_scale.clone()
        formats[name] = {"bits": grid.bits, "group": grid.group, "symmetric": grid.symmetric}
    path = Path(folder) / GRID_FILE
    save_file(tensors, str(path), metadata={"formats": json.dumps(formats, sort_keys=True)})
    return path


def load_grids(folder: Path) -> dict[str, WeightGrid]:
    """The grids saved by :func:`save_grids` (empty when the artifact has none)."""
    path = Path(folder) / GRID_FILE
    if not path.is_file():
        return {}
    with safe_open(str(path), framework="pt") as f:
        formats = json.loads((f.metadata() or {})["formats"])
        keys = set(f.keys())
        return {
            name: WeightGrid(
                f.get_tensor(f"{name}.scale"),
                f.get_tensor(f"{name}.zero"),
                fmt["bits"],
                fmt["group"],
                fmt["symmetric"],
                f.get_tensor(f"{name}.input_scale") if f"{name}.input_scale" in keys else None,
            )
            for name, fmt in formats.items()
        }
