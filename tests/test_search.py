"""End-to-end searches on tiny models: MLflow runs, the front, resume, failures, reproduce."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient
from optuna.trial import TrialState
from transformers import AutoModelForCausalLM

from autocompress.backends import run_job
from autocompress.cache import weights_digest
from autocompress.export.checkpoint import read_record
from autocompress.pipeline import apply_recipe, open_session
from autocompress.pipeline.reproduce import load_provenance, reproduce
from autocompress.recipe import Recipe
from autocompress.search.front import dominates
from autocompress.search.job import Job

TESTS = Path(__file__).parent
CALIBRATION = {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4}
OBJECTIVES = [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}]


def make_job(tmp_path: Path, model: Path, **overrides) -> Job:
    data = {
        "name": "tiny",
        "model": str(model),
        "space": str(TESTS / "data" / "tiny-space.yaml"),
        "targets": ["raspberry-pi-5"],
        "objectives": OBJECTIVES,
        "calibration": CALIBRATION,
        "search": {"trials": 6, "sampler": "random", "seed": 1, "heartbeat_seconds": 1},
        "workdir": str(tmp_path / "runs"),
    }
    data.update(overrides)
    return Job.from_dict(data)


def trial_runs(job: Job) -> dict[int, object]:
    client = MlflowClient(job.tracking_uri)
    experiment = client.get_experiment_by_name(job.name)
    runs = client.search_runs([experiment.experiment_id], "tags.`autocompress.role` = 'trial'")
    return {int(r.data.tags["autocompress.trial"]): r for r in runs}


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_checkpoints):
    """One search shared by the assertions below (MLflow's first start costs seconds)."""
    tmp = tmp_path_factory.mktemp("search")
    job = make_job(tmp, tiny_checkpoints["llama"], budgets={"kl": {"max": 0.5}})
    return job, run_job(job, progress=False)


def test_every_trial_is_an_mlflow_run_with_recipe_params_and_metrics(searched):
    job, result = searched
    runs = trial_runs(job)
    assert sorted(runs) == [r.number for r in result.records] == list(range(6))
    for record in result.records:
        run = runs[record.number]
        assert run.data.tags["autocompress.state"] == record.state
        assert run.data.params["steps.2.quantize.bits"] == str(record.recipe["steps"][2]["params"]["bits"])
        if record.state == "COMPLETE":
            assert run.data.metrics["kl"] == pytest.approx(record.metrics["kl"])
            assert "raspberry-pi-5.peak_memory_mb" in run.data.metrics
            assert run.data.tags["autocompress.feasible"] == str(record.metrics["kl"] <= 0.5).lower()


def test_exactly_the_pareto_trials_are_tagged(searched):
    job, result = searched
    feasible = {
        r.number: [r.metrics["kl"], r.metrics["raspberry-pi-5.decode_ms_per_token"]]
        for r in result.records
        if r.feasible and r.duplicate_of is None
    }
    expected = {n for n, p in feasible.items() if not any(dominates(q, p) for q in feasible.values())}
    assert expected and {r.number for r in result.front} == expected
    tags = {n: run.data.tags["autocompress.pareto"] for n, run in trial_runs(job).items()}
    assert {n for n, t in tags.items() if t == "true"} == expected
    assert all(t in ("true", "false") for t in tags.values())


def test_pareto_checkpoints_load_and_reproduce_logits(searched, tiny_checkpoints):
    job, result = searched
    exported = sorted(p.name for p in (job.job_dir / "pareto").iterdir())
    assert exported == sorted(f"trial-{r.number}" for r in result.front)
    record = result.front[0]
    folder = job.job_dir / "pareto" / f"trial-{record.number}"
    assert read_record(folder)["metrics"]["kl"] == pytest.approx(record.metrics["kl"])
    loaded = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    recipe = Recipe.from_file(folder / "recipe.yaml")
    session = open_session(recipe.model, recipe.calibration, recipe.seed)
    compressed = apply_recipe(session, recipe)
    ids = session.ctx.evaluation[:2]
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, compressed(ids).logits, atol=1e-5)
    versions = MlflowClient(job.tracking_uri).search_model_versions(f"name = '{job.name}'")
    assert sorted(int(v.tags["autocompress.trial"]) for v in versions) == sorted(r.number for r in result.front)


