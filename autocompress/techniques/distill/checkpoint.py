"""Resumable training state as one safetensors file: trainable tensors, AdamW state, step, losses.

Written atomically (temporary file, then rename) every few steps and at the end, in the context's
cache directory under a content key of (model entering the step, params, data, seed): a re-run of
the same step resumes where the last run stopped, and a finished run is reused without training.
No pickle: optimizer moments are tensors, the step and the loss history are JSON in the metadata.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file


@dataclass
class TrainState:
    step: int = 0
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0  # the step this run started at (not stored)


class Checkpoint:
    """The training state of one distillation run, at ``path``."""

    def __init__(self, path: Path):
        self.path = path

    def save(
        self, state: TrainState, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer | None
    ) -> None:
        flat = {f"param/{name}": t.detach().cpu().contiguous().clone() for name, t in tensors.items()}
        if optimizer is not None:
            for index, moments in optimizer.state_dict()["state"].items():
                for key, value in moments.items():
                    flat[f"optim/{index}/{key}"] = torch.as_tensor(value).cpu().contiguous().clone()
        meta = {"state": json.dumps({"step": state.step, "losses": state.losses})}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        save_file(flat, str(tmp), metadata=meta)
        tmp.rename(self.path)

    @torch.no_grad()
    def load(self, tensors: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> TrainState | None:
        """Restore into ``tensors`` (in place) and ``optimizer``; None when there is no usable checkpoint."""
        if not self.path.is_file():
            return None
        with safe_open(str(self.path), framework="pt") as fh:
            keys = set(fh.keys())
            if {f"param/{name}" for name in tensors} - keys:
                return None  # written by a different trainable set: start over
            meta = json.loads(fh.metadata()["state"])
            for name, t in tensors.items():
                t.copy_(fh.get_tensor(f"param/{name}"))
            moments: dict[int, dict[str, torch.Tensor]] = {}
            for key in keys:
                if key.startswith("optim/"):
                    _, index, name = key.split("/")
                    moments.setdefault(int(index), {})[name] = fh.get_tensor(key)
        if moments:
            optimizer.load_state_dict({"state": moments, "param_groups": optimizer.state_dict()["param_groups"]})
        return TrainState(meta["step"], meta["losses"], meta["step"])
