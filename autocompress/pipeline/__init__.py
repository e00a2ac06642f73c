"""Recipe -> compressed model -> metrics: the path shared by search trials, `reproduce`, `pipeline run` and
`evaluate`. ``session`` is that path (re-exported here); ``reproduce`` and ``evaluate`` are built on it."""

from autocompress.pipeline.session import (
    Session,
    apply_recipe,
    check_compatible,
    cost_needs_model,
    evaluate_model,
    measure_accuracy,
    open_session,
    predict_cost,
    predict_profile,
    predict_recipe_cost,
)

__all__ = [
    "Session",
    "apply_recipe",
    "check_compatible",
    "cost_needs_model",
    "evaluate_model",
    "measure_accuracy",
    "open_session",
    "predict_cost",
    "predict_profile",
    "predict_recipe_cost",
]
