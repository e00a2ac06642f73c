"""Bad input gets one clear line naming the field and what is allowed, exit 2, and nothing half-written.

Most cases go through the Python API (``Job.from_dict``, ``Recipe.parse_obj``, ``SearchSpace.load``,
``JobRunner``, ``open_storage``); a handful run the installed ``autocompress`` console script, because
only ``cli.main()`` turns an :class:`AutocompressError` into ``error: ...`` on stderr and exit code 2.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from autocompress.errors import AutocompressError, ConfigError, ModelSourceError
from autocompress.recipe import Recipe
from autocompress.search.job import Job
from autocompress.search.runner import JobRunner
from autocompress.search.space import SearchSpace
from autocompress.search.storage import open_storage

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")  # heartbeat_interval

JOB_NAME = "errjob"
TARGET = "raspberry-pi-5"
TINY_TEXT = {"seq_len": 16, "calibration_samples": 1, "eval_samples": 1}


# ---- helpers -------------------------------------------------------------------------------
def job_dict(workdir: Path, model: str = "smollm2-135m", **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "name": JOB_NAME,
        "model": model,
        "space": "demo",
        "targets": [TARGET],
        "objectives": [{"metric": "kl"}, {"metric": f"{TARGET}.decode_ms_per_token"}],
        "workdir": str(workdir),
    }
    data.update(changes)
    return data


def raised(exc_info: pytest.ExceptionInfo, field: str, *fragments: str) -> str:
    """The message starts with ``field: ``, holds every fragment and is a single line."""
    message = str(exc_info.value)
    assert message.startswith(f"{field}: "), message
    assert "\n" not in message and "\r" not in message, message
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def assert_nothing_created(workdir: Path, name: str = JOB_NAME) -> None:
    """No study, no MLflow database, no job folder, no artifacts for ``name`` under ``workdir``."""
    db = workdir / "optuna.db"
    if db.exists():
        assert name not in optuna.get_all_study_names(storage=f"sqlite:///{db}")
    assert not (workdir / "mlflow.db").exists()
    assert not (workdir / "mlartifacts").exists()
    assert not (workdir / name).exists()


def cli_env() -> dict[str, str]:
    env = dict(os.environ)  # carries AUTOCOMPRESS_CACHE and HF_HUB_OFFLINE from conftest
    env.update(NO_COLOR="1", TERM="dumb", COLUMNS="300", HF_HUB_OFFLINE="1", PYTHONWARNINGS="ignore")
    return env


def run_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("autocompress")
    command = [str(script)] if script.exists() else [sys.executable, "-c", "from autocompress.cli import main; main()"]
    return subprocess.run(command + args, cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)


def cli_error(proc: subprocess.CompletedProcess, field: str, *fragments: str) -> str:
    """Exit 2 and the error as one ``error: <field>: ...`` line, the last on stderr.

    Progress lines printed before the failure (e.g. "generating calibration text...") may precede it.
    """
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], proc.stderr
    line = errors[0]
    assert line.startswith(f"error: {field}: "), line
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    assert "Traceback" not in proc.stderr + proc.stdout
    return line


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("network access attempted")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ---- job file: keys, sampler, trials, objectives, budgets, name --------------------------
def test_unknown_top_level_key_names_it_and_lists_allowed_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, samplr="tpe"))
    raised(exc, "samplr", "unknown key", "allowed:", "budgets", "objectives", "search", "storage", "targets")
    assert exc.value.field == "samplr"
    assert_nothing_created(tmp_path)


def test_unknown_nested_key_lists_that_sections_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, search={"trails": 5}))
    raised(exc, "search.trails", "unknown key", "sampler", "trials", "timeout")


def test_bad_sampler_lists_the_samplers(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, search={"sampler": "grid"}))
    raised(exc, "search.sampler", "nsga2", "tpe", "random")
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("trials", [0, -3])
def test_trials_below_one(tmp_path: Path, trials: int) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, search={"trials": trials}))
    raised(exc, "search.trials", "greater than or equal to 1")
    assert_nothing_created(tmp_path)


def test_unknown_objective_metric_lists_accuracy_and_cost_metrics(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, objectives=[{"metric": "accuracy"}]))
    raised(exc, "objectives[0].metric", "'accuracy'", "kl", "perplexity", "decode_ms_per_token", "peak_memory_mb")
    assert_nothing_created(tmp_path)


def test_unknown_cost_metric_of_a_known_target(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, objectives=[{"metric": "kl"}, {"metric": f"{TARGET}.watts"}]))
    raised(exc, "objectives[1].metric", "'watts'", "decode_ms_per_token", "prefill_ms", "peak_memory_mb")


def test_bad_objective_direction(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, objectives=[{"metric": "kl", "direction": "down"}]))
    raised(exc, "objectives[0].direction", "minimize", "maximize")


def test_budget_on_a_target_not_in_targets(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, budgets={"apple-m2.peak_memory_mb": {"max": 300}}))
    raised(exc, "budgets.apple-m2.peak_memory_mb", "'apple-m2'", "not in targets", TARGET)
    assert_nothing_created(tmp_path)


@pytest.mark.parametrize("metric", ["kl", f"{TARGET}.peak_memory_mb"])
def test_impossible_budget_negative_max(tmp_path: Path, metric: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, budgets={metric: {"max": -0.1}}))
    raised(exc, f"budgets.{metric}", "never be met", "never negative")
    assert_nothing_created(tmp_path)


def test_impossible_budget_min_above_max(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, budgets={"kl": {"min": 0.5, "max": 0.1}}))
    raised(exc, "budgets.kl", "min 0.5 is above max 0.1")
    assert_nothing_created(tmp_path)


def test_budget_without_bounds(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(tmp_path, budgets={"kl": {}}))
    raised(exc, "budgets.kl", "max", "min")


@pytest.mark.parametrize("name", ["../evil", "a/../../b", "..", "/abs", ""])
def test_job_name_with_path_traversal(tmp_path: Path, name: str) -> None:
    workdir = tmp_path / "runs"
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(job_dict(workdir, name=name))
    raised(exc, "name", "letters, digits")
    assert not workdir.exists()
    assert not (tmp_path / "evil").exists()


def test_job_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as exc:
        Job.from_dict(["not", "a", "mapping"])
    raised(exc, "job", "mapping")


def test_malformed_yaml_job_file(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text("name: x\ntargets: [raspberry-pi-5\nobjectives: {{\n")
    with pytest.raises(ConfigError) as exc:
        Job.from_file(path)
    raised(exc, "job", "not valid YAML", str(path))


# ---- recipes: techniques and their parameters -------------------------------------------
def recipe(*steps: dict[str, Any]) -> Recipe:
    return Recipe.parse_obj({"model": "smollm2-135m", "steps": list(steps)})


def test_unknown_technique_lists_the_techniques() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "quantize"}, {"technique": "lobotomize"})
    raised(exc, "steps[1].technique", "'lobotomize'", "allowed:", "prune_depth", "quantize", "sparsify")


def test_quantize_bits_5_lists_allowed_bits() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "quantize", "params": {"bits": 5}})
    raised(exc, "steps[0].params.bits", "2, 3, 4, 8 or 16")


def test_unknown_quantize_method_lists_methods() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "quantize", "params": {"method": "magic"}})
    raised(exc, "steps[0].params.method", "unknown method 'magic'", "allowed: awq, gptq, rtn")


def test_unknown_method_in_an_override_names_the_override() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "quantize", "params": {"overrides": [{"match": "mlp.*", "method": "hqq"}]}})
    raised(exc, "steps[0].params.overrides[0].method", "unknown method 'hqq'", "awq, gptq, rtn")


def test_sparsity_above_limit() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "sparsify", "params": {"sparsity": 0.95}})
    raised(exc, "steps[0].params.sparsity", "0.9")


def test_unknown_technique_param_lists_params() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "sparsify", "params": {"sparsty": 0.5}})
    raised(exc, "steps[0].params.sparsty", "unknown key", "method", "overrides", "sparsity")


def test_recipe_that_is_not_a_mapping() -> None:
    with pytest.raises(ConfigError) as exc:
        Recipe.from_yaml("- just\n- a list\n")
    raised(exc, "recipe", "model", "steps")


# ---- search spaces -----------------------------------------------------------------------
def test_unknown_search_space_name_lists_spaces() -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace.load("nonexistent-space")
    raised(exc, "space", "'nonexistent-space'", "allowed:", "demo", "edge-llm")


def test_search_space_path_traversal_name() -> None:
    with pytest.raises(ConfigError) as exc:
        SearchSpace.load("..")
    raised(exc, "space")


def test_search_space_with_unknown_technique(tmp_path: Path) -> None:
    path = tmp_path / "bad-space.yaml"
    path.write_text(yaml.safe_dump({"name": "bad", "steps": [{"technique": "shrink", "params": {}}]}))
    with pytest.raises(ConfigError) as exc:
        SearchSpace.load(str(path))
    raised(exc, "space (bad-space.yaml): steps[0].technique", "'shrink'", "quantize")


def test_search_space_offering_a_bad_value(tmp_path: Path) -> None:
    path = tmp_path / "bad-bits.yaml"
    path.write_text(
        yaml.safe_dump({"name": "bad", "steps": [{"technique": "quantize", "params": {"bits": {"choice": [4, 5]}}}]})
    )
    with pytest.raises(ConfigError) as exc:
        SearchSpace.load(str(path))
    raised(exc, "space (bad-bits.yaml): steps[0].params.bits", "2, 3, 4, 8 or 16")


# ---- storage -----------------------------------------------------------------------------
def test_storage_that_is_not_a_url() -> None:
    with pytest.raises(ConfigError) as exc:
        open_storage("notaurl", 10)
    raised(exc, "storage", "'notaurl'", "not a SQLAlchemy URL", "sqlite:///", "postgresql://")


def test_storage_unreachable_server() -> None:
    with pytest.raises(ConfigError) as exc:
        open_storage("postgresql://nobody@127.0.0.1:1/x", 10)
    raised(exc, "storage", "cannot open", "postgresql://nobody@127.0.0.1:1/x")


def test_sqlite_storage_in_missing_folder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'optuna.db'}"
    with pytest.raises(ConfigError) as exc:
        open_storage(url, 10)
    raised(exc, "storage", "does not exist")
    assert not (tmp_path / "no").exists()


# ---- the runner: validates model, space and targets before creating anything ------------
@pytest.mark.parametrize(
    "changes, field, fragments",
    [
        ({"space": "nonexistent-space"}, "space", ("allowed:", "demo")),
        (
            {"targets": ["toaster"], "objectives": [{"metric": "kl"}]},
            "targets[0]",
            ("'toaster'", "allowed:", "raspberry-pi-5", "apple-m2"),
        ),
        ({"model": "MISSING"}, "model", ("not a known alias", "smollm2-135m", "local checkpoint folder")),
    ],
    ids=["space", "target", "missing-model-path"],
)
def test_runner_rejects_before_creating_anything(
    tmp_path: Path, tiny_checkpoints: dict[str, Path], changes: dict, field: str, fragments: tuple[str, ...]
) -> None:
    workdir = tmp_path / "runs"
    data = job_dict(workdir, model=str(tiny_checkpoints["llama"]))
    data.update(changes)
    if data["model"] == "MISSING":
        data["model"] = str(tmp_path / "no-such-model")
    job = Job.from_dict(data)
    with pytest.raises(AutocompressError) as exc:
        JobRunner(job).run()
    raised(exc, field, *fragments)
    assert not workdir.exists()


def test_model_folder_without_weights(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    folder = tmp_path / "no-weights"
    folder.mkdir()
    shutil.copy(tiny_checkpoints["llama"] / "config.json", folder / "config.json")
    with pytest.raises(ModelSourceError) as exc:
        JobRunner(Job.from_dict(job_dict(tmp_path / "runs", model=str(folder))))
    raised(exc, "model", "no .safetensors weights")
    assert not (tmp_path / "runs").exists()


def test_hub_id_offline_is_a_clear_error_without_network(
    tmp_path: Path, no_network: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))  # an empty hub cache
    workdir = tmp_path / "runs"
    job = Job.from_dict(job_dict(workdir, model="nonexistent-org/nonexistent-model"))
    with pytest.raises(ModelSourceError) as exc:
        JobRunner(job).run()
    raised(exc, "model", "'nonexistent-org/nonexistent-model'", "not in the local hub cache", "downloads are off")
    assert not workdir.exists()


@pytest.mark.parametrize(
    "storage, fragments",
    [
        ("notaurl", ("not a SQLAlchemy URL",)),
        ("postgresql://nobody@127.0.0.1:1/x", ("cannot open",)),
    ],
    ids=["notaurl", "unreachable"],
)
def test_runner_with_bad_storage_leaves_nothing(
    tmp_path: Path, tiny_checkpoints: dict[str, Path], storage: str, fragments: tuple[str, ...]
) -> None:
    workdir = tmp_path / "runs"
    with pytest.raises(ConfigError) as exc:  # a malformed URL fails validation, an unreachable one on connect
        JobRunner(Job.from_dict(job_dict(workdir, model=str(tiny_checkpoints["llama"]), storage=storage))).run()
    raised(exc, "storage", *fragments)
    assert_nothing_created(workdir)


def test_runner_with_bad_tracking_uri_leaves_no_study(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    workdir = tmp_path / "runs"
    job = Job.from_dict(
        job_dict(workdir, model=str(tiny_checkpoints["llama"]), tracking="nosuchscheme://tracking/server")
    )
    with pytest.raises(ConfigError) as exc:
        JobRunner(job).run()
    raised(exc, "tracking", "nosuchscheme://tracking/server")
    assert_nothing_created(workdir)  # optuna.db may hold tables, but no study named JOB_NAME


# ---- end to end through the console script: exit 2, one line on stderr -------------------
def test_cli_unknown_key_in_job_file(tmp_path: Path) -> None:
    job = job_dict(tmp_path / "runs", population=16)
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    proc = run_cli(["search", "job.yaml", "--quiet"], tmp_path)
    cli_error(proc, "population", "unknown key", "allowed:", "search", "workdir")
    assert not (tmp_path / "runs").exists()


def test_cli_malformed_yaml_job_file(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: x\ntargets: [raspberry-pi-5\n  objectives: : :\n")
    proc = run_cli(["search", "job.yaml", "--workdir", "runs"], tmp_path)
    cli_error(proc, "job", "not valid YAML")
    assert not (tmp_path / "runs").exists()


def test_cli_bad_storage_url(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    proc = run_cli(
        [
            "search",
            "--name",
            JOB_NAME,
            "--model",
            str(tiny_checkpoints["llama"]),
            "--target",
            TARGET,
            "--objective",
            "kl",
            "--storage",
            "notaurl",
            "--workdir",
            "runs",
            "--quiet",
        ],
        tmp_path,
    )
    cli_error(proc, "storage", "'notaurl'", "sqlite:///")
    assert_nothing_created(tmp_path / "runs")


def test_cli_pipeline_run_drops_every_layer(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    recipe_file = tmp_path / "drop-all.yaml"
    recipe_file.write_text(
        yaml.safe_dump(
            {
                "model": str(tiny_checkpoints["llama"]),
                "calibration": TINY_TEXT,
                "steps": [{"technique": "prune_depth", "params": {"drop_layers": 4}}],
            }
        )
    )
    out_dir = tmp_path / "out"
    proc = run_cli(["pipeline", "run", str(recipe_file), "--out", str(out_dir), "--target", TARGET], tmp_path)
    cli_error(proc, "prune_depth.drop_layers", "4", "less than", "4 layers")
    assert not out_dir.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.tmp")]


def test_cli_reproduce_check_without_record(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    folder = tmp_path / "artifact"
    folder.mkdir()
    (folder / "recipe.yaml").write_text(
        Recipe.parse_obj(
            {
                "model": str(tiny_checkpoints["llama"]),
                "calibration": TINY_TEXT,
                "steps": [{"technique": "quantize", "params": {"bits": 8}}],
            }
        ).to_yaml()
    )
    out_dir = tmp_path / "again"
    proc = run_cli(["reproduce", str(folder / "recipe.yaml"), "--out", str(out_dir), "--check"], tmp_path)
    cli_error(proc, "--check", "nothing recorded", "metrics.json")
    assert not out_dir.exists()  # refused before re-creating anything


def test_same_name_with_a_different_job_is_refused_before_anything_is_written(tmp_path, tiny_checkpoints):
    from autocompress.backends import run_job

    first = job_dict(tmp_path / "runs", model=str(tiny_checkpoints["llama"]))
    first["search"] = {"trials": 1, "sampler": "random"}
    run_job(Job.from_dict(first), progress=False)
    changed = {**first, "objectives": [{"metric": "perplexity"}]}
    client_db = tmp_path / "runs" / "mlflow.db"
    before = client_db.stat().st_mtime_ns
    with pytest.raises(ConfigError) as exc:
        run_job(Job.from_dict(changed), progress=False)
    raised(exc, "name", "different", "use another name")
    assert client_db.stat().st_mtime_ns == before


def test_steps_out_of_the_canonical_order_are_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "quantize"}, {"technique": "sparsify"})
    raised(
        exc,
        "steps[1].technique",
        "'sparsify' must come before 'quantize'",
        "prune_depth -> prune_width -> sparsify -> quantize -> tensor_levels -> distill -> early_exit",
    )


def test_impossible_structure_requests_are_clear_errors() -> None:
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "sparsify", "params": {"pattern": "4:4"}})
    raised(exc, "steps[0].params.pattern", "0 < N < M")
    with pytest.raises(ConfigError) as exc:
        recipe({"technique": "prune_width", "params": {"heads_ratio": 1.0}})
    raised(exc, "steps[0].params.heads_ratio", "less than 1")
