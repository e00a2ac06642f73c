"""Compression techniques; importing this package registers the built-in ones."""

from autocompress.techniques import early_exit, prune_depth, prune_width, quantize, reserved, sparsify  # noqa: F401
from autocompress.techniques.base import TECHNIQUES, Technique, register_technique, require_technique

__all__ = ["TECHNIQUES", "Technique", "register_technique", "require_technique"]
