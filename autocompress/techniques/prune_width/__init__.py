"""The prune_width technique: narrow MLP channels and attention heads by activation norm (``technique.py``)."""

from autocompress.techniques.prune_width.technique import PruneWidth, PruneWidthParams, predict_width

__all__ = ["PruneWidth", "PruneWidthParams", "predict_width"]
