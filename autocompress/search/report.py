"""A job's report: a front per target, hypervolume over trials, parameter importances, time split.

Written to a folder (``autocompress report``) and logged to the job's MLflow run under ``report/``.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from autocompress.search.attrs import TrialAttrs
from autocompress.search.front import TrialRecord, hypervolume_history, per_target_fronts, retarget, trial_records
from autocompress.search.job import Job
from autocompress.search.plots import pareto_figure_html, pareto_figure_png


def time_split(study: optuna.Study) -> dict[str, float]:
    """Seconds per stage over all trials, and the share of trial time spent outside evaluation."""
    totals: dict[str, float] = {}
    wall = 0.0
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        attrs = TrialAttrs.of(t)
        if attrs.duplicate_of is not None or not t.datetime_complete or not t.datetime_start:
            continue
        wall += (t.datetime_complete - t.datetime_start).total_seconds()
        for stage, seconds in (attrs.seconds or {}).items():
            totals[stage] = totals.get(stage, 0.0) + seconds
    evaluate = sum(v for k, v in totals.items() if k.startswith("evaluate"))
    return {
        **{f"{k}_s": v for k, v in sorted(totals.items())},
        "trial_wall_s": wall,
        "overhead_share": (wall - evaluate) / wall if wall else math.nan,
    }


def importances(study: optuna.Study, job: Job) -> dict[str, dict[str, float]]:
    """Optuna's parameter importances for each objective (empty when too few trials)."""
    out: dict[str, dict[str, float]] = {}
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if len({tuple(sorted(t.params.items())) for t in complete}) < 4:
        return out
    for i, objective in enumerate(job.objectives):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                values = optuna.importance.get_param_importances(study, target=lambda t, i=i: t.values[i])
            except (RuntimeError, ValueError):
                continue
        out[objective.metric] = {k: float(v) for k, v in values.items()}
    return out


def _hypervolume_png(history: list[float], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.5))
    ax = fig.subplots()
    ax.plot(range(len(history)), history, drawstyle="steps-post", color="#1f77b4")
    ax.set_xlabel("trial")
    ax.set_ylabel("hypervolume of the feasible front")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _hypervolume_html(history: list[float], path: Path) -> None:
    import plotly.graph_objects as go

    fig = go.Figure(go.Scatter(x=list(range(len(history))), y=history, mode="lines", line_shape="hv"))
    fig.update_layout(xaxis_title="trial", yaxis_title="hypervolume of the feasible front")
    fig.write_html(path, include_plotlyjs=True)


def write_report(study: optuna.Study, job: Job, out: Path, records: list[TrialRecord] | None = None) -> dict[str, Any]:
    """Write the report's files into ``out``; return the summary (also saved as summary.json). ``records``:
    the study's trial records when the caller has them already."""
    out.mkdir(parents=True, exist_ok=True)
    if records is None:
        records = trial_records(study, job.objectives)
    fronts = per_target_fronts(records, job.objectives, job.targets)
    for target, front in fronts.items():
        objectives = retarget(job.objectives, target)
        rows = [{**r.row(), "pareto": r.number in front} for r in records]
        pairs = [(o.metric, o.direction) for o in objectives]
        if len(pairs) >= 2:
            pareto_figure_png(rows, pairs, out / f"pareto-{target}.png")
            pareto_figure_html(rows, pairs, out / f"pareto-{target}.html")
    history = hypervolume_history(records, job.objectives)
    _hypervolume_png(history, out / "hypervolume.png")
    _hypervolume_html(history, out / "hypervolume.html")
    summary = {
        "job": job.name,
        "trials": len(records),
        "states": {s: sum(r.state == s for r in records) for s in sorted({r.state for r in records})},
        "repeated_recipes": sum(r.duplicate_of is not None for r in records),
        "fronts": {t: sorted(f) for t, f in fronts.items()},
        "hypervolume": history[-1] if history else 0.0,
        "hypervolume_history": history,
        "importances": importances(study, job),
        "time": time_split(study),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    return summary
