import pytest

from autocompress.errors import ConfigError
from autocompress.recipe import Recipe

RECIPE = """
model: smollm2-135m
seed: 3
steps:
  - technique: prune_depth
    params: {drop_layers: 2}
  - technique: quantize
    params:
      bits: 4
      overrides: [{match: "mlp.*", layers: late, bits: 8}]
"""


def test_yaml_round_trip_keeps_everything_and_the_digest():
    recipe = Recipe.from_yaml(RECIPE)
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe
    assert again.digest() == recipe.digest()
    assert [s.technique for s in again.steps] == ["prune_depth", "quantize"]
    assert again.steps[1].params["overrides"][0]["bits"] == 8


def test_defaults_are_filled_so_equal_recipes_hash_equal():
    short = Recipe.parse_obj({"model": "m", "steps": [{"technique": "quantize", "params": {"bits": 4}}]})
    full = Recipe.parse_obj(
        {
            "model": "m",
            "steps": [
                {
                    "technique": "quantize",
                    "params": {
                        "method": "rtn",
                        "bits": 4,
                        "group_size": 128,
                        "symmetric": True,
                        "embeddings": False,
                        "overrides": [],
                    },
                }
            ],
        }
    )
    assert short.digest() == full.digest()
    assert short.steps[0].params["group_size"] == 128


@pytest.mark.parametrize(
    "change",
    [
        {"seed": 1},
        {"model": "other"},
        {"steps": [{"technique": "quantize", "params": {"bits": 8}}]},
        {"calibration": {"seq_len": 64}},
    ],
)
def test_any_change_changes_the_digest(change):
    base = {"model": "m", "steps": [{"technique": "quantize", "params": {"bits": 4}}]}
    assert Recipe.parse_obj(base).digest() != Recipe.parse_obj({**base, **change}).digest()


def test_built_in_steps_have_one_order():
    a = [{"technique": "sparsify", "params": {"sparsity": 0.5}}, {"technique": "quantize", "params": {}}]
    Recipe.parse_obj({"model": "m", "steps": a})
    with pytest.raises(ConfigError, match=r"steps\[1\]\.technique: 'sparsify' must come before 'quantize'"):
        Recipe.parse_obj({"model": "m", "steps": a[::-1]})


def test_flatten_gives_string_params_per_step():
    flat = Recipe.from_yaml(RECIPE).flatten()
    assert flat["steps.0.prune_depth.drop_layers"] == "2"
    assert flat["steps.1.quantize.bits"] == "4"
    assert flat["seed"] == "3"
    assert all(isinstance(v, str) for v in flat.values())


def test_empty_steps_is_a_valid_recipe():
    assert Recipe.parse_obj({"model": "m", "steps": []}).steps == []


def test_unknown_param_names_the_field_and_allowed_keys():
    with pytest.raises(ConfigError, match=r"steps\[0\]\.params\.bitz: unknown key; allowed: .*bits"):
        Recipe.parse_obj({"model": "m", "steps": [{"technique": "quantize", "params": {"bitz": 4}}]})
