"""A long search must not fill memory or disk: the in-memory statistics memo and the disk caches are bounded."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from conftest import make_context

from autocompress.cache import cache_limit_bytes, evict_least_recently_used, mark_used
from autocompress.errors import ConfigError


def test_the_memo_keeps_the_base_and_the_most_recent_lineages(tiny_model, tokenizer):
    ctx = make_context(tiny_model, tokenizer)
    computed = []

    def stat(lineage: str) -> str:
        ctx.lineage = lineage
        return ctx.memo("stats", lambda: computed.append(lineage) or f"stats of {lineage!r}")

    for lineage in ["", "a", "b", "c", "b", "a"]:
        assert stat(lineage) == f"stats of {lineage!r}"
    # "a" was evicted by "c" (the two most recent were b, c), so it was computed twice; b stayed.
    assert computed == ["", "a", "b", "c", "a"]
    assert list(ctx._memo) == ["", "b", "a"]
    ctx.lineage = "c"
    assert ctx.memoised("stats") is None
    assert ctx.memoised("stats", of_base=True) == "stats of ''"


def _file(path: Path, size: int, age_s: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * size)
    stamp = time.time() - age_s
    os.utime(path, (stamp, stamp))
    return path


def test_eviction_removes_least_recently_used_files_down_to_the_cap(tmp_path):
    oldest = _file(tmp_path / "calibration" / "input-stats-1.safetensors", 400, age_s=4000)
    used_again = _file(tmp_path / "quant-weights" / "ab" / "w1.safetensors", 300, age_s=3900)
    middle = _file(tmp_path / "quant-weights" / "cd" / "w2.safetensors", 300, age_s=3000)
    recent = _file(tmp_path / "calibration" / "input-stats-2.safetensors", 400, age_s=60)
    kept_kind = _file(tmp_path / "models" / "base" / "model.safetensors", 5000, age_s=9000)
    mark_used(used_again)  # a hit makes it the most recently used

    freed = evict_least_recently_used(tmp_path, max_bytes=800, keep_s=600)

    assert freed == 700 and not oldest.exists() and not middle.exists()
    assert used_again.exists() and recent.exists() and kept_kind.exists()
    assert evict_least_recently_used(tmp_path, max_bytes=800, keep_s=600) == 0  # under the cap now


def test_files_used_recently_are_never_evicted(tmp_path):
    fresh = [_file(tmp_path / "calibration" / f"s{i}.safetensors", 100, age_s=10) for i in range(3)]
    assert evict_least_recently_used(tmp_path, max_bytes=0, keep_s=600) == 0
    assert all(p.exists() for p in fresh)


@pytest.mark.parametrize("value", ["abc", "0", "-3"])
def test_a_bad_cache_cap_is_refused_by_name_before_a_job_writes_anything(
    value, monkeypatch, tmp_path, tiny_checkpoints
):
    from test_search import make_job

    from autocompress.backends import run_job

    monkeypatch.setenv("AUTOCOMPRESS_CACHE_MAX_GB", value)
    with pytest.raises(ConfigError, match="AUTOCOMPRESS_CACHE_MAX_GB"):
        cache_limit_bytes()
    job = make_job(tmp_path, tiny_checkpoints["llama"])
    with pytest.raises(ConfigError, match="AUTOCOMPRESS_CACHE_MAX_GB"):
        run_job(job, progress=False)
    assert not (tmp_path / "runs").exists()


def test_the_cache_cap_defaults_to_20_gib_and_reads_the_environment(monkeypatch):
    monkeypatch.delenv("AUTOCOMPRESS_CACHE_MAX_GB", raising=False)
    assert cache_limit_bytes() == 20 * 2**30
    monkeypatch.setenv("AUTOCOMPRESS_CACHE_MAX_GB", "1.5")
    assert cache_limit_bytes() == int(1.5 * 2**30)
