"""The sparsify technique (``technique.py``) and its methods (``methods.SPARSITY_METHODS``: magnitude,
Wanda, SparseGPT in ``sparsegpt.py``), over the masks of ``masks.py``."""

from autocompress.techniques.sparsify.technique import Sparsify, SparsifyParams

__all__ = ["Sparsify", "SparsifyParams"]