def test_job_run_holds_the_front_artifacts(searched):
    job, _ = searched
    client = MlflowClient(job.tracking_uri)
    experiment = client.get_experiment_by_name(job.name)
    [parent] = client.search_runs([experiment.experiment_id], "tags.`autocompress.role` = 'job'")
    names = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.json", "pareto.png", "pareto.html", "job.yaml"} <= names


def test_reproduce_check_passes_and_fails_when_it_should(searched, tmp_path):
    job, result = searched
    folder = job.job_dir / "pareto" / f"trial-{result.front[0].number}"
    provenance = load_provenance(str(folder / "recipe.yaml"), "unused")
    outcome = reproduce(provenance, tmp_path / "again")
    assert outcome.mismatches == []
    assert outcome.record["weights_sha256"] == read_record(folder)["weights_sha256"]
    provenance.metrics["kl"] = provenance.metrics["kl"] * 1.5 + 0.01
    assert any(m.startswith("kl:") for m in reproduce(provenance, tmp_path / "again2").mismatches)


def test_reproduce_from_an_mlflow_run_id(searched, tmp_path):
    job, result = searched
    run_id = result.front[0].run_id
    provenance = load_provenance(run_id, job.tracking_uri)
    assert provenance.metrics["kl"] == pytest.approx(result.front[0].metrics["kl"])
    assert reproduce(provenance, tmp_path / "from-run").mismatches == []


def test_resume_continues_without_repeating_finished_trials(tmp_path, tiny_checkpoints):
    first = run_job(
        make_job(tmp_path, tiny_checkpoints["qwen2"], search={"trials": 3, "sampler": "nsga2", "population_size": 2}),
        progress=False,
    )
    again = run_job(
        make_job(tmp_path, tiny_checkpoints["qwen2"], search={"trials": 5, "sampler": "nsga2", "population_size": 2}),
        progress=False,
    )
    assert [r.number for r in again.records] == list(range(5))
    for before, after in zip(first.records, again.records[:3]):
        assert (before.recipe, before.metrics) == (after.recipe, after.metrics)
    assert sorted(trial_runs(again.job)) == list(range(5))


def test_a_job_with_other_evaluation_data_under_the_same_name_is_refused(tmp_path, tiny_checkpoints):
    from autocompress.errors import ConfigError

    run_job(make_job(tmp_path, tiny_checkpoints["qwen2"], search={"trials": 1, "sampler": "random"}), progress=False)
    changed = make_job(
        tmp_path, tiny_checkpoints["qwen2"], search={"trials": 2, "sampler": "random"}, evaluation={"top_k": 8}
    )  # KL values would not be comparable with the stored trials
    with pytest.raises(ConfigError, match="^name: a job named 'tiny' with a different .*evaluation data"):
        run_job(changed, progress=False)
    batch = make_job(
        tmp_path, tiny_checkpoints["qwen2"], search={"trials": 2, "sampler": "random"}, evaluation={"batch_size": 2}
    )  # does not change any metric: resumes
    assert len(run_job(batch, progress=False).records) == 2


def test_failing_trials_are_recorded_and_the_search_goes_on(tmp_path, tiny_checkpoints):
    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    space["steps"][2]["params"]["group_size"] = {"choice": [32, 48]}  # 48 does not divide 64: fails
    path = tmp_path / "failing.yaml"
    path.write_text(yaml.safe_dump(space))
    job = make_job(
        tmp_path, tiny_checkpoints["llama"], space=str(path), search={"trials": 8, "sampler": "random", "seed": 3}
    )
    result = run_job(job, progress=False)
    failed = [r for r in result.records if r.state == "FAIL"]
    assert failed and len(result.records) == 8
    assert all("does not divide" in r.error for r in failed)
    runs = trial_runs(job)
    for r in failed:
        assert runs[r.number].info.status == "FAILED"
        assert "does not divide" in runs[r.number].data.tags["autocompress.error"]
    assert all(r.feasible for r in result.records if r.state == "COMPLETE")


