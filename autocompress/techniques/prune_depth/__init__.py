"""The prune_depth technique: drop the decoder blocks of lowest block influence (``technique.py``)."""

from autocompress.techniques.prune_depth.technique import PruneDepth, PruneDepthParams, block_influence, predict_depth

__all__ = ["PruneDepth", "PruneDepthParams", "block_influence", "predict_depth"]
