"""MlflowTracker against a real sqlite tracking store with a local artifact root."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import yaml
from mlflow import MlflowClient

from autocompress.recipe import Recipe, Step
from autocompress.search.plots import pareto_figure_html, pareto_figure_png, write_front
from autocompress.tracking import MlflowTracker, NullTracker, Tracker

_names = itertools.count()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One sqlite DB for the module: creating it runs MLflow's migrations (seconds)."""
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root}/mlflow.db", root


def new_tracker(store: tuple[str, Path], name: str | None = None) -> MlflowTracker:
    uri, root = store
    name = name or f"exp-{next(_names)}"
    return MlflowTracker(uri, name, artifact_location=str(root / "artifacts" / name))


def recipe(bits: int) -> Recipe:
    # model_construct: these tests are about tracking, not about technique validation.
    step = Step(technique="quantize", params={"method": "rtn", "bits": bits, "group_size": 128})
    return Recipe.model_construct(model="tiny-llama", seed=bits, steps=[step])


def artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    return {Path(f.path).name for f in client.list_artifacts(run_id, path)}


def pareto_tags(tracker: MlflowTracker) -> dict[int, str]:
    return {n: tracker.client.get_run(rid).data.tags["autocompress.pareto"] for n, rid in tracker.trial_runs().items()}


def test_job_and_trials(store: tuple[str, Path]) -> None:
    tracker = new_tracker(store)
    job = tracker.start_job({"name": "demo", "trials": 3, "out": Path("/tmp/x")})
    assert tracker.job_run_id() == job
    client = tracker.client
    assert client.get_run(job).data.tags["autocompress.role"] == "job"
    job_yaml = yaml.safe_load(Path(client.download_artifacts(job, "job.yaml")).read_text())
    assert job_yaml == {"name": "demo", "trials": 3, "out": "/tmp/x"}

    ids = [tracker.start_trial(n, recipe(bits)) for n, bits in enumerate((2, 4, 8))]
    assert tracker.trial_runs() == dict(enumerate(ids))
    for n, (run_id, bits) in enumerate(zip(ids, (2, 4, 8))):
        run = client.get_run(run_id)
        assert run.info.run_name == f"trial-{n}" and run.info.status == "RUNNING"
        assert run.data.params == recipe(bits).flatten()
        assert run.data.params["steps.0.quantize.bits"] == str(bits)
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == job
        assert {k: tags[f"autocompress.{k}"] for k in ("role", "trial", "state", "feasible", "pareto")} == {
            "role": "trial",
            "trial": str(n),
            "state": "RUNNING",
            "feasible": "false",
            "pareto": "false",
        }
        assert artifacts(client, run_id) == {"recipe.yaml"}
        text = Path(client.download_artifacts(run_id, "recipe.yaml")).read_text()
        assert yaml.safe_load(text) == recipe(bits).to_dict()

    tracker.log_trial(
        ids[0],
        {"kl": 0.25, "rpi.decode_ms_per_token": 12.5, "bad": float("nan")},
        "COMPLETE",
        True,
        extra_tags={"autocompress.digest": "abc"},
    )
    tracker.log_trial(ids[1], {"kl": float("inf")}, "PRUNED", False)
    tracker.log_trial(ids[2], {}, "FAIL", False, error="x" * 6000)
    done = [client.get_run(i) for i in ids]
    assert done[0].data.metrics == {"kl": 0.25, "rpi.decode_ms_per_token": 12.5}
    assert done[0].data.tags["autocompress.feasible"] == "true"
    assert done[0].data.tags["autocompress.digest"] == "abc"
    assert done[1].data.metrics == {}
    assert [r.data.tags["autocompress.state"] for r in done] == ["COMPLETE", "PRUNED", "FAIL"]
    assert [r.info.status for r in done] == ["FINISHED", "FINISHED", "FAILED"]
    assert done[2].data.tags["autocompress.error"] == "x" * 5000
    assert "autocompress.error" not in done[0].data.tags
    with pytest.raises(ValueError):
        tracker.log_trial(ids[0], {}, "DONE", True)


def test_mark_pareto_flips_exactly(store: tuple[str, Path]) -> None:
    tracker = new_tracker(store)
    tracker.start_job({})
    for n in range(3):
        tracker.start_trial(n, recipe(4))
    tracker.mark_pareto({0, 2})
    assert pareto_tags(tracker) == {0: "true", 1: "false", 2: "true"}
    tracker.mark_pareto({1})
    assert pareto_tags(tracker) == {0: "false", 1: "true", 2: "false"}
    tracker.mark_pareto(set())
    assert pareto_tags(tracker) == {0: "false", 1: "false", 2: "false"}


