"""The clean-check figure with tasks (bench_core figure 6) on several Pythons, compared.

Run from the repository root, as root (3.14 and 3.15 run in the sid root that
``.ci/sid setup`` makes)::

    python benchmarks/bench_versions.py              # 3.13 from pyenv, 3.14 and 3.15 from the sid root
    python benchmarks/bench_versions.py --repeat 5   # more alternations, for a noisy machine

Each interpreter runs ``bench_core.py --figures 6 --json`` in a process of its
own.  The interpreters take turns (3.13, 3.14, 3.15, 3.13, ...) so that a slow
phase of the machine is spread over all of them.  Each figure is the median of
its turns; the ratio to the reference is the median of each turn's ratio to the
reference's turn just before it.  Targets: on 3.14 and later, the clean check may take at most 2x
the 3.13 figure, and at most 8x the bare baseline of its own run.

Interpreters differ in how they were built (pyenv's are built without
profile-guided optimisation, Debian's with it), which shows in the bare
baseline: compare the ratios to the baseline as well as the raw times.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import statistics
import subprocess
import sys
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = "benchmarks/bench_core.py --figures 6 --json"


def pyenv_python(version: str) -> str:
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    found = sorted(glob.glob(os.path.join(pyenv_root, "versions", f"{version}.*", "bin", "python3")))
    if not found:
        sys.exit(f"bench_versions: no CPython {version} under {pyenv_root}")
    return found[-1]


def command(version: str, rounds: int) -> List[str]:
    bench = f"{BENCH} --rounds {rounds}"
    if version in ("3.14", "3.15"):
        return ["bash", os.path.join(ROOT, ".ci", "sid"), "run", ROOT, f"PYTHONPATH=. python{version} {bench}"]
    return ["bash", "-c", f"PYTHONPATH=. {pyenv_python(version)} {bench}"]


def run_once(version: str, rounds: int) -> Dict[str, float]:
    result = subprocess.run(command(version, rounds), cwd=ROOT, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        sys.exit(f"bench_versions: Python {version} failed:\n{result.stdout}{result.stderr}")
    (row,) = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    return {"check_ns": row["raw"]["check_ns"], "baseline_ns": row["raw"]["baseline_ns"]}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--versions", default="3.13,3.14,3.15", help="the first one is the reference")
    parser.add_argument("--repeat", type=int, default=3, help="turns per interpreter")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved batches per turn")
    args = parser.parse_args(argv or None)
    versions = args.versions.split(",")
    turns: Dict[str, List[Dict[str, float]]] = {version: [] for version in versions}
    for _ in range(args.repeat):
        for version in versions:
            turns[version].append(run_once(version, args.rounds))
    reference = versions[0]
    print(f"clean check, 10 idle threads + 100 pending tasks on 2 loops; medians of {args.repeat} turns")
    print(f"{'python':8}{'check':>11}{'baseline':>11}{'/baseline':>11}{'/' + reference:>10}  status")
    missed = False
    for version in versions:
        runs = turns[version]
        check = statistics.median(turn["check_ns"] for turn in runs)
        base = statistics.median(turn["baseline_ns"] for turn in runs)
        to_base = statistics.median(turn["check_ns"] / turn["baseline_ns"] for turn in runs)
        # Paired with the reference's turn just before it: drift between turns cancels out.
        to_reference = statistics.median(
            turn["check_ns"] / ref["check_ns"] for turn, ref in zip(runs, turns[reference], strict=True)
        )
        ok = version == reference or (to_reference <= 2 and to_base <= 8)
        missed |= not ok
        status = "reference" if version == reference else ("OK" if ok else "MISSED")
        print(f"{version:8}{check / 1000:>9.2f}us{base / 1000:>9.2f}us{to_base:>10.1f}x{to_reference:>9.2f}x  {status}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