def test_cost_budgets_skip_accuracy_evaluation(tmp_path, tiny_checkpoints, monkeypatch):
    """Over-budget trials are known from the recipe: never applied nor evaluated, COMPLETE and infeasible,
    told to the sampler with their real cost and their violation; their accuracy is never logged."""
    import autocompress.search.objective as runner

    applied = []
    real_apply = runner.apply_recipe
    monkeypatch.setattr(
        runner,
        "apply_recipe",
        lambda session, recipe, clock=None: (applied.append(recipe.digest()), real_apply(session, recipe, clock))[1],
    )
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        budgets={"raspberry-pi-5.decode_ms_per_token": {"max": 0.3}},
        search={"trials": 6, "seed": 5},
    )
    result = run_job(job, progress=False)
    trials = {t.number: t for t in _study_trials(job)}
    stopped = [r for r in result.records if "infeasible_reason" in trials[r.number].user_attrs]
    evaluated = [r for r in result.records if r not in stopped]
    assert stopped and evaluated and all(r.state == "COMPLETE" for r in result.records)
    for r in stopped:
        t = trials[r.number]
        assert r.recipe and Recipe.parse_obj(r.recipe).digest() not in applied
        assert t.user_attrs["infeasible_reason"].startswith("cost over budget (predicted from the recipe)")
        assert set(t.user_attrs["seconds"]) == {"tracking", "predict_recipe"}
        assert t.user_attrs["seconds"]["predict_recipe"] < 1.0
        assert not r.feasible and not r.pareto and "kl" not in r.metrics
        assert t.values[0] == math.inf  # accuracy: unknown, told as the worst value
        assert t.values[1] == r.metrics["raspberry-pi-5.decode_ms_per_token"] > 0.3  # cost: real
        assert t.constraints["raspberry-pi-5.decode_ms_per_token"] > 0
    assert {Recipe.parse_obj(r.recipe).digest() for r in evaluated if r.duplicate_of is None} <= set(applied)
    assert all(r.metrics["raspberry-pi-5.decode_ms_per_token"] <= 0.3 for r in result.front)
    runs = trial_runs(job)
    for r in stopped:
        run = runs[r.number]
        assert run.data.tags["autocompress.feasible"] == "false" and "kl" not in run.data.metrics
        assert run.data.tags["autocompress.infeasible_reason"].startswith("cost over budget")
        assert "seconds.predict_recipe" in run.data.metrics


def test_a_feasible_trial_keeps_the_cost_predicted_from_its_recipe(tmp_path, tiny_checkpoints, monkeypatch):
    """Profiling the applied model again would give the same numbers (tests/test_predict_profile.py):
    a trial whose cost was known from the recipe is not re-profiled, and its cost metrics are those."""
    import autocompress.search.objective as runner

    profiled = []
    real_predict = runner.predict_cost
    monkeypatch.setattr(runner, "predict_cost", lambda model, *a: profiled.append(1) or real_predict(model, *a))
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        budgets={"raspberry-pi-5.decode_ms_per_token": {"max": 1e6}},
        search={"trials": 3, "seed": 5},
    )
    run_job(job, progress=False)
    measured = [t for t in _study_trials(job) if "duplicate_of" not in t.user_attrs]
    assert measured and not profiled
    session = open_session(job.model, job.calibration, job.search.seed)
    for t in measured:
        assert t.user_attrs["cost_from_recipe"] and "kl" in t.user_attrs["metrics"]
        assert {"apply", "predict_recipe", "evaluate"} <= set(t.user_attrs["seconds"])
        model = apply_recipe(session, Recipe.parse_obj(t.user_attrs["recipe"]))
        cost = real_predict(model, [runner.load_target("raspberry-pi-5")], runner.Workload(**job.workload.model_dump()))
        assert {m: t.user_attrs["metrics"][m] for m in cost} == pytest.approx(cost, rel=1e-9)


def test_a_job_without_cost_budgets_does_not_predict_first(searched):
    job, result = searched  # budgets: kl only
    assert all(
        "predict_recipe" not in t.user_attrs["seconds"] and "apply" in t.user_attrs["seconds"]
        for t in _study_trials(job)
        if "duplicate_of" not in t.user_attrs
    )


def test_predicting_first_can_be_turned_off(tmp_path, tiny_checkpoints):
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        budgets={"raspberry-pi-5.decode_ms_per_token": {"max": 0.3}},
        search={"trials": 3, "seed": 5, "predict_first": False},
    )
    run_job(job, progress=False)
    stopped = [t for t in _study_trials(job) if "infeasible_reason" in t.user_attrs]
    assert stopped and all(
        "compressed model" in t.user_attrs["infeasible_reason"]
        and "apply" in t.user_attrs["seconds"]
        and "kl" not in t.user_attrs["metrics"]
        for t in stopped
    )


