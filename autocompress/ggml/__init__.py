"""llama.cpp's weight types, exactly: sizes, llama.cpp's own (de)quantizers, fixed grids, activations."""

from .types import KV_CACHE_TYPES, TYPES, WEIGHT_TYPES, GGMLType, ggml_type, vec_dot_type

__all__ = ["KV_CACHE_TYPES", "TYPES", "WEIGHT_TYPES", "GGMLType", "ggml_type", "vec_dot_type"]
