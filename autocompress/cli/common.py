"""What the commands share: the two consoles, reading a job from YAML and flags, and the tables they print."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from rich.console import Console
from rich.table import Table

from autocompress.errors import ConfigError

if TYPE_CHECKING:
    from autocompress.search.finish import JobResult
    from autocompress.search.job import Job

out = Console()
err = Console(stderr=True)
_BUDGET = re.compile(r"^\s*([\w.\-]+)\s*(<=|>=)\s*([-+0-9.eE]+)\s*$")


def load_job(job_file: Path | None, overrides: dict[str, Any]) -> Job:
    from autocompress.search.job import Job

    data: dict[str, Any] = {}
    if job_file is not None:
        if not job_file.is_file():
            raise ConfigError("job", f"file {str(job_file)!r} does not exist")
        try:
            data = yaml.safe_load(job_file.read_text()) or {}
        except yaml.YAMLError:
            raise ConfigError("job", f"{job_file} is not valid YAML") from None
        if not isinstance(data, dict):
            raise ConfigError("job", f"{job_file} must hold a YAML mapping")
    for key, value in overrides.items():
        if value in (None, [], {}):
            continue
        if "." in key:
            section, sub = key.split(".", 1)
            data.setdefault(section, {})
            if not isinstance(data[section], dict):
                raise ConfigError(section, "must be a mapping")
            data[section][sub] = value
        else:
            data[key] = value
    return Job.from_dict(data)


def parse_objectives(items: list[str]) -> list[dict[str, str]]:
    parsed = []
    for item in items:
        metric, _, direction = item.partition(":")
        direction = {"": "minimize", "min": "minimize", "max": "maximize"}.get(direction, direction)
        parsed.append({"metric": metric, "direction": direction})
    return parsed


def parse_budgets(items: list[str]) -> dict[str, dict[str, float]]:
    budgets: dict[str, dict[str, float]] = {}
    for item in items:
        match = _BUDGET.match(item)
        if not match:
            raise ConfigError("--budget", f"{item!r} must look like 'kl<=0.3' or 'top1_agreement>=0.9'")
        metric, op, value = match.groups()
        budgets.setdefault(metric, {})["max" if op == "<=" else "min"] = float(value)
    return budgets


def front_table(result: JobResult) -> Table:
    from autocompress.recipe import Recipe

    job = result.job
    names = list(dict.fromkeys([o.metric for o in job.objectives] + list(job.budgets)))
    table = Table(title=f"Pareto front of {job.name} ({len(result.front)} of {len(result.records)} trials)")
    table.add_column("trial", justify="right")
    for name in names:
        table.add_column(name.replace(".", ".\n", 1), justify="right")
    table.add_column("recipe")
    for record in sorted(result.front, key=lambda r: r.metrics.get(names[0], math.inf)):
        table.add_row(
            str(record.number),
            *[f"{record.metrics.get(n, math.nan):.4g}" for n in names],
            Recipe.parse_obj(record.recipe).summary(),
        )
    return table


def correlation_table(result: JobResult) -> Table:
    proxy = result.job.evaluation.proxy
    table = Table(title=f"Can {proxy} stand in for the costly metrics? (Spearman rank correlation over trials)")
    for column in ("metric", f"rho({proxy}, metric)", "trials"):
        table.add_column(column, justify="right")
    for metric, row in result.proxy_correlation.items():
        table.add_row(metric, f"{row['rho']:.3f}", str(row["n"]))
    return table


def print_metrics(metrics: dict[str, float], recorded: dict[str, float]) -> None:
    table = Table()
    table.add_column("metric")
    table.add_column("value", justify="right")
    if recorded:
        table.add_column("recorded", justify="right")
    for name in sorted(metrics):
        row = [name, f"{metrics[name]:.6g}"]
        if recorded:
            row.append(f"{recorded[name]:.6g}" if name in recorded else "")
        table.add_row(*row)
    out.print(table)
