"""The quantize technique (``technique.py``) and its parts: the integer grid (``grid``), weight methods
(``rtn`` in ``grid``, ``gptq``, ``awq``, chosen through ``methods.WEIGHT_METHODS``), the per-module weight
cache (``weight_cache``), sensitivity-based bit allocation (``sensitivity``, ``latency``), activation and
KV-cache quantization (``activations``, ``kv``) and the Hadamard rotation (``rotation``)."""

from autocompress.techniques.quantize.params import QuantizeParams
from autocompress.techniques.quantize.technique import Quantize

__all__ = ["Quantize", "QuantizeParams"]