def test_empty_recipe_is_the_base_model(tiny_checkpoints, tmp_path):
    recipe = Recipe.parse_obj({"model": str(tiny_checkpoints["llama"]), "calibration": CALIBRATION, "steps": []})
    outcome = reproduce(load_provenance_for(recipe, tmp_path), tmp_path / "base")
    base = AutoModelForCausalLM.from_pretrained(tiny_checkpoints["llama"], dtype=torch.float32)
    assert outcome.record["weights_sha256"] == weights_digest(base)
    assert outcome.metrics["kl"] == pytest.approx(0.0, abs=1e-7)
    assert outcome.metrics["top1_agreement"] == 1.0


def load_provenance_for(recipe: Recipe, tmp_path: Path):
    path = tmp_path / "recipe.yaml"
    path.write_text(recipe.to_yaml())
    return load_provenance(str(path), "unused")


def _study_trials(job: Job) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=job.name, storage=job.storage_url).get_trials()


def test_resume_after_killing_the_search_mid_trial(tmp_path, tiny_checkpoints):
    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    space["steps"].insert(0, {"technique": "wait", "params": {"seconds": 1.5}})
    (tmp_path / "slow.yaml").write_text(yaml.safe_dump(space))
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        space=str(tmp_path / "slow.yaml"),
        search={"trials": 5, "sampler": "random", "seed": 2, "heartbeat_seconds": 1},
    )
    job_file = tmp_path / "job.yaml"
    job_file.write_text(yaml.safe_dump(job.model_dump(mode="json")))
    env = {**os.environ, "AUTOCOMPRESS_PLUGINS": "plugins_slow", "PYTHONPATH": str(TESTS)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "autocompress", "search", str(job_file), "--quiet", "--no-export"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 120
    try:
        while time.monotonic() < deadline:  # wait until 2 trials are done and the 3rd is running
            time.sleep(0.3)
            if not job.storage_url or not Path(job.workdir_path / "optuna.db").exists():
                continue
            try:
                states = [t.state for t in _study_trials(job)]
            except KeyError:
                continue
            if states.count(TrialState.COMPLETE) >= 2 and states[-1] == TrialState.RUNNING:
                time.sleep(0.5)
                break
        else:
            pytest.fail(f"search did not reach a running trial: {proc.stderr.read()[-2000:]!r}")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    before = _study_trials(job)
    killed = before[-1]
    assert killed.state == TrialState.RUNNING
    finished_before = {t.number: t for t in before if t.state == TrialState.COMPLETE}

    import plugins_slow  # noqa: F401  (registers the 'wait' technique in this process too)

    result = run_job(Job.from_dict({**job.model_dump(mode="json"), "export": False}), progress=False)
    after = {t.number: t for t in _study_trials(job)}
    assert after[killed.number].state == TrialState.FAIL and "error" not in after[killed.number].user_attrs
    retries = [t for t in after.values() if t.user_attrs.get("retry_of") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params
    counted = [r for r in result.records if r.state == "COMPLETE"]
    assert len(counted) == 5  # the job's total, no more, no less
    for number, trial in finished_before.items():  # finished trials were kept, not repeated
        assert after[number].values == trial.values
    runs = trial_runs(job)
    assert runs[killed.number].data.tags["autocompress.state"] == "INTERRUPTED"
    assert all(runs[r.number].data.tags["autocompress.state"] == "COMPLETE" for r in counted)
    assert not math.isnan(counted[-1].metrics["kl"])


def test_repeated_recipes_reuse_metrics_and_count_once_on_the_front(tmp_path, tiny_checkpoints):
    space = {"name": "one-point", "steps": [{"technique": "quantize", "params": {"bits": 4, "group_size": 32}}]}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(space))
    result = run_job(
        make_job(
            tmp_path,
            tiny_checkpoints["llama"],
            space=str(tmp_path / "one.yaml"),
            search={"trials": 3, "sampler": "random"},
        ),
        progress=False,
    )
    assert [r.duplicate_of for r in result.records] == [None, 0, 0]
    assert all(r.metrics == result.records[0].metrics for r in result.records)
    assert [r.number for r in result.front] == [0]


def test_a_repeated_over_budget_recipe_reuses_the_first_verdict(tmp_path, tiny_checkpoints):
    space = {"name": "one-point", "steps": [{"technique": "quantize", "params": {"bits": 8, "group_size": 32}}]}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(space))
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        space=str(tmp_path / "one.yaml"),
        budgets={"raspberry-pi-5.peak_memory_mb": {"max": 0.01}},
        search={"trials": 3, "sampler": "nsga2"},
    )
    result = run_job(job, progress=False)
    assert [r.duplicate_of for r in result.records] == [None, 0, 0]
    trials = _study_trials(job)
    assert all(
        t.state == TrialState.COMPLETE
        and t.values == trials[0].values
        and t.values[0] == math.inf
        and t.constraints == trials[0].constraints
        and "infeasible_reason" in t.user_attrs
        for t in trials
    )
    assert not result.front and not any(r.feasible for r in result.records)
    assert "predict_recipe" not in trials[1].user_attrs["seconds"]  # reused, not predicted again


