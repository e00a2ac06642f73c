"""Samplers for per-tensor level spaces (issue 18, item 4): ``surrogate``, ``evopress``, ``allocate``.

Built against :class:`LevelProblem` (tensors, levels, bytes, proxies, size targets); the runner builds it
from the space and the compressed-layer store and passes it with the seed.
"""

from autocompress.search.per_tensor.allocate import AllocateSampler
from autocompress.search.per_tensor.base import PerTensorSampler
from autocompress.search.per_tensor.evopress import EvoPressSampler
from autocompress.search.per_tensor.problem import LevelProblem, TensorChoice
from autocompress.search.per_tensor.surrogate import SurrogateSampler

PER_TENSOR_SAMPLERS: dict[str, type[PerTensorSampler]] = {
    "surrogate": SurrogateSampler,
    "evopress": EvoPressSampler,
    "allocate": AllocateSampler,
}

__all__ = [
    "AllocateSampler",
    "EvoPressSampler",
    "LevelProblem",
    "PER_TENSOR_SAMPLERS",
    "PerTensorSampler",
    "SurrogateSampler",
    "TensorChoice",
]
