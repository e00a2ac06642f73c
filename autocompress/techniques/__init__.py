"""Compression techniques; importing this package registers the built-in ones."""

from autocompress.techniques import (distill, early_exit, prune_depth, prune_width, quantize,  # noqa: F401
                                     reserved, sparsify)
from autocompress.techniques.base import TECHNIQUES, Technique, register_technique, require_technique

__all__ = ["TECHNIQUES", "Technique", "register_technique", "require_technique"]