def test_early_exit_recipes_are_stopped_on_their_predicted_memory(tmp_path, tiny_checkpoints):
    space = {
        "name": "exits",
        "steps": [
            {"technique": "quantize", "params": {"bits": {"choice": [4, 8]}, "group_size": 32}},
            {"technique": "early_exit", "params": {"threshold": 0.5}},
        ],
    }
    (tmp_path / "exits.yaml").write_text(yaml.safe_dump(space))
    job = make_job(
        tmp_path,
        tiny_checkpoints["qwen2"],
        space=str(tmp_path / "exits.yaml"),
        budgets={"raspberry-pi-5.peak_memory_mb": {"max": 0.01}},
        search={"trials": 2, "sampler": "random"},
    )
    run_job(job, progress=False)
    for t in _study_trials(job):
        assert "predicted from the recipe" in t.user_attrs["infeasible_reason"]
        assert t.values == [math.inf, math.inf]  # kl and decode latency: unknown until the exit depth is measured
        assert "raspberry-pi-5.peak_memory_mb" in t.user_attrs["metrics"]
        assert "raspberry-pi-5.decode_ms_per_token" not in t.user_attrs["metrics"]


def test_recipe_summary_names_each_step():
    recipe = Recipe.parse_obj(
        {
            "model": "m",
            "steps": [
                {"technique": "prune_depth", "params": {"drop_layers": 2}},
                {"technique": "sparsify", "params": {"sparsity": 0.25}},
                {
                    "technique": "quantize",
                    "params": {
                        "bits": 4,
                        "group_size": 64,
                        "overrides": [{"match": "mlp.*", "layers": "late", "bits": 8}],
                    },
                },
            ],
        }
    )
    assert recipe.summary() == "drop 2 layers | magnitude 25% | rtn w4g64 mlp.*@late:w8"
    assert Recipe.parse_obj({"model": "m"}).summary() == "base model"


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autocompress", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_cli_pareto_json_and_reproduce_check_exit_codes(searched, tmp_path):
    job, result = searched
    proc = run_cli(["pareto", job.name, "--workdir", str(job.workdir_path), "--json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    import json

    front = json.loads(proc.stdout)
    assert sorted(row["trial"] for row in front) == sorted(r.number for r in result.front)

    folder = tmp_path / "copy"
    import shutil

    shutil.copytree(job.job_dir / "pareto" / f"trial-{result.front[0].number}", folder)
    assert (
        run_cli(
            ["reproduce", str(folder / "recipe.yaml"), "--out", str(tmp_path / "ok"), "--check"], tmp_path
        ).returncode
        == 0
    )
    record = json.loads((folder / "metrics.json").read_text())
    record["metrics"]["perplexity"] *= 1.01
    (folder / "metrics.json").write_text(json.dumps(record))
    proc = run_cli(["reproduce", str(folder / "recipe.yaml"), "--out", str(tmp_path / "bad"), "--check"], tmp_path)
    assert proc.returncode == 1
    assert "mismatch" in proc.stderr and "perplexity" in proc.stderr


def test_space_seeds_run_first_and_reports_are_written(tmp_path, tiny_checkpoints):
    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    space["seeds"] = [
        {"quantize.bits": 8, "quantize.mlp.bits": 4, "prune_depth.drop_layers": 0, "sparsify.sparsity": 0.0},
        {"quantize.bits": 16},
    ]
    (tmp_path / "seeded.yaml").write_text(yaml.safe_dump(space))
    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        space=str(tmp_path / "seeded.yaml"),
        targets=["raspberry-pi-5", "apple-m2-cpu"],
        search={"trials": 5, "sampler": "random"},
    )
    result = run_job(job, progress=False)
    steps = [r.recipe["steps"] for r in result.records]
    assert steps[0][2]["params"]["bits"] == 8 and steps[0][2]["params"]["overrides"][0]["bits"] == 4
    assert steps[1][2]["params"]["bits"] == 16
    report = job.job_dir / "report"
    assert {"pareto-raspberry-pi-5.png", "pareto-apple-m2-cpu.html", "hypervolume.png", "summary.json"} <= {
        p.name for p in report.iterdir()
    }
    summary = json.loads((report / "summary.json").read_text())
    assert set(summary["fronts"]) == {"raspberry-pi-5", "apple-m2-cpu"}
    assert summary["fronts"]["raspberry-pi-5"] == sorted(r.number for r in result.front)
    assert summary["time"]["evaluate_s"] > 0 and 0 < summary["time"]["overhead_share"] < 1
    runs = trial_runs(job)
    for target, front in summary["fronts"].items():
        tagged = {n for n, run in runs.items() if run.data.tags.get(f"autocompress.pareto.{target}") == "true"}
        assert tagged == set(front)
    assert all(
        "seconds.apply" in run.data.metrics
        for n, run in runs.items()
        if result.records[n].state == "COMPLETE" and result.records[n].duplicate_of is None
    )


def test_seeds_outside_the_space_are_rejected(tmp_path):
    from autocompress.errors import ConfigError
    from autocompress.search.space import SearchSpace

    space = yaml.safe_load((TESTS / "data" / "tiny-space.yaml").read_text())
    for seed, message in (({"quantize.bitz": 8}, "not a parameter"), ({"quantize.bits": 5}, "outside the space")):
        (tmp_path / "s.yaml").write_text(yaml.safe_dump({**space, "seeds": [seed]}))
        with pytest.raises(ConfigError, match=message):
            SearchSpace.load(str(tmp_path / "s.yaml"))


def test_a_runner_reuses_a_loaded_session_and_refuses_one_for_other_text(tmp_path, tiny_checkpoints):
    from autocompress.search.runner import JobRunner

    job = make_job(
        tmp_path,
        tiny_checkpoints["llama"],
        tracking="none",
        export=False,
        search={"trials": 2, "sampler": "random", "seed": 1},
    )
    session = open_session(job.model, job.calibration, job.search.seed, job.evaluation)
    runner = JobRunner(job, progress=False, session=session)
    runner.open()
    assert runner.session is session and runner.objective.session is session
    assert runner.search() and runner.finished() == 2
    other = job.model_copy(
        update={"name": "other", "calibration": job.calibration.model_copy(update={"eval_samples": 2})}
    )
    with pytest.raises(ValueError, match="differ"):
        JobRunner(other, progress=False, session=session)


def test_a_resumed_search_does_not_replay_its_first_random_draws(tmp_path, tiny_checkpoints):
    job = dict(tracking="none", export=False)
    first = run_job(
        make_job(tmp_path, tiny_checkpoints["llama"], search={"trials": 3, "sampler": "random"}, **job), progress=False
    )
    again = run_job(
        make_job(tmp_path, tiny_checkpoints["llama"], search={"trials": 6, "sampler": "random"}, **job), progress=False
    )
    recipes = [r.recipe for r in again.records]
    assert recipes[:3] == [r.recipe for r in first.records]  # finished trials kept
    assert recipes[3:] != recipes[:3]  # before: the re-created sampler drew trials 0-2 again
    fresh = run_job(
        make_job(tmp_path / "b", tiny_checkpoints["llama"], search={"trials": 3, "sampler": "random"}, **job),
        progress=False,
    )
    assert [r.recipe for r in fresh.records] == recipes[:3]  # a fresh job with the same seed is reproducible


def test_an_unevaluated_objective_is_the_worst_value_and_a_known_cost_is_itself():
    from autocompress.search.objective import unevaluated_value

    known = {"raspberry-pi-5.peak_memory_mb": 200.0}  # early exit: decode unknown before applying
    assert unevaluated_value(known, "raspberry-pi-5.peak_memory_mb", "minimize") == 200.0
    assert unevaluated_value(known, "raspberry-pi-5.decode_ms_per_token", "minimize") == math.inf
    assert unevaluated_value(known, "top1_agreement", "maximize") == -math.inf
