"""One loader for the four YAML catalogs shipped in ``autocompress/catalogs/``.

A name such as ``demo`` is looked up in the user's catalog first, then in the shipped one;
anything that looks like a path (contains a slash or ends in .yaml/.yml) is read from the user's
file system. The repository's top-level ``search_spaces/``, ``hardware_models/``, ``pipelines/``
and ``evaluators/`` are links to the shipped folders, so both spellings name the same files.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from autocompress.errors import ConfigError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SHIPPED = Path(__file__).resolve().parent / "catalogs"


@dataclass(frozen=True)
class Catalog:
    """A folder of YAML entries: its name in code, what one entry is called, and its user-facing folder."""

    name: str
    noun: str  # "unknown <noun> 'x'" in messages
    folder: str  # the top-level folder users know (a link to the shipped one); file names in messages
    legacy: tuple[str, ...] = ()  # earlier names of the user catalog folder, still read


CATALOGS: dict[str, Catalog] = {
    c.name: c
    for c in (
        Catalog("search_spaces", "search space", "search_spaces"),
        Catalog("targets", "hardware model", "hardware_models", legacy=("hardware_models",)),
        Catalog("pipelines", "pipeline", "pipelines"),
        Catalog("eval_tasks", "evaluator", "evaluators", legacy=("evaluators",)),
    )
}


def get_catalog(catalog: str) -> Catalog:
    try:
        return CATALOGS[catalog]
    except KeyError:
        raise ValueError(f"unknown catalog {catalog!r}; allowed: {', '.join(CATALOGS)}") from None


def catalog_dir(catalog: str) -> Path:
    """Where a shipped catalog lives: inside the package, in a checkout and in a wheel alike."""
    return SHIPPED / get_catalog(catalog).name


def user_catalog_dir(catalog: str) -> Path:
    """Where users' own entries live (e.g. the calibrated ``host`` target); they win over shipped ones."""
    from autocompress.cache import cache_root

    return cache_root() / get_catalog(catalog).name


def display_name(catalog: str, path: Path) -> str:
    """A catalog entry as messages name it, e.g. ``hardware_models/raspberry-pi-5.yaml``."""
    return f"{get_catalog(catalog).folder}/{path.name}"


def _search_path(catalog: str) -> list[Path]:
    user = user_catalog_dir(catalog)
    legacy = [user.parent / old for old in get_catalog(catalog).legacy]
    return [user, *legacy, catalog_dir(catalog)]


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
    path = next(
        (d / f"{ref}.yaml" for d in _search_path(catalog) if (d / f"{ref}.yaml").is_file()),
        catalog_dir(catalog) / f"{ref}.yaml",
    )
    if not path.is_file():
        raise ConfigError(
            field,
            f"unknown {get_catalog(catalog).noun} {ref!r}; "
            f"allowed: {', '.join(catalog_names(catalog))} or a path to a .yaml file",
        )
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
