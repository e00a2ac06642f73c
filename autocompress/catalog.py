"""One loader for the four YAML catalogs (search spaces, hardware targets, pipelines, evaluators).

A name such as ``demo`` is looked up in the shipped catalog; anything that looks like a path
(contains a slash or ends in .yaml/.yml) is read from the user's file system.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import ConfigError

CATALOGS = ("search_spaces", "hardware_models", "pipelines", "evaluators")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def catalog_dir(catalog: str) -> Path:
    """Where a shipped catalog lives: beside the package in a checkout, inside it in a wheel."""
    if catalog not in CATALOGS:
        raise ValueError(f"unknown catalog {catalog!r}")
    package = Path(__file__).resolve().parent
    for candidate in (package.parent / catalog, package / "_catalogs" / catalog):
        if candidate.is_dir():
            return candidate
    return package.parent / catalog


def user_catalog_dir(catalog: str) -> Path:
    """Where users' own entries live (e.g. the calibrated ``host`` target); they win over shipped ones."""
    from autocompress.cache import cache_root

    return cache_root() / catalog


def _search_path(catalog: str) -> list[Path]:
    return [user_catalog_dir(catalog), catalog_dir(catalog)]


def catalog_names(catalog: str) -> list[str]:
    return sorted({p.stem for folder in _search_path(catalog) for p in folder.glob("*.yaml")})


def looks_like_path(ref: str) -> bool:
    return "/" in ref or "\\" in ref or ref.endswith((".yaml", ".yml"))


def resolve(catalog: str, ref: str, field: str) -> Path:
    """A catalog entry's path from its name or a user path; errors name ``field``."""
    if looks_like_path(ref):
        path = Path(ref).expanduser()
        if not path.is_file():
            raise ConfigError(field, f"file {ref!r} does not exist")
        return path
    if not _NAME.match(ref) or ".." in ref:
        raise ConfigError(field, f"{ref!r} is not a valid name (letters, digits, '-', '_', '.')")
    path = next((d / f"{ref}.yaml" for d in _search_path(catalog) if (d / f"{ref}.yaml").is_file()),
                catalog_dir(catalog) / f"{ref}.yaml")
    if not path.is_file():
        raise ConfigError(field, f"unknown {catalog[:-1].replace('_', ' ')} {ref!r}; "
                                 f"allowed: {', '.join(catalog_names(catalog))} or a path to a .yaml file")
    return path


def read_yaml(path: Path, field: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark else ""
        raise ConfigError(field, f"{path} is not valid YAML{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(field, f"{path} must hold a YAML mapping")
    return data


def load(catalog: str, ref: str, field: str) -> dict[str, Any]:
    return read_yaml(resolve(catalog, ref, field), field)
