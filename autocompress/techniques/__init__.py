"""Compression techniques; importing this package registers the built-in ones."""

from autocompress.techniques import distill, early_exit, prune_depth, prune_width, quantize, sparsify, tensor_levels  # noqa: F401
from autocompress.techniques.base import TECHNIQUES, RuntimeSupport, Technique, register_technique

__all__ = ["TECHNIQUES", "RuntimeSupport", "Technique", "register_technique"]
