"""The configurations that calibration fits on and validation measures (disjoint sets).

Synthetic models vary depth, MLP width, prompt and context length of the base architecture;
compressed real models add bits, group sizes and sparsity (which a fixed-width runtime must
predict as no faster, and which the measurements show are no faster).
"""

from __future__ import annotations

from typing import Iterator

from torch import nn

from autocompress.hardware.calibrate import Shape, synthetic_model
from autocompress.hardware.roofline import Workload
from autocompress.models.loading import DEFAULT_MODEL, resolve_checkpoint

CALIBRATION_SHAPES = (
    Shape("30 layers", 30), Shape("20 layers", 20), Shape("10 layers", 10),
    Shape("30 layers, ffn 768", 30, 768), Shape("15 layers, ffn 768", 15, 768),
    Shape("30 layers, p64 c128", 30, prompt_tokens=64, context_tokens=128),
    Shape("20 layers, p512 c1024", 20, prompt_tokens=512, context_tokens=1024),
    Shape("6 layers", 6),
)

VALIDATION_SHAPES = (
    Shape("28 layers", 28), Shape("24 layers", 24), Shape("16 layers", 16), Shape("8 layers", 8),
    Shape("4 layers", 4), Shape("26 layers, ffn 1152", 26, 1152), Shape("18 layers, ffn 1152", 18, 1152),
    Shape("30 layers, ffn 512", 30, 512), Shape("12 layers, ffn 2048", 12, 2048),
    Shape("30 layers, p32 c128", 30, prompt_tokens=32, context_tokens=128),
    Shape("30 layers, p128 c384", 30, prompt_tokens=128, context_tokens=384),
    Shape("22 layers, p384 c1024", 22, prompt_tokens=384, context_tokens=1024),
    Shape("14 layers, p192 c256", 14, prompt_tokens=192, context_tokens=256),
    Shape("30 layers, p256 c2048", 30, context_tokens=2048),
)

VALIDATION_RECIPES = {  # label -> recipe steps, applied to the real base model
    "int4 g32": [{"technique": "quantize", "params": {"bits": 4, "group_size": 32}}],
    "int8 g64": [{"technique": "quantize", "params": {"bits": 8, "group_size": 64}}],
    "int3 asym g64": [{"technique": "quantize", "params": {"bits": 3, "group_size": 64, "symmetric": False}}],
    "50% sparse": [{"technique": "sparsify", "params": {"sparsity": 0.5}}],
    "drop 6": [{"technique": "prune_depth", "params": {"drop_layers": 6}}],
    "drop 12 + int4": [{"technique": "prune_depth", "params": {"drop_layers": 12}},
                       {"technique": "quantize", "params": {"bits": 4, "group_size": 64}}],
    "drop 4 + 30% sparse + int8": [{"technique": "prune_depth", "params": {"drop_layers": 4}},
                                   {"technique": "sparsify", "params": {"sparsity": 0.3}},
                                   {"technique": "quantize", "params": {"bits": 8, "group_size": 32}}],
}


def shape_models(shapes: tuple[Shape, ...], model_ref: str = DEFAULT_MODEL) -> Iterator[tuple[str, nn.Module, Workload]]:
    folder = resolve_checkpoint(model_ref)
    for shape in shapes:
        yield shape.label, synthetic_model(folder, shape), Workload(shape.prompt_tokens, shape.context_tokens)


def recipe_models(model_ref: str = DEFAULT_MODEL) -> Iterator[tuple[str, nn.Module, Workload]]:
    from autocompress.pipeline import apply_recipe, open_session
    from autocompress.recipe import Recipe, TextSpec

    session = open_session(model_ref, TextSpec(), 0)
    for label, steps in VALIDATION_RECIPES.items():
        recipe = Recipe.parse_obj({"model": model_ref, "steps": steps})
        yield label, apply_recipe(session, recipe), Workload()
