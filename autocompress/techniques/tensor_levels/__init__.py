"""Per-tensor levels from the compressed-layer store (``technique: tensor_levels``)."""

from autocompress.techniques.tensor_levels.technique import TensorLevels, TensorLevelsParams

__all__ = ["TensorLevels", "TensorLevelsParams"]
