"""Turn pydantic validation errors into one-line errors that name the field and what is allowed."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from autocompress.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def _field_path(prefix: str, loc: tuple[Any, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif not str(part).startswith(("function-", "tagged-union")):
            path = f"{path}.{part}" if path else str(part)
    return path or "input"


def first_error(exc: ValidationError, model_cls: type[BaseModel], prefix: str = "") -> ConfigError:
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    if err["type"] == "extra_forbidden":
        allowed = _allowed_keys(model_cls, loc[:-1])
        hint = f"; allowed: {', '.join(allowed)}" if allowed else ""
        return ConfigError(_field_path(prefix, loc), f"unknown key{hint}")
    if err["type"] == "missing":
        return ConfigError(_field_path(prefix, loc), "is required")
    message = err["msg"].replace("\n", " ").removeprefix("Value error, ")
    if not loc and ": " in message:  # a model-level check that names its own field
        field, _, message = message.partition(": ")
        return ConfigError(f"{prefix}.{field}" if prefix else field, message)
    return ConfigError(_field_path(prefix, loc), message)


def _allowed_keys(model_cls: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The field names of the (nested) model at ``loc``, when it can be followed."""
    current: Any = model_cls
    for part in loc:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return []
        current = _inner_model(field.annotation)
        if current is None:
            return []
    return sorted(getattr(current, "model_fields", {}))


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def parse(model_cls: type[M], data: Any, prefix: str = "") -> M:
    """Validate ``data`` as ``model_cls``; raise a one-line :class:`ConfigError` on failure."""
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise first_error(exc, model_cls, prefix) from None
