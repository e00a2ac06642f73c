"""Samplers for per-tensor level spaces (issue 18, item 4): ``surrogate``, ``evopress``, ``allocate``.

Built against :class:`LevelProblem` (tensors, levels, bytes, proxies, size targets); the runner builds it
from the space and the compressed-layer store and passes it with the seed.
"""

from autocompress.search.per_tensor.problem import LevelProblem, TensorChoice
from autocompress.search.per_tensor.surrogate import SurrogateSampler

PER_TENSOR_SAMPLERS = {"surrogate": SurrogateSampler}

__all__ = ["LevelProblem", "TensorChoice", "SurrogateSampler", "PER_TENSOR_SAMPLERS"]
