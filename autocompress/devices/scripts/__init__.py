"""Files copied to a device and run there with its own interpreter (never imported on this machine)."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

LLAMA_SPEED = "llama_speed.py"


def script(name: str) -> Path:
    """The local path of a device script shipped in this package."""
    return Path(str(files(__name__) / name))
