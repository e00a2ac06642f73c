"""The configurations that calibration fits on and validation measures (disjoint sets).

Synthetic models vary depth, MLP width, prompt and context length of the base architecture;
compressed real models add bits, group sizes and sparsity (which a fixed-width runtime must
predict as no faster, and which the measurements show are no faster). The llama.cpp suites
measure every shape in each GGUF format (F16, Q8_0, Q4_0), where bits do change speed.
"""

from __future__ import annotations

from collections.abc import Iterator

from torch import nn

from autocompress.hardware.roofline import Workload
from autocompress.hosts.calibrate import Shape, synthetic_model
from autocompress.models.adapter import ModelAdapter
from autocompress.models.annotations import WeightFormat, set_weight_format
from autocompress.models.loading import DEFAULT_MODEL, resolve_checkpoint

CALIBRATION_SHAPES = (
    Shape("30 layers", 30),
    Shape("20 layers", 20),
    Shape("10 layers", 10),
    Shape("30 layers, ffn 768", 30, 768),
    Shape("15 layers, ffn 768", 15, 768),
    Shape("30 layers, p64 c128", 30, prompt_tokens=64, context_tokens=128),
    Shape("20 layers, p512 c1024", 20, prompt_tokens=512, context_tokens=1024),
    Shape("6 layers", 6),
)

VALIDATION_SHAPES = (
    Shape("28 layers", 28),
    Shape("24 layers", 24),
    Shape("16 layers", 16),
    Shape("8 layers", 8),
    Shape("4 layers", 4),
    Shape("26 layers, ffn 1152", 26, 1152),
    Shape("18 layers, ffn 1152", 18, 1152),
    Shape("30 layers, ffn 512", 30, 512),
    Shape("12 layers, ffn 2048", 12, 2048),
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
    "drop 12 + int4": [
        {"technique": "prune_depth", "params": {"drop_layers": 12}},
        {"technique": "quantize", "params": {"bits": 4, "group_size": 64}},
    ],
    "drop 4 + 30% sparse + int8": [
        {"technique": "prune_depth", "params": {"drop_layers": 4}},
        {"technique": "sparsify", "params": {"sparsity": 0.3}},
        {"technique": "quantize", "params": {"bits": 8, "group_size": 32}},
    ],
}


# llama.cpp (``--runtime llamacpp``): each shape is measured with its block linears in every GGUF format
# of GGUF_FORMATS (the tied embedding stays F16, as the exporter writes an unquantized one). Fewer shapes
# than torch's, since every shape is three samples: 18 to fit, 21 + 4 recipes to validate (~10 min on 2
# idle cores at --repeats 3).
GGUF_FORMATS = {"F16": WeightFormat(16), "Q8_0": WeightFormat(8, 32), "Q4_0": WeightFormat(4, 32)}

LLAMACPP_PROBE = Shape("probe", 6, prompt_tokens=512, context_tokens=64)  # prefill throughput per format

LLAMACPP_CALIBRATION_SHAPES = (
    Shape("30 layers", 30),
    Shape("15 layers", 15),
    Shape("6 layers", 6),
    Shape("30 layers, ffn 768", 30, 768),
    Shape("30 layers, p64 c128", 30, prompt_tokens=64, context_tokens=128),
    Shape("20 layers, p512 c1024", 20, prompt_tokens=512, context_tokens=1024),
)

LLAMACPP_VALIDATION_SHAPES = (
    Shape("24 layers", 24),
    Shape("3 layers", 3),
    Shape("26 layers, ffn 1152", 26, 1152),
    Shape("12 layers, ffn 2048", 12, 2048),
    Shape("30 layers, p32 c128", 30, prompt_tokens=32, context_tokens=128),
    Shape("22 layers, p384 c1024", 22, prompt_tokens=384, context_tokens=1024),
    Shape("30 layers, p128 c2048", 30, prompt_tokens=128, context_tokens=2048),
)

LLAMACPP_VALIDATION_RECIPES = {  # formats the GGUF exporter writes exactly (group 32: Q4_0, Q8_0)
    "int4 g32 (Q4_0)": [{"technique": "quantize", "params": {"bits": 4, "group_size": 32}}],
    "int8 g32 + embeddings (Q8_0)": [
        {"technique": "quantize", "params": {"bits": 8, "group_size": 32, "embeddings": True}}
    ],
    "50% sparse (F16)": [{"technique": "sparsify", "params": {"sparsity": 0.5}}],
    "drop 12 + int4 g32": [
        {"technique": "prune_depth", "params": {"drop_layers": 12}},
        {"technique": "quantize", "params": {"bits": 4, "group_size": 32}},
    ],
}


def with_block_format(model: nn.Module, fmt: WeightFormat) -> nn.Module:
    """Record ``fmt`` on every block linear (not the LM head or the embedding)."""
    for site in ModelAdapter(model).linear_sites():
        set_weight_format(site.module, fmt)
    return model


def format_models(
    shapes: tuple[Shape, ...], formats: dict[str, WeightFormat], model_ref: str = DEFAULT_MODEL
) -> Iterator[tuple[str, nn.Module, Workload]]:
    """Each shape once per format (one model per shape; its recorded format changes between yields)."""
    for label, model, workload in shape_models(shapes, model_ref):
        for name, fmt in formats.items():
            yield f"{label} {name}", with_block_format(model, fmt), workload


def shape_models(
    shapes: tuple[Shape, ...], model_ref: str = DEFAULT_MODEL
) -> Iterator[tuple[str, nn.Module, Workload]]:
    folder = resolve_checkpoint(model_ref)
    for shape in shapes:
        yield shape.label, synthetic_model(folder, shape), Workload(shape.prompt_tokens, shape.context_tokens)


def recipe_models(
    model_ref: str = DEFAULT_MODEL, recipes: dict[str, list[dict]] | None = None
) -> Iterator[tuple[str, nn.Module, Workload]]:
    from autocompress.pipeline import apply_recipe, open_session
    from autocompress.recipe import Recipe, TextSpec

    session = open_session(model_ref, TextSpec(), 0)
    for label, steps in (VALIDATION_RECIPES if recipes is None else recipes).items():
        recipe = Recipe.parse_obj({"model": model_ref, "steps": steps})
        yield label, apply_recipe(session, recipe), Workload()
