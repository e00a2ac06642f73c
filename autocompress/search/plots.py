"""Pareto-front plots of a job's trials: a PNG (matplotlib) and a self-contained HTML (plotly).

``rows`` are the front rows the tracker logs as ``pareto.json``: each has ``trial``, ``pareto``,
``feasible``, ``state``, ``metrics`` ({name: value}) and ``recipe`` (a Recipe dict).
``objectives`` are ``(metric name, direction)`` pairs, direction ``"minimize"`` or ``"maximize"``.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from autocompress.tracking import FRONT_FILES, json_safe

PARETO_COLOR = "#d62728"
GREY = "#8c8c8c"


def _short(direction: str) -> str:
    return "max" if direction.lower().startswith("max") else "min"


def axis_label(objective: tuple[str, str]) -> str:
    """``("kl", "minimize")`` -> ``"kl (min)"``."""
    return f"{objective[0]} ({_short(objective[1])})"


def _plottable(rows: list[dict], objectives: list[tuple[str, str]]) -> list[dict]:
    """Rows with a finite value for every objective (failed trials usually have none)."""
    names = [name for name, _ in objectives]

    def ok(row: dict) -> bool:
        values = [row.get("metrics", {}).get(n) for n in names]
        return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)

    return [r for r in rows if ok(r)]


def recipe_summary(recipe: dict[str, Any] | None) -> str:
    """The recipe's one-line summary, e.g. ``drop 2 layers | rtn w4g64``."""
    from autocompress.recipe import Recipe

    return Recipe.parse_obj(recipe).summary() if recipe else "base model"


def _hover(row: dict, names: list[str]) -> str:
    values = "<br>".join(f"{n} = {row['metrics'][n]:.4g}" for n in names)
    return f"trial {row['trial']} ({row.get('state', '?')})<br>{recipe_summary(row.get('recipe'))}<br>{values}"


def _values(rows: list[dict], name: str) -> list[float]:
    return [float(r["metrics"][name]) for r in rows]


def _groups(rows: list[dict]) -> tuple[list[dict], list[dict], list[dict]]:
    """(feasible non-Pareto, infeasible, Pareto) rows."""
    pareto = [r for r in rows if r.get("pareto")]
    rest = [r for r in rows if not r.get("pareto")]
    return [r for r in rest if r.get("feasible")], [r for r in rest if not r.get("feasible")], pareto


def pareto_figure_png(rows: list[dict], objectives: list[tuple[str, str]], path: str | Path) -> Path:
    """All trials grey (infeasible hollow), Pareto trials red; a step line for 2 objectives,
    a scatter matrix of objective pairs for 3 or more."""
    from matplotlib.figure import Figure  # no pyplot: renders with Agg, touches no global backend

    if len(objectives) < 2:
        raise ValueError("a Pareto plot needs at least two objectives")
    path = Path(path)
    feasible, infeasible, pareto = _groups(_plottable(rows, objectives))
    pairs = list(itertools.combinations(range(len(objectives)), 2))
    ncols = min(3, len(pairs))
    nrows = math.ceil(len(pairs) / ncols)
    fig = Figure(figsize=(5.0 * ncols, 4.2 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (i, j) in zip(axes, pairs):
        (xn, xd), (yn, _) = objectives[i], objectives[j]
        ax.scatter(_values(feasible, xn), _values(feasible, yn), c=GREY, s=22, alpha=0.7, label="trial")
        ax.scatter(
            _values(infeasible, xn),
            _values(infeasible, yn),
            facecolors="none",
            edgecolors=GREY,
            s=22,
            alpha=0.7,
            label="infeasible",
        )
        if pareto:
            ax.scatter(_values(pareto, xn), _values(pareto, yn), c=PARETO_COLOR, s=40, zorder=3, label="Pareto")
            if len(objectives) == 2:
                front = sorted(pareto, key=lambda r: r["metrics"][xn])
                # Minimised x: each point's value holds until the next point ("post"); maximised: "pre".
                where = "post" if _short(xd) == "min" else "pre"
                ax.step(_values(front, xn), _values(front, yn), where=where, c=PARETO_COLOR, lw=1.2, zorder=2)
            for r in pareto:
                ax.annotate(
                    str(r["trial"]),
                    (r["metrics"][xn], r["metrics"][yn]),
                    fontsize=7,
                    xytext=(3, 3),
                    textcoords="offset points",
                )
        ax.set_xlabel(axis_label(objectives[i]))
        ax.set_ylabel(axis_label(objectives[j]))
        ax.grid(alpha=0.3)
    for ax in axes[len(pairs) :]:
        ax.set_visible(False)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{len(pareto)} Pareto trials of {len(rows)}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def pareto_figure_html(rows: list[dict], objectives: list[tuple[str, str]], path: str | Path) -> Path:
    """Interactive version (plotly.js embedded, so it opens offline); hover shows trial and recipe."""
    import plotly.graph_objects as go

    if len(objectives) < 2:
        raise ValueError("a Pareto plot needs at least two objectives")
    path = Path(path)
    names = [n for n, _ in objectives]
    fig = go.Figure()
    styles = (
        ("trial", dict(color=GREY, size=7, opacity=0.7)),
        ("infeasible", dict(color=GREY, size=7, opacity=0.7, symbol="circle-open")),
        ("Pareto", dict(color=PARETO_COLOR, size=10)),
    )
    for group, (label, marker) in zip(_groups(_plottable(rows, objectives)), styles):
        group = sorted(group, key=lambda r: r["metrics"][names[0]])
        text = [_hover(r, names) for r in group]
        common = dict(name=label, marker=marker, text=text, hovertemplate="%{text}<extra></extra>")
        if len(objectives) == 2:
            if label == "Pareto":  # the attainment step line, as in the PNG
                shape = "hv" if _short(objectives[0][1]) == "min" else "vh"
                common.update(mode="markers+lines", line=dict(shape=shape, color=PARETO_COLOR, width=1.5))
            else:
                common.update(mode="markers")
            fig.add_trace(go.Scatter(x=_values(group, names[0]), y=_values(group, names[1]), **common))
        else:
            dims = [dict(label=axis_label(o), values=_values(group, o[0])) for o in objectives]
            fig.add_trace(go.Splom(dimensions=dims, diagonal_visible=False, showupperhalf=False, **common))
    if len(objectives) == 2:
        fig.update_layout(xaxis_title=axis_label(objectives[0]), yaxis_title=axis_label(objectives[1]))
    fig.update_layout(title=f"Pareto front ({len(rows)} trials)", template="plotly_white", hovermode="closest")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.write_html(str(path), include_plotlyjs=True, full_html=True)
    return path


def write_front(rows: list[dict], objectives: list[tuple[str, str]], folder: str | Path) -> Path:
    """The files the tracker logs for a front (``FRONT_FILES``): the rows as ``pareto.json``, and both plots."""
    folder = Path(folder)
    json_file, png, html = (folder / name for name in FRONT_FILES)
    folder.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(json_safe(rows), indent=2, allow_nan=False))
    pareto_figure_png(rows, objectives, png)
    pareto_figure_html(rows, objectives, html)
    return folder
