"""Evaluators: lm-eval tasks from local files, top-k KL, the evaluation cache, `autocompress evaluate`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import SHARED_DATA, build_model, make_context

from autocompress.errors import ConfigError
from autocompress.evaluators import EvalSettings, evaluators_for
from autocompress.evaluators.next_token import NextTokenEvaluator, log_probs, topk_kl
from autocompress.evaluators.tasks import build_task, local_task_names, task_source
from autocompress.pipeline import measure_accuracy, open_session
from autocompress.recipe import TextSpec
from autocompress.search.job import Job

PIQA = [
    ("Make the dog happy", "give the dog a bone.", "give the dog a rock.", 0),
    ("Open a jar", "twist the lid to the left.", "paint the lid blue.", 0),
    ("Dry wet shoes", "put them in the oven at 500 degrees.", "stuff them with newspaper.", 1),
    ("Cut a cake", "use a knife.", "use a spoon and a fork together.", 0),
    ("Cool soup quickly", "stir it in a bowl of ice.", "put it on the stove.", 0),
    ("Light a room", "open the curtains.", "close the doors and windows.", 0),
]


def write_piqa(folder: Path, rows=PIQA) -> Path:
    (folder / "piqa").mkdir(parents=True, exist_ok=True)
    (folder / "piqa" / "valid.jsonl").write_text(
        "".join(json.dumps({"goal": g, "sol1": a, "sol2": b}) + "\n" for g, a, b, _ in rows)
    )
    (folder / "piqa" / "valid-labels.lst").write_text("".join(f"{label}\n" for *_, label in rows))
    return folder


@pytest.fixture
def tiny_data(tmp_path: Path) -> Path:
    return write_piqa(tmp_path / "data")


# ---- local lm-eval tasks -----------------------------------------------------------------------
# (task, what lm-eval's own prompt makes of the first local example, its gold answer)
FIRST_EXAMPLES = {
    "piqa": ("Question: How do I ready a guinea pig cage for it's new occupants?\nAnswer:", 0),
    "arc_easy": (
        "Question: Which statement best explains why photosynthesis is the foundation of most food webs?\nAnswer:",
        0,
    ),
    "hellaswag": ("Roof shingle removal: A man is sitting on a roof. he", 3),
    "boolq": (None, 0),  # "false" -> index 0 ("no")
    "winogrande": (1, "always got the easier cases."),  # lm-eval's winogrande puts the gold index in the text
    "lambada_openai": (None, " signs"),
}


def test_catalog_covers_the_six_tasks() -> None:
    assert set(FIRST_EXAMPLES) <= set(local_task_names())


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="needs ../shared/data")
def test_local_tasks_load_offline_with_lm_eval_prompts() -> None:
    """In a fresh process with the hub and datasets offline: every local task builds from files."""
    script = f"""
import json
from pathlib import Path
from autocompress.evaluators.tasks import build_task, task_source
out = {{}}
for name in {sorted(FIRST_EXAMPLES)!r}:
    task = build_task(task_source(name, Path({str(SHARED_DATA)!r})), limit=3)
    doc = task.eval_docs[0]
    out[name] = [len(task.eval_docs), task.doc_to_text(doc), task.doc_to_target(doc), task.OUTPUT_TYPE]
