"""Run mypy on the package and compare its errors with the committed baseline, which may only shrink.

    python scripts/mypy_baseline.py           # exit 1 on an error not in the baseline, or a baseline entry now fixed
    python scripts/mypy_baseline.py --update  # drop fixed entries from the baseline (never adds any)

An entry is ``path: message [code]`` (no line number, so edits elsewhere in a file do not move it), with
how many times it occurs. Fix an error, then run ``--update`` to record that the baseline shrank.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BASELINE = ROOT / "mypy-baseline.txt"
ERROR = re.compile(r"^(?P<path>[^:]+):\d+: error: (?P<message>.*)$")


def current_errors() -> Counter[str]:
    proc = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in (0, 1):  # 2: mypy itself failed (bad config, crash)
        sys.exit(proc.stdout + proc.stderr)
    return Counter(f"{m['path']}: {m['message']}" for line in proc.stdout.splitlines() if (m := ERROR.match(line)))


def read_baseline() -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in BASELINE.read_text().splitlines() if BASELINE.is_file() else []:
        if line and not line.startswith("#"):
            count, _, entry = line.partition(" ")
            counts[entry] = int(count)
    return counts


def write_baseline(counts: Counter[str]) -> None:
    header = "# mypy errors accepted for now (`count path: message [code]`); only shrinks: scripts/mypy_baseline.py\n"
    BASELINE.write_text(header + "".join(f"{n} {entry}\n" for entry, n in sorted(counts.items()) if n))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="drop fixed entries from the baseline")
    args = parser.parse_args()
    now, baseline = current_errors(), read_baseline()
    new = now - baseline
    fixed = baseline - now
    if new:
        print(f"mypy: {sum(new.values())} error(s) not in {BASELINE.name}:")
        print("".join(f"  {entry}\n" for entry in sorted(new.elements())), end="")
        return 1
    if fixed and args.update:
        write_baseline(baseline - fixed)
        print(f"mypy: {sum(fixed.values())} fixed error(s) dropped from {BASELINE.name}")
    elif fixed:
        print(f"mypy: {sum(fixed.values())} baseline error(s) fixed; run `python scripts/mypy_baseline.py --update`:")
        print("".join(f"  {entry}\n" for entry in sorted(fixed.elements())), end="")
        return 1
    print(f"mypy: no new errors ({sum(now.values())} in the baseline)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
