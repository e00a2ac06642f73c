"""The wheel as users get it: built from this checkout, installed into a fresh venv, it ships the
catalogs and runs a search by catalog names (``space: demo``, a shipped target)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CATALOG_FILES = (
    "search_spaces/demo.yaml",
    "targets/raspberry-pi-5.yaml",
    "pipelines/int8-rtn.yaml",
    "eval_tasks/piqa.yaml",
)


def run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kwargs)


def build_wheel(tmp_path: Path) -> Path:
    """The wheel of a copy of the package sources (a build writes ``build/`` into the tree it builds)."""
    source, dist = tmp_path / "source", tmp_path / "dist"
    shutil.copytree(ROOT / "autocompress", source / "autocompress", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    proc = run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)]
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("autocompress-*.whl")
    return wheel


def fresh_venv(folder: Path, wheel: Path) -> Path:
    """A venv holding only the wheel; its dependencies resolve from this test's environment through a
    ``.pth`` line (a plain path: the ``.pth`` files there, such as the editable install's finder, stay
    unprocessed, so the checkout cannot stand in for the wheel)."""
    proc = run([sys.executable, "-m", "venv", "--without-pip", str(folder)])
    assert proc.returncode == 0, proc.stderr
    python = folder / "bin" / "python"
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    Path(site, "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    proc = run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)])
    assert proc.returncode == 0, proc.stderr
    return folder / "bin"


def test_wheel_ships_catalogs_and_searches(tmp_path: Path, tiny_checkpoints: dict[str, Path]) -> None:
    wheel = build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    for name in CATALOG_FILES:
        assert f"autocompress/catalogs/{name}" in names

    bin_dir = fresh_venv(tmp_path / "venv", wheel)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    work = tmp_path / "work"  # outside the checkout: nothing there can be imported instead of the wheel
    work.mkdir()
    where = run([str(bin_dir / "python"), "-c", "import autocompress; print(autocompress.__file__)"], cwd=work, env=env)
    assert Path(where.stdout.strip()).is_relative_to(tmp_path / "venv"), where
    job = {
        "name": "wheel",
        "model": str(tiny_checkpoints["llama"]),
        "space": "demo",
        "targets": ["raspberry-pi-5"],
        "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
        "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
        "search": {"trials": 2},
        "tracking": "none",
    }
    (work / "job.yaml").write_text(yaml.safe_dump(job))
    proc = run([str(bin_dir / "autocompress"), "search", "job.yaml", "--quiet"], cwd=work, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "Pareto front of wheel" in proc.stdout