print(json.dumps(out))
"""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": "/nonexistent-hf-home"}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    for name, (text, target) in FIRST_EXAMPLES.items():
        n, got_text, got_target, output_type = loaded[name]
        assert n == 3, name
        if text is not None:
            assert got_text == text, name
        assert got_target == target, name
    assert loaded["lambada_openai"][3] == "loglikelihood" and loaded["piqa"][3] == "multiple_choice"


def test_missing_data_file_names_the_task_and_path(tmp_path: Path) -> None:
    (evaluator,) = evaluators_for(["lm_eval:arc_easy"], EvalSettings(data=str(tmp_path)))
    with pytest.raises(ConfigError) as err:
        evaluator.source
    message = str(err.value)
    assert message.startswith("lm_eval:arc_easy:")
    assert str(tmp_path / "arc_easy" / "ARC-Easy-Test.jsonl") in message


def test_without_a_data_folder_the_stock_task_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUTOCOMPRESS_DATA", raising=False)
    source = task_source("piqa", None)
    assert source.local is None and source.metric == "acc_norm"
    assert task_source("mmlu_anatomy", None).metric == "acc"  # any stock task name is accepted


def _acc_norm_by_hand(model: torch.nn.Module, tokenizer, rows) -> float:
    """PIQA's acc_norm as lm-eval defines it, computed without lm-eval: the check of the data path."""
    hits = 0
    for goal, sol1, sol2, label in rows:
        context = f"Question: {goal}\nAnswer:"
        scores = []
        for choice in (sol1, sol2):
            ctx_ids = tokenizer.encode(context)
            whole = tokenizer.encode(context + " " + choice)
            ids = torch.tensor([whole])
            with torch.no_grad():
                logp = F.log_softmax(model(input_ids=ids).logits[0].float(), -1)
            cont = whole[len(ctx_ids) :]
            ll = sum(logp[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont))
            scores.append(ll / len(choice))
        hits += int(max(range(2), key=scores.__getitem__) == label)
    return hits / len(rows)


def test_tiny_model_gets_a_deterministic_lm_eval_score(tokenizer, tiny_data: Path) -> None:
    model = build_model("llama")
    ctx = make_context(model, tokenizer)
    (evaluator,) = evaluators_for(["lm_eval:piqa"], EvalSettings(data=str(tiny_data), limit=6, batch_size=4))
    first = evaluator.evaluate(model, ctx)["lm_eval:piqa"]
    again = evaluator.evaluate(model, ctx)["lm_eval:piqa"]
    assert first == again == pytest.approx(_acc_norm_by_hand(model, tokenizer, PIQA))


def test_limit_takes_the_first_examples(tiny_data: Path) -> None:
    task = build_task(task_source("piqa", tiny_data), limit=2)
    assert [d["goal"] for d in task.eval_docs] == ["Make the dog happy", "Open a jar"]
    assert [d["label"] for d in task.eval_docs] == [0, 0]


# ---- next-token metrics with stored top-k -------------------------------------------------------
def test_kl_of_a_model_to_itself_is_zero(tiny_model, tokenizer) -> None:
    ctx = make_context(tiny_model, tokenizer)
    metrics = NextTokenEvaluator(top_k=8).evaluate(tiny_model, ctx)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-6)
    assert metrics["top1_agreement"] == 1.0


def _perturbed(model: torch.nn.Module, scale: float) -> torch.nn.Module:
    import copy

    other = copy.deepcopy(model)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(torch.randn(p.shape, generator=gen) * scale * p.std())
    return other


@pytest.mark.parametrize("noise", [0.1, 0.5, 1.0])
def test_topk_kl_approximates_full_kl(noise: float) -> None:
    """LM-like peaked distributions over a 4096-token vocabulary, the top 64 holding ~98 % of the mass."""
    gen = torch.Generator().manual_seed(0)
    base = F.log_softmax(torch.randn(256, 4096, generator=gen) * 5, -1)
    logq = F.log_softmax(base + torch.randn(base.shape, generator=gen) * noise, -1)
    full = F.kl_div(logq, base, log_target=True, reduction="none").sum(-1)
    top = base.topk(64, dim=-1)
    assert top.values.exp().sum(-1).mean() > 0.95
    approx = topk_kl(top.values, top.indices, logq)
    assert (approx <= full + 1e-6).all()  # a coarsening never increases KL
    assert approx.mean().item() == pytest.approx(full.mean().item(), rel=0.05)
    every = base.topk(base.shape[-1], dim=-1)  # k = vocabulary: exact
    assert topk_kl(every.values, every.indices, logq).mean().item() == pytest.approx(full.mean().item(), rel=1e-4)


def test_evaluator_kl_equals_full_kl_when_k_covers_the_vocabulary(tiny_model, tokenizer) -> None:
    ctx = make_context(tiny_model, tokenizer)
    other = _perturbed(tiny_model, 1.0)
    full = (
        F.kl_div(
            log_probs(other, ctx.evaluation), log_probs(tiny_model, ctx.evaluation), log_target=True, reduction="none"
        )
        .sum(-1)
        .mean()
        .item()
    )
    assert full > 1e-4
    assert NextTokenEvaluator(top_k=320).evaluate(other, ctx)["kl"] == pytest.approx(full, rel=1e-4)
    assert NextTokenEvaluator(top_k=16).evaluate(other, ctx)["kl"] <= full * (1 + 1e-4)


