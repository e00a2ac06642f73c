"""Search efficiency: hypervolume versus trials and wall time for random, TPE, NSGA-II and GP, side by side.

Every (sampler, sampler seed) pair runs a real job through ``JobRunner`` (the local backend's loop:
``next_trial`` -> ``run_trial``, SQL storage, MLflow tracking, predictor-first budget check) on one
loaded model. The job has two targets and three objectives (KL, and decode latency on each target);
a front and its hypervolume are read per target over (KL, that target's latency), against a fixed
reference point shared by all runs: KL at its budget and the uncompressed model's latency.

Affordability: the objective is deterministic given the recipe (the job seed, calibration and
evaluation text are the same in every run; only the sampler's seed changes, through the runner's
``sampler_offset``), so a recipe's outcome is memoised across runs by recipe digest. Each run is
charged the wall time that outcome cost when it was first measured (per stage: apply, predict,
evaluate), so wall-time curves stay honest; the rest of a trial's time (sampling, storage, tracking)
is measured live in every run. Rows are appended to a JSONL file as trials finish, and the memo is
saved too, so an interrupted run continues where it stopped when run again with the same --workdir.

    .venv/bin/python benchmarks/search.py [--trials 50 --seeds 3 --samplers nsga2 tpe gp random]

Prints tables and writes benchmarks/results/search.json (and --plot PNG).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import optuna
from rich.console import Console
from rich.table import Table

from autocompress.cli import quiet_optuna
from autocompress.hardware.roofline import Workload
from autocompress.hardware.target import load_target
from autocompress.pipeline import Session, open_session, predict_cost
from autocompress.recipe import Recipe
from autocompress.search.front import TrialRecord, is_feasible, running_hypervolume, trials_to_reach
from autocompress.search.job import Job, Objective, SearchSettings
from autocompress.search.objective import OverBudget, TrialObjective
from autocompress.search.runner import JobRunner

ROOT = Path(__file__).resolve().parent
DEFAULT_SAMPLER = SearchSettings().sampler
EVALUATION_STAGES = ("apply", "evaluate")  # what scoring a recipe costs; everything else is search overhead


@dataclass
class Outcome:
    """What measuring one recipe gave, and what each stage cost the first time."""

    metrics: dict[str, float]
    seconds: dict[str, float]
    stopped: str | None = None  # why a cost budget stopped it before evaluation


@dataclass
class Memo:
    """Recipe digest -> outcome, saved as JSON lines so a rerun keeps what was measured."""

    path: Path
    outcomes: dict[str, Outcome] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.load(self.path)

    def load(self, path: Path) -> None:
        """Add the outcomes saved in ``path`` (this memo's own file, or another run's, read-only)."""
        if path.is_file():
            for line in path.read_text().splitlines():
                row = json.loads(line)
                digest = row.pop("digest")
                row["stopped"] = row.pop("pruned", row.get("stopped"))  # memo files of the PRUNED era
                self.outcomes.setdefault(digest, Outcome(**row))

    def add(self, digest: str, outcome: Outcome) -> None:
        self.outcomes[digest] = outcome
        with self.path.open("a") as f:
            f.write(json.dumps({"digest": digest, **asdict(outcome)}) + "\n")


class MemoObjective(TrialObjective):
    """The runner's objective, replaying a recipe measured in an earlier run and charging its first cost."""

    def __init__(self, *args: Any, memo: Memo, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.memo = memo
        self.replayed = {"actual": 0.0, "charged": 0.0, "hit": False}

    def _since(self, before: dict[str, float]) -> dict[str, float]:
        return {k: v - before.get(k, 0.0) for k, v in self.clock.peek().items() if v > before.get(k, 0.0)}

    def _measure(self, trial: optuna.Trial, recipe: Recipe) -> dict[str, float]:
        digest = recipe.digest()
        outcome = self.memo.outcomes.get(digest)
        if outcome is None:
            before = self.clock.peek()
            try:
                metrics = super()._measure(trial, recipe)
            except OverBudget as over:
                self.memo.add(digest, Outcome(dict(over.metrics), self._since(before), over.reason))
                raise
            self.memo.add(digest, Outcome(metrics, self._since(before)))
            return metrics
        start = time.perf_counter()
        for stage, seconds in outcome.seconds.items():
            self.clock.charge(stage, seconds)
        self.replayed["charged"] += sum(v for k, v in outcome.seconds.items() if "." not in k)  # apply.<t> is in apply
        self.replayed["hit"] = True
        try:
            if outcome.stopped is not None:
                raise OverBudget(dict(outcome.metrics), outcome.stopped)
            return dict(outcome.metrics)
        finally:
            self.replayed["actual"] += time.perf_counter() - start


def make_job(args: argparse.Namespace, sampler: str) -> Job:
    t1, t2 = args.targets
    return Job.from_dict(
        {
            "name": f"search-bench-{sampler}",
            "model": args.model,
            "space": args.space,
            "targets": [t1, t2],
            "objectives": [
                {"metric": "kl"},
                {"metric": f"{t1}.decode_ms_per_token"},
                {"metric": f"{t2}.decode_ms_per_token"},
            ],
            "budgets": {"kl": {"max": args.kl_budget}, f"{t1}.peak_memory_mb": {"max": args.memory_budget}},
            "search": {"sampler": sampler, "trials": args.trials, "seed": 0, "population_size": args.population},
            "calibration": {
                "source": args.text,
                "seq_len": args.seq_len,
                "calibration_samples": args.calibration_samples,
                "eval_samples": args.eval_samples,
            },
            "workdir": str(args.workdir),
            "export": False,
            "tracking": None if args.tracking else "none",
        }
    )


def run_one(job: Job, offset: int, session: Session, memo: Memo, rows_path: Path, console: Console) -> None:
    """One (sampler, seed) run through the runner; one JSON row per finished trial."""
    runner = JobRunner(
        job.model_copy(update={"name": f"{job.name}-s{offset}"}),
        console,
        progress=False,
        sampler_offset=offset,
        session=session,
    )
    runner.open()
    objective = runner.objective
    runner.objective = MemoObjective(runner.job, objective.space, session, objective.targets, runner.tracker, memo=memo)
    key = {"sampler": job.search.sampler, "seed": offset}
    done = {r["trial"] for r in read_rows(rows_path) if {k: r[k] for k in key} == key}
    while True:
        runner.objective.replayed.update(actual=0.0, charged=0.0, hit=False)
        start = time.perf_counter()
        trial = runner.next_trial()
        if trial is None:
            break
        sampled = time.perf_counter()
        frozen = runner.run_trial(trial)
        wall = time.perf_counter() - start
        replay = runner.objective.replayed
        attrs = frozen.user_attrs
        row = {
            **key,
            "trial": frozen.number,
            "state": frozen.state.name,
            "feasible": is_feasible(frozen),
            "stopped": attrs.get("infeasible_reason") or attrs.get("pruned_reason"),
            "generation": next((v for k, v in frozen.system_attrs.items() if k.endswith(":generation")), None),
            "duplicate_of": frozen.user_attrs.get("duplicate_of"),
            "memo_hit": replay["hit"],
            "metrics": frozen.user_attrs.get("metrics", {}),
            "seconds": frozen.user_attrs.get("seconds", {}),
            "ask_s": sampled - start,
            "wall_s": wall - replay["actual"] + replay["charged"],
        }
        if frozen.number not in done:
            with rows_path.open("a") as f:
                f.write(json.dumps(row) + "\n")
        state = "over budget" if row["stopped"] else frozen.state.name.lower()
        console.log(
            f"{job.search.sampler} seed {offset} trial {frozen.number}: {state} "
            f"{row['wall_s']:.1f} s{' (memo)' if replay['hit'] else ''}"
        )
    runner.tracker.finish_job()


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def complete_runs(rows: list[dict], args: argparse.Namespace) -> list[dict]:
    """The first ``--trials`` finished trials of each run (a trial interrupted by a kill leaves a gap in the
    numbers: its re-queued copy comes later), for the seeds in which every sampler asked for has them."""
    runs: dict[tuple, list[dict]] = {}
    for r in sorted(rows, key=lambda r: r["trial"]):
        if r["sampler"] in args.samplers:
            runs.setdefault((r["sampler"], r["seed"]), []).append(r)
    runs = {key: rs[: args.trials] for key, rs in runs.items()}
    seeds = {seed for _, seed in runs if all(len(runs.get((s, seed), [])) == args.trials for s in args.samplers)}
    return [r for (_, seed), rs in runs.items() if seed in seeds for r in rs]


# ---- analysis ----------------------------------------------------------------------------------
def curves(rows: list[dict], objectives: list[Objective], reference: list[float]) -> tuple[list[float], list[float]]:
    """(normalised hypervolume after each trial, cumulative charged wall seconds) of one run."""
    records = [
        TrialRecord(
            number=r["trial"],
            state=r["state"],
            metrics=r["metrics"],
            recipe={},
            run_id=None,
            feasible=r["feasible"],
            duplicate_of=r["duplicate_of"],
        )
        for r in rows
    ]
    box = math.prod(reference)
    hv = [v / box for v in running_hypervolume(records, objectives, reference)]
    wall, total = [], 0.0
    for r in sorted(rows, key=lambda r: r["trial"]):
        total += r["wall_s"]
        wall.append(total)
    return hv, wall


def time_split(rows: list[dict]) -> dict[str, float]:
    """Charged seconds per stage over trials that were measured (not repeats of the same run's recipes)."""
    measured = [r for r in rows if r["duplicate_of"] is None]
    stages: dict[str, float] = {}
    for r in measured:
        for stage, s in r["seconds"].items():
            stages[stage] = stages.get(stage, 0.0) + s
    wall = sum(r["wall_s"] for r in measured)
    scoring = sum(stages.get(s, 0.0) for s in EVALUATION_STAGES)
    evaluate = stages.get("evaluate", 0.0)
    top = {k: v for k, v in stages.items() if "." not in k}  # apply.<technique> is part of apply
    return {
        **{f"{k}_s": v for k, v in sorted(top.items())},
        "wall_s": wall,
        "other_s": wall - sum(top.values()),
        "overhead_vs_apply_evaluate": (wall - scoring) / scoring if scoring else math.nan,
        "overhead_vs_evaluate": (wall - evaluate) / evaluate if evaluate else math.nan,
    }


def infeasible_savings(rows: list[dict]) -> dict[str, float]:
    """Trials a cost budget stopped before evaluation: share, their time, and the apply + evaluation time
    they did not spend (each stopped trial's missing stages at the mean of the evaluated trials')."""
    measured = [r for r in rows if r["duplicate_of"] is None]
    stopped = [r for r in measured if r.get("stopped") or r["state"] == "PRUNED"]
    evaluated = [r["seconds"] for r in measured if "evaluate" in r["seconds"]]
    mean = {
        stage: statistics.mean(s[stage] for s in evaluated) if evaluated else math.nan
        for stage in ("apply", "evaluate")
    }
    mean_ms = lambda stages: (
        1000
        * statistics.mean(  # noqa: E731
            sum(r["seconds"].get(k, 0) for k in stages) for r in stopped
        )
        if stopped
        else math.nan
    )
    return {
        "trials": len(rows),
        "stopped": len(stopped),
        "share": len(stopped) / len(rows) if rows else math.nan,
        "from_recipe": sum("apply" not in r["seconds"] for r in stopped),
        "stopped_mean_ms": 1000 * statistics.mean(r["wall_s"] for r in stopped) if stopped else math.nan,
        "stopped_mean_apply_predict_ms": mean_ms(("apply", "predict", "predict_recipe")),
        "evaluate_mean_s": mean["evaluate"],
        "apply_mean_s": mean["apply"],
        "saved_s": sum(mean[k] for r in stopped for k in ("apply", "evaluate") if k not in r["seconds"]),
    }


def first_generation_end(rows: list[dict]) -> int | None:
    """The trial number of a genetic sampler's first child (None: never, or not a genetic sampler)."""
    return min((r["trial"] for r in rows if (r.get("generation") or 0) > 0), default=None)


def analyse(rows: list[dict], args: argparse.Namespace, references: dict[str, list[float]]) -> dict[str, Any]:
    runs: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        runs.setdefault((r["sampler"], r["seed"]), []).append(r)
    out: dict[str, Any] = {"targets": {}}
    for target in args.targets:
        objectives = [Objective(metric="kl"), Objective(metric=f"{target}.decode_ms_per_token")]
        per_run = {key: curves(rs, objectives, references[target]) for key, rs in runs.items()}
        best = max(hv[-1] for hv, _ in per_run.values())
        summary = {}
        for sampler in args.samplers:
            keys = [k for k in per_run if k[0] == sampler]
            reach = [trials_to_reach(per_run[k][0], 0.95 * best) for k in keys]
            seconds = [per_run[k][1][n - 1] if n else None for k, n in zip(keys, reach)]
            summary[sampler] = {
                "final_hv_mean": statistics.mean(per_run[k][0][-1] for k in keys),
                "trials_to_95": reach,
                "seconds_to_95": seconds,
                "trials_to_95_mean": censored_mean(reach, args.trials),
                "hv_by_trial_mean": [
                    statistics.mean(per_run[k][0][i] for k in keys)
                    for i in range(min(len(per_run[k][0]) for k in keys))
                ],
                "runs": {str(k[1]): {"hv": per_run[k][0], "wall_s": per_run[k][1]} for k in keys},
            }
        out["targets"][target] = {"reference": references[target], "best_final_hv": best, "samplers": summary}
        default, random = summary.get(DEFAULT_SAMPLER), summary.get("random")
        if default and random:
            out["targets"][target]["default_over_random_trials"] = (
                default["trials_to_95_mean"]["value"] / random["trials_to_95_mean"]["value"]
            )
    out["time"] = {s: time_split([r for r in rows if r["sampler"] == s]) for s in args.samplers}
    out["infeasible"] = {s: infeasible_savings([r for r in rows if r["sampler"] == s]) for s in args.samplers}
    out["infeasible"]["all"] = infeasible_savings(rows)
    out["first_child"] = {
        f"{s} seed {seed}": first_generation_end(rs)
        for (s, seed), rs in sorted(runs.items())
        if any(r.get("generation") is not None for r in rs)
    }
    out["memo"] = {
        "trials": len(rows),
        "replayed": sum(r["memo_hit"] for r in rows),
        "repeats_within_a_run": sum(r["duplicate_of"] is not None for r in rows),
    }
    return out


def censored_mean(reach: list[int | None], trials: int) -> dict[str, Any]:
    """Mean trials to the level; a run that never reached it counts as ``trials`` (a lower bound)."""
    values = [n if n is not None else trials for n in reach]
    return {"value": statistics.mean(values), "lower_bound": any(n is None for n in reach)}


# ---- output ------------------------------------------------------------------------------------
def print_tables(result: dict[str, Any], args: argparse.Namespace, console: Console) -> None:
    for target, t in result["targets"].items():
        table = Table(
            title=f"{target}: hypervolume of (KL, decode ms/token), normalised to the reference box; "
            f"95% of best = {0.95 * t['best_final_hv']:.4f}"
        )
        for column in ("sampler", "final HV (mean)", "trials to 95% per seed", "mean", "seconds to 95% per seed"):
            table.add_column(column, justify="right")
        for sampler, s in t["samplers"].items():
            mean = s["trials_to_95_mean"]
            table.add_row(
                sampler,
                f"{s['final_hv_mean']:.4f}",
                " ".join(str(n or f">{args.trials}") for n in s["trials_to_95"]),
                f"{'≥' if mean['lower_bound'] else ''}{mean['value']:.1f}",
                " ".join(f"{x:.0f}" if x else "-" for x in s["seconds_to_95"]),
            )
        console.print(table)
        if "default_over_random_trials" in t:
            console.print(f"{DEFAULT_SAMPLER} / random trials to 95%: {t['default_over_random_trials']:.2f}")
    table = Table(title="time per stage over measured trials (charged seconds)")
    stages = sorted({k for s in result["time"].values() for k in s if k.endswith("_s")})
    for column in ("sampler", *stages, "overhead / (apply+evaluate)", "overhead / evaluate"):
        table.add_column(column, justify="right")
    for sampler, s in result["time"].items():
        table.add_row(
            sampler,
            *(f"{s.get(k, 0):.1f}" for k in stages),
            f"{100 * s['overhead_vs_apply_evaluate']:.1f}%",
            f"{100 * s['overhead_vs_evaluate']:.0f}%",
        )
    console.print(table)
    table = Table(title="trials stopped by a cost budget before evaluation")
    for column in (
        "sampler",
        "trials",
        "stopped",
        "share",
        "known from the recipe",
        "mean ms taken",
        "of which apply+predict ms",
        "apply+evaluation s saved",
    ):
        table.add_column(column, justify="right")
    for sampler, s in result["infeasible"].items():
        table.add_row(
            sampler,
            str(s["trials"]),
            str(s["stopped"]),
            f"{100 * s['share']:.0f}%",
            str(s["from_recipe"]),
            f"{s['stopped_mean_ms']:.0f}",
            f"{s['stopped_mean_apply_predict_ms']:.0f}",
            f"{s['saved_s']:.0f}",
        )
    console.print(table)
    if result.get("first_child"):
        console.print(
            "first trial bred by a genetic sampler (the random first generation ends before it): "
            + ", ".join(f"{k}: {v if v is not None else '-'}" for k, v in result["first_child"].items())
        )


def plot(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    targets = list(result["targets"])
    fig = Figure(figsize=(11, 3.6 * len(targets)))
    axes = fig.subplots(len(targets), 2, squeeze=False)
    for row, target in zip(axes, targets):
        t = result["targets"][target]
        for sampler, s in t["samplers"].items():
            line = row[0].plot(
                range(1, len(s["hv_by_trial_mean"]) + 1), s["hv_by_trial_mean"], drawstyle="steps-post", label=sampler
            )[0]
            for run in s["runs"].values():
                row[1].plot(run["wall_s"], run["hv"], drawstyle="steps-post", color=line.get_color(), alpha=0.6)
        for ax in row:
            ax.axhline(0.95 * t["best_final_hv"], color="grey", ls="--", lw=0.8)
            ax.set_ylabel(f"HV, {target}")
            ax.grid(alpha=0.3)
        row[0].set_xlabel("trial (mean over seeds)")
        row[1].set_xlabel("charged wall seconds (each seed)")
        row[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samplers", nargs="+", default=["nsga2", "tpe", "gp", "random"])
    parser.add_argument("--seeds", type=int, default=3, help="sampler seeds per sampler")
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument(
        "--population",
        type=int,
        default=SearchSettings().population_size,
        help="NSGA-II population; GP's random start-up",
    )
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--space", default="edge-llm")
    parser.add_argument("--targets", nargs=2, default=["raspberry-pi-5", "jetson-orin-nano"])
    parser.add_argument("--kl-budget", type=float, default=1.0)
    parser.add_argument("--memory-budget", type=float, default=160.0, help="MB on the first target")
    parser.add_argument("--text", default="generated", help="calibration/evaluation text source")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--calibration-samples", type=int, default=8)
    parser.add_argument("--eval-samples", type=int, default=4)
    parser.add_argument("--tracking", action=argparse.BooleanOptionalAction, default=True, help="MLflow (as jobs do)")
    parser.add_argument("--workdir", type=Path, default=Path("runs/search-bench"))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "search.json")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of hypervolume vs trials and wall time")
    parser.add_argument(
        "--only-seed",
        type=int,
        default=None,
        help="run this sampler seed only (e.g. in a second process on the same --workdir)",
    )
    parser.add_argument("--analyse-only", action="store_true", help="tables from the finished runs in --workdir")
    parser.add_argument(
        "--replay",
        type=Path,
        nargs="*",
        default=[],
        help="memo files of earlier runs (e.g. benchmarks/results/search-memo.jsonl): their recipes "
        "are replayed, charged what they cost then, instead of measured again",
    )
    args = parser.parse_args()
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    console = Console(width=200)  # tables stay whole in a log file
    start = time.time()
    rows_path, memo = args.workdir / "rows.jsonl", Memo(args.workdir / "memo.jsonl")
    for path in args.replay:
        memo.load(path)
    jobs = {s: make_job(args, s) for s in args.samplers}
    job = next(iter(jobs.values()))
    session = open_session(job.model, job.calibration, job.search.seed, job.evaluation)
    # The reference point: KL at its budget, latency of the uncompressed model on each target.
    base_cost = predict_cost(
        session.base.model, [load_target(t) for t in args.targets], Workload(**job.workload.model_dump())
    )
    references = {t: [args.kl_budget, base_cost[f"{t}.decode_ms_per_token"]] for t in args.targets}
    if not args.analyse_only:
        for seed in [args.only_seed] if args.only_seed is not None else range(args.seeds):
            for sampler in args.samplers:
                run_one(jobs[sampler], seed, session, memo, rows_path, console)
    rows = complete_runs(read_rows(rows_path), args)
    result = analyse(rows, args, references)
    print_tables(result, args, console)
    args.out.parent.mkdir(exist_ok=True)
    settings = json.loads(json.dumps(vars(args), default=str))  # paths (also in --replay's list) as text
    args.out.write_text(
        json.dumps(
            {
                "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
                "settings": settings,
                "default_sampler": DEFAULT_SAMPLER,
                **result,
                "seconds": time.time() - start,
            },
            indent=1,
            default=float,
        )
    )
    if args.plot:
        plot(result, args.plot)
    console.print(f"wrote {args.out} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    quiet_optuna()  # as the CLI does at start-up
    main()
