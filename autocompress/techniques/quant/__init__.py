"""The quantize technique's parts: the integer grid (``grid``), weight methods (``rtn`` in ``grid``,
``gptq``, ``awq``, chosen through ``methods.WEIGHT_METHODS``), the per-module weight cache (``weight_cache``)
and sensitivity-based bit allocation (``sensitivity``)."""