# ---- the evaluation cache ----------------------------------------------------------------------
@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Counts real evaluations per evaluator name."""
    from autocompress.evaluators.harness import LmEvalEvaluator

    calls: dict[str, int] = {}
    for cls in (NextTokenEvaluator, LmEvalEvaluator):
        original = cls.evaluate

        def counting(self, model, ctx, _original=original):
            calls[self.name] = calls.get(self.name, 0) + 1
            return _original(self, model, ctx)

        monkeypatch.setattr(cls, "evaluate", counting)
    return calls


def test_cache_hits_and_invalidates(tiny_checkpoints, tiny_data: Path, counted: dict[str, int]) -> None:
    spec = TextSpec(seq_len=16, calibration_samples=2, eval_samples=2)
    settings = EvalSettings(data=str(tiny_data), limit=4, top_k=16)
    session = open_session(str(tiny_checkpoints["qwen2"]), spec, 0, settings)
    model = _perturbed(session.base.model, 0.1)
    metrics = ["kl", "lm_eval:piqa"]
    first = measure_accuracy(model, session, metrics)
    assert counted == {"next_token": 1, "lm_eval": 1}
    assert measure_accuracy(model, session, metrics) == first  # same weights: read back, not recomputed
    assert counted == {"next_token": 1, "lm_eval": 1}

    measure_accuracy(_perturbed(session.base.model, 0.2), session, metrics)  # other weights
    assert counted == {"next_token": 2, "lm_eval": 2}
    session.evaluation = EvalSettings(data=str(tiny_data), limit=4, top_k=32)  # other evaluator settings
    measure_accuracy(model, session, ["kl"])
    assert counted["next_token"] == 3
    write_piqa(tiny_data, PIQA[::-1])  # other data
    session.evaluation = settings
    measure_accuracy(model, session, ["lm_eval:piqa"])
    assert counted["lm_eval"] == 3


# ---- jobs and the command line -----------------------------------------------------------------
def _job(**evaluation) -> Job:
    return Job.from_dict(
        {"name": "j", "targets": ["raspberry-pi-5"], "objectives": [{"metric": "kl"}], "evaluation": evaluation}
    )


def test_job_accepts_lm_eval_metrics_and_rejects_unknown_costly_ones() -> None:
    assert _job(costly=["lm_eval:piqa", "lm_eval:hellaswag"]).evaluation.costly == ["lm_eval:piqa", "lm_eval:hellaswag"]
    with pytest.raises(ConfigError, match=r"evaluation.costly\[0\].*'accuracy'.*lm_eval:piqa"):
        _job(costly=["accuracy"])
    with pytest.raises(ConfigError, match=r"evaluation.costly\[0\].*objective"):
        _job(costly=["kl"])
    with pytest.raises(ConfigError, match=r"evaluation.limit"):
        _job(limit=0)


def test_cli_evaluate_prints_json_keyed_by_metric(tiny_checkpoints, tiny_data: Path) -> None:
    from typer.testing import CliRunner

    from autocompress.cli import app

    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(tiny_checkpoints["llama"]),
            "--metric",
            "kl",
            "--metric",
            "lm_eval:piqa",
            "--limit",
            "3",
            "--data",
            str(tiny_data),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    values = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(values) == ["kl", "lm_eval:piqa"]
    assert values["kl"] == pytest.approx(0.0, abs=1e-6)  # a plain model is its own base
    assert values["lm_eval:piqa"] in (0.0, 1 / 3, 2 / 3, 1.0)


def test_cli_evaluate_missing_data_exits_2_naming_task_and_path(tmp_path: Path, tiny_checkpoints) -> None:
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "autocompress"),
            "evaluate",
            str(tiny_checkpoints["llama"]),
            "--metric",
            "lm_eval:winogrande",
            "--data",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "lm_eval:winogrande" in proc.stderr and str(tmp_path / "winogrande") in proc.stderr
