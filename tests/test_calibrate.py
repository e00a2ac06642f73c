"""Host calibration: the fit recovers known factors, the YAML it writes is a valid target."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import build_model

from autocompress.hardware.profile import profile_model
from autocompress.hardware.roofline import RooflineModel, Workload
from autocompress.hardware.target import HardwareTarget, load_target
from autocompress.hosts.calibrate import Sample, errors, fit, target_yaml
from autocompress.hosts.measure import ModelTiming, time_model
from autocompress.models.adapter import ModelAdapter
from autocompress.timing import median_seconds

HOST = dict(
    name="host",
    description="test host",
    runtime="torch eager",
    memory_bandwidth_gbps=10.0,
    sustained_bandwidth_fraction=1.0,
    peak_gflops={"fp32": 50.0, "fp16": 50.0, "int8": 50.0, "int4": 50.0},
    compute_efficiency=1.0,
    memory_capacity_gb=16,
    per_op_overhead_us=1.0,
    power_w=15,
    runtime_bits=32,
)


def _profiles():
    """Tiny models of several depths and workloads of several lengths: a spread of intensities."""
    out = []
    for layers in (4, 3, 2, 1):
        model = build_model("llama")
        ModelAdapter(model).keep_layers(list(range(layers)))
        for prompt, context in ((8, 16), (256, 64), (64, 1024)):
            out.append((f"{layers}L p{prompt} c{context}", profile_model(model), Workload(prompt, context)))
    return out


def test_fit_recovers_known_efficiency_factors():
    truth = HardwareTarget(
        **{**HOST, "sustained_bandwidth_fraction": 0.35, "compute_efficiency": 0.6, "per_op_overhead_us": 12.0}
    )
    samples = []
    for label, profile, workload in _profiles():
        p = RooflineModel(truth).predict(profile, workload)
        samples.append(Sample(label, profile, workload, ModelTiming(p["prefill_ms"], p["decode_ms_per_token"])))
    fitted = fit(HardwareTarget(**HOST), samples)
    assert fitted.sustained_bandwidth_fraction == pytest.approx(0.35, rel=0.02)
    assert fitted.compute_efficiency == pytest.approx(0.6, rel=0.02)
    assert fitted.per_op_overhead_us == pytest.approx(12.0, rel=0.02)
    assert errors(fitted, samples).decode_mape < 0.5
    before = errors(HardwareTarget(**HOST), samples)
    assert before.decode_mape > 20 and before.decode_within_10 < 50


def test_a_fixed_width_runtime_gets_nothing_from_quantization():
    model = build_model("llama")
    fp = profile_model(model)
    from autocompress.models.annotations import WeightFormat, set_weight_format

    for site in ModelAdapter(model).linear_sites():
        set_weight_format(site.module, WeightFormat(4, 32))
    int4 = profile_model(model)
    host = RooflineModel(HardwareTarget(**HOST))
    assert host.predict(int4) == host.predict(fp)
    device = RooflineModel(load_target("raspberry-pi-5"))
    assert device.predict(int4)["decode_ms_per_token"] < device.predict(fp)["decode_ms_per_token"]


def test_written_yaml_is_a_valid_target_that_cites_its_numbers(tmp_path):
    target = HardwareTarget(
        **{**HOST, "sustained_bandwidth_fraction": 0.4321, "description": "this machine: x86_64, 2 CPUs"}
    )  # a colon, as platform gives
    samples = [Sample("x", p, w, ModelTiming(10.0, 1.0)) for _, p, w in _profiles()[:2]]
    path = tmp_path / "host.yaml"
    path.write_text(target_yaml(target, len(samples), errors(target, samples)))
    loaded = load_target(str(path))
    assert loaded.sustained_bandwidth_fraction == pytest.approx(0.4321)
    assert loaded.runtime_bits == 32 and loaded.description == "this machine: x86_64, 2 CPUs"
    for key in ("memory_bandwidth_gbps", "sustained_bandwidth_fraction", "compute_efficiency", "per_op_overhead_us"):
        lines = path.read_text().splitlines()
        i = next(i for i, line in enumerate(lines) if line.startswith(key))
        assert lines[i - 1].startswith("#")
    assert yaml.safe_load(path.read_text())["name"] == "host"


def test_energy_is_decode_time_times_power():
    profile = profile_model(build_model("qwen2"))
    target = load_target("raspberry-pi-5")
    p = RooflineModel(target).predict(profile)
    assert p["energy_mj_per_token"] == pytest.approx(p["decode_ms_per_token"] * target.power_w)


def test_measurements_are_positive_and_ordered_by_size():
    small, large = build_model("llama"), build_model("llama")
    ModelAdapter(small).keep_layers([0])
    t_small = time_model(small, 16, 32, repeats=3)
    t_large = time_model(large, 128, 32, repeats=3)
    assert 0 < t_small.prefill_ms < t_large.prefill_ms
    assert t_small.decode_ms_per_token > 0
    assert median_seconds(lambda: None, repeats=3) >= 0


def test_prefill_is_timed_with_the_last_tokens_logits_only():
    model, logits = build_model("qwen2"), []
    model.register_forward_hook(lambda module, args, output: logits.append(tuple(output.logits.shape)))
    time_model(model, 16, 8, repeats=2, decode_steps=1)
    assert logits[0] == (1, 1, model.config.vocab_size)  # what a runtime computes after a prompt


def test_upper_bound_budgets_are_stricter(tmp_path, tiny_checkpoints):
    from autocompress.backends import run_job
    from autocompress.search.job import Job

    def job(bound: str) -> Job:
        return Job.from_dict(
            {
                "name": f"b-{bound}",
                "model": str(tiny_checkpoints["llama"]),
                "space": str(Path(__file__).parent / "data" / "tiny-space.yaml"),
                "targets": ["raspberry-pi-5"],
                "objectives": [{"metric": "kl"}],
                "budgets": {"raspberry-pi-5.decode_ms_per_token": {"max": 0.33}},
                "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
                "search": {"trials": 6, "sampler": "random", "seed": 4, "cost_bound": bound},
                "tracking": "none",
                "export": False,
                "workdir": str(tmp_path),
            }
        )

    expected = run_job(job("expected"), progress=False).records
    upper = run_job(job("upper"), progress=False).records
    assert [r.recipe for r in expected] == [r.recipe for r in upper]  # same seed, same trials
    feasible = lambda rs: {r.number for r in rs if r.feasible}  # noqa: E731
    assert feasible(upper) < feasible(expected)  # a strict subset: some pass only on the expected value
    u = load_target("raspberry-pi-5").uncertainty
    for r in upper:
        if r.feasible:
            assert r.metrics["raspberry-pi-5.decode_ms_per_token"] * (1 + u) <= 0.33


def test_validation_recipes_are_valid_for_smollm2_widths():
    from autocompress.hosts.suites import CALIBRATION_SHAPES, VALIDATION_RECIPES, VALIDATION_SHAPES
    from autocompress.recipe import Recipe

    assert len(VALIDATION_SHAPES) + len(VALIDATION_RECIPES) >= 20
    assert not {s.label for s in CALIBRATION_SHAPES} & {s.label for s in VALIDATION_SHAPES}
    for steps in VALIDATION_RECIPES.values():
        recipe = Recipe.parse_obj({"model": "smollm2-135m", "steps": steps})
        for step in recipe.steps:
            group = step.params.get("group_size", 0)
            assert all(width % group == 0 for width in (576, 1536)) if group else True