def test_resume_reuses_job_run_and_closes_interrupted(store: tuple[str, Path]) -> None:
    first = new_tracker(store, "resume")
    job = first.start_job({"trials": 3})
    ids = [first.start_trial(n, recipe(4)) for n in range(3)]
    first.log_trial(ids[0], {"kl": 0.1}, "COMPLETE", True)
    first.finish_job("KILLED")  # the process died; trials 1 and 2 were left RUNNING

    second = new_tracker(store, "resume")
    assert second.experiment_id == first.experiment_id
    assert second.start_job({"trials": 5}) == job
    assert second.client.get_run(job).info.status == "RUNNING"
    job_yaml = yaml.safe_load(Path(second.client.download_artifacts(job, "job.yaml")).read_text())
    assert job_yaml == {"trials": 5}
    assert len(second.client.search_runs([second.experiment_id], "tags.`autocompress.role` = 'job'")) == 1

    assert second.close_interrupted(live_trial_numbers={2}) == [1]
    runs = {n: second.client.get_run(rid) for n, rid in second.trial_runs().items()}
    assert runs[1].info.status == "KILLED" and runs[1].data.tags["autocompress.state"] == "INTERRUPTED"
    assert runs[2].info.status == "RUNNING" and runs[2].data.tags["autocompress.state"] == "RUNNING"
    assert runs[0].info.status == "FINISHED" and runs[0].data.tags["autocompress.state"] == "COMPLETE"
    assert second.close_interrupted(live_trial_numbers=set()) == [2]
    assert second.close_interrupted(live_trial_numbers=set()) == []


def test_log_model_registers_a_version(store: tuple[str, Path], tmp_path: Path) -> None:
    tracker = new_tracker(store)
    tracker.start_job({})
    run_id = tracker.start_trial(7, recipe(4))
    model_dir = tmp_path / "export"
    (model_dir / "sub").mkdir(parents=True)
    (model_dir / "config.json").write_text(json.dumps({"model_type": "llama"}))
    (model_dir / "sub" / "weights.bin").write_bytes(b"\0" * 16)

    name = f"autocompress-test-{next(_names)}"
    assert tracker.log_model(run_id, str(model_dir), name) == "1"
    assert tracker.log_model(run_id, str(model_dir), name) == "2"  # registered model already exists

    client = tracker.client
    assert artifacts(client, run_id, "model") == {"config.json", "sub"}
    version = client.get_model_version(name, "1")
    assert version.run_id == run_id and version.status == "READY"
    assert version.tags == {"autocompress.trial": "7"}
    source = Path(client.get_model_version_download_uri(name, "1"))
    assert json.loads((source / "config.json").read_text()) == {"model_type": "llama"}
    with pytest.raises(FileNotFoundError):
        tracker.log_model(run_id, str(tmp_path / "missing"), name)


def front_rows() -> list[dict]:
    def row(n: int, kl: float, ms: float, pareto: bool, feasible: bool = True, state: str = "COMPLETE") -> dict:
        metrics = {"kl": kl, "rpi.decode_ms_per_token": ms} if state != "FAIL" else {}
        return {
            "trial": n,
            "pareto": pareto,
            "feasible": feasible,
            "state": state,
            "metrics": metrics,
            "recipe": recipe(4).to_dict(),
        }

    return [
        row(0, 0.1, 30.0, True),
        row(1, 0.3, 12.0, True),
        row(2, 0.4, 35.0, False),
        row(3, 0.05, 80.0, False, feasible=False),
        row(4, 0.0, 0.0, False, False, "FAIL"),
        row(15, 0.2, 20.0, True),
    ]


OBJECTIVES = [("kl", "minimize"), ("rpi.decode_ms_per_token", "minimize")]


def test_log_front_writes_json_and_plots(store: tuple[str, Path], tmp_path: Path) -> None:
    tracker = new_tracker(store)
    job = tracker.start_job({})
    rows = front_rows()
    tracker.log_front(str(write_front(rows, OBJECTIVES, tmp_path)))
    client = tracker.client
    assert {"pareto.json", "pareto.png", "pareto.html"} <= artifacts(client, job)
    assert json.loads(Path(client.download_artifacts(job, "pareto.json")).read_text()) == rows
    png = Path(client.download_artifacts(job, "pareto.png")).read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 5000
    html = Path(client.download_artifacts(job, "pareto.html")).read_text()
    for n in (0, 1, 2, 3, 15):
        assert f"trial {n} (" in html
    assert "trial 4 (" not in html  # failed trial: no metrics to plot
    assert "kl (min)" in html and "rtn w4g128" in html
    assert 'src="https://cdn.plot.ly' not in html and len(html) > 1_000_000  # plotly.js embedded: offline


def test_plots_three_objectives_and_maximise(tmp_path: Path) -> None:
    rows = front_rows()
    for r in rows:
        if r["metrics"]:
            r["metrics"]["accuracy"] = 1.0 - r["metrics"]["kl"]
    objectives = [*OBJECTIVES, ("accuracy", "maximize")]
    png = pareto_figure_png(rows, objectives, tmp_path / "a" / "p.png")
    assert png.read_bytes().startswith(b"\x89PNG")
    html = pareto_figure_html(rows, objectives, tmp_path / "p.html").read_text()
    assert "accuracy (max)" in html and "splom" in html
    pareto_figure_png(rows, [("accuracy", "maximize"), ("kl", "minimize")], tmp_path / "m.png")
    with pytest.raises(ValueError):
        pareto_figure_png(rows, OBJECTIVES[:1], tmp_path / "one.png")


def test_null_tracker(tmp_path: Path) -> None:
    tracker: Tracker = NullTracker()
    run_id = tracker.start_trial(0, recipe(4))
    assert tracker.start_job({"a": 1}) == "" and run_id == "" and tracker.job_run_id() == ""
    tracker.log_trial(run_id, {"kl": 1.0}, "COMPLETE", True)
    tracker.mark_pareto({0})
    tracker.log_front(str(tmp_path))
    tracker.finish_job()
    assert tracker.trial_runs() == {} and tracker.close_interrupted(set()) == []
    assert tracker.log_model(run_id, "/nonexistent", "m") == ""
