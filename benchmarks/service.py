"""Workers sharing one queued job: exact trial counts, duplicates, lock errors and wall time.

    .venv/bin/python benchmarks/service.py [--trials 20] [--postgres URL]

Scenarios (tiny random Llama from tests/conftest.py, so the numbers measure the service, not the
model): one worker, then two workers, on a PostgreSQL-backed job and on a SQLite-backed job. Prints
a table and writes benchmarks/results/service.json.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import build_model, build_tokenizer  # noqa: E402

from autocompress.search.runner import counts_as_finished  # noqa: E402
from autocompress.service.policy import ServerSettings, prepare_job  # noqa: E402
from autocompress.service.queue import JobQueue  # noqa: E402


def fresh_postgres(url: str) -> str:
    from sqlalchemy import create_engine, text

    name = f"bench_{uuid.uuid4().hex[:10]}"
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    return url.rsplit("/", 1)[0] + "/" + name


def drop_postgres(admin_url: str, url: str) -> None:
    from sqlalchemy import create_engine, text

    with create_engine(admin_url, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)'))


def run_scenario(database: str, workdir: Path, model: Path, trials: int, workers: int) -> dict:
    import optuna

    workdir.mkdir(parents=True)
    spec = {
        "name": "bench",
        "model": str(model),
        "space": str(ROOT / "tests" / "data" / "tiny-space.yaml"),
        "targets": ["raspberry-pi-5"],
        "objectives": [{"metric": "kl"}, {"metric": "raspberry-pi-5.decode_ms_per_token"}],
        "calibration": {"seq_len": 32, "calibration_samples": 4, "eval_samples": 4},
        "search": {"trials": trials, "sampler": "random", "seed": 0, "heartbeat_seconds": 1},
        "workers": workers,
        "tracking": "none",
        "export": False,
    }
    settings = ServerSettings(workdir=workdir, database=database)
    queue = JobQueue(database, claim_timeout=3)
    job = prepare_job(spec, settings)
    row, _ = queue.submit(spec, "bench", None)
    start = time.monotonic()
    procs = []
    for i in range(workers):
        log = open(workdir / f"worker-{i}.log", "w")
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "autocompress",
                    "worker",
                    "--database",
                    database,
                    "--workdir",
                    str(workdir),
                    "--heartbeat",
                    "1",
                    "--poll",
                    "0.5",
                ],
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        )
    try:
        while queue.get(row["id"])["state"] not in ("succeeded", "failed") and time.monotonic() - start < 900:
            time.sleep(0.5)
        wall = time.monotonic() - start
    finally:
        for proc in procs:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    logs = "".join((workdir / f"worker-{i}.log").read_text(errors="replace") for i in range(workers))
    found = optuna.load_study(study_name="bench", storage=job.storage_url).get_trials()
    measured = [
        t.user_attrs.get("recipe_digest")
        for t in found
        if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs
    ]
    return {
        "state": queue.get(row["id"])["state"],
        "workers": workers,
        "trials_requested": trials,
        "trials_finished": sum(counts_as_finished(t) for t in found),
        "trials_total": len(found),
        "duplicate_numbers": len(found) - len({t.number for t in found}),
        "recipes_measured_twice": len(measured) - len(set(measured)),
        "workers_that_ran_trials": len({t.user_attrs.get("worker") for t in found}),
        "lock_errors": sum("lock" in line.lower() and "error" in line.lower() for line in logs.splitlines()),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--postgres", default="postgresql+psycopg2://postgres@127.0.0.1:5432/test")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-service-"))
    model = tmp / "tiny-llama"
    build_model("llama").save_pretrained(model, safe_serialization=True)
    build_tokenizer().save_pretrained(model)
    os.environ.setdefault("AUTOCOMPRESS_CACHE", str(tmp / "cache"))
    rows = []
    for backend in ("postgresql", "sqlite"):
        for workers in (1, 2):
            name = f"{backend}-{workers}w"
            workdir = tmp / name
            if backend == "postgresql":
                database = fresh_postgres(args.postgres)
            else:
                database = f"sqlite:///{workdir / 'queue.db'}"
            try:
                rows.append(
                    {
                        "scenario": name,
                        "database": backend,
                        **run_scenario(database, workdir, model, args.trials, workers),
                    }
                )
            finally:
                if backend == "postgresql":
                    drop_postgres(args.postgres, database)
            print(json.dumps(rows[-1]), flush=True)
    columns = [
        "scenario",
        "state",
        "trials_requested",
        "trials_finished",
        "duplicate_numbers",
        "recipes_measured_twice",
        "workers_that_ran_trials",
        "lock_errors",
        "wall_s",
    ]
    print("\n| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row[c]) for c in columns) + " |")
    out = ROOT / "benchmarks" / "results" / "service.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "date": time.strftime("%Y-%m-%d"),
                "command": "python benchmarks/service.py " + " ".join(sys.argv[1:]),
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
