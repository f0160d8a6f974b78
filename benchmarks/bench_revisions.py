"""The default clean check of this checkout against another revision's, measured in the same run.

Run from the repository root (git needed)::

    python benchmarks/bench_revisions.py                 # against d7ff64a, before the kinds redesign
    python benchmarks/bench_revisions.py --against REV --turns 7
    python benchmarks/bench_revisions.py --tree DIR      # a checkout of the other revision made beforehand
                                                         # (where git is missing: the sid root of .ci/sid)

The other revision is checked out into a temporary git worktree.  Both run
this checkout's ``bench_core.py --figures 1,6 --json``, each in a process of
its own with its tree first on ``sys.path``, taking turns (this, other, this,
...) so that a slow phase of the machine is spread over both.  Each figure is
the median of its turns; the ratio is the median of each turn's ratio to the
other revision's turn just before it.  Target: this checkout's clean check
(figure 1, ``with no_leaks(): pass``) within 1.1x the other's.  Figure 6 (the
same with 100 pending tasks) and each run's own bare baseline are shown too.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from typing import Dict, List, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks", "bench_core.py")
BEFORE_REDESIGN = "d7ff64a"
FIGURES = {"1": "1 clean check `with no_leaks(): pass`", "6": "6 clean check, 10 threads + 100 tasks on 2 loops"}


def run_once(tree: str, rounds: int) -> Dict[str, Dict[str, float]]:
    """One run of figures 1 and 6 with ``tree``'s leakcheck: check and baseline in ns, per figure."""
    env = {**os.environ, "PYTHONPATH": tree}
    command = [sys.executable, BENCH, "--figures", "1,6", "--json", "--rounds", str(rounds)]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=600, check=False)
    if result.returncode != 0:
        sys.exit(f"bench_revisions: the run in {tree} failed:\n{result.stdout}{result.stderr}")
    rows = json.loads(result.stdout.strip().splitlines()[-1])["rows"]
    found = {}
    for figure, name in FIGURES.items():
        (row,) = [row for row in rows if row["figure"] == name]
        found[figure] = row["raw"]
    return found


Turns = Dict[str, List[Dict[str, Dict[str, float]]]]


def take_turns(other: str, count: int, rounds: int) -> Turns:
    """``count`` runs of each tree, taking turns, the other tree first."""
    turns: Turns = {"other": [], "this": []}
    for _ in range(count):
        turns["other"].append(run_once(other, rounds))
        turns["this"].append(run_once(ROOT, rounds))
    return turns


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--against", default=BEFORE_REDESIGN, help=f"the other revision (default {BEFORE_REDESIGN})")
    parser.add_argument("--turns", type=int, default=5, help="runs of each tree, taking turns")
    parser.add_argument("--rounds", type=int, default=40, help="interleaved batches per figure in each run")
    parser.add_argument("--tree", help="a checkout of the other revision to use, instead of making one from --against")
    args = parser.parse_args(argv)
    if args.tree is not None:
        turns = take_turns(os.path.abspath(args.tree), args.turns, args.rounds)
        args.against = args.tree
    else:
        with tempfile.TemporaryDirectory(prefix="leakcheck-bench-") as scratch:
            other = os.path.join(scratch, "tree")
            subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", "-q", other, args.against], check=True)
            try:
                turns = take_turns(other, args.turns, args.rounds)
            finally:
                subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force", other], check=False)
    print(f"clean check, this checkout against {args.against}: {args.turns} turns each, medians")
    print(f"{'figure':<52} {'revision':<12} {'check':>10} {'baseline':>10} {'/ baseline':>11} {'/ other':>9}")
    missed = False
    for figure, name in FIGURES.items():
        pairs = zip(turns["this"], turns["other"], strict=True)
        ratios = [this[figure]["check_ns"] / other[figure]["check_ns"] for this, other in pairs]
        for label in ("other", "this"):
            checks = [turn[figure]["check_ns"] for turn in turns[label]]
            bases = [turn[figure]["baseline_ns"] for turn in turns[label]]
            revision = args.against if label == "other" else "this"
            relative = f"{statistics.median(ratios):.2f}x" if label == "this" else "1.00x"
            check, base = statistics.median(checks), statistics.median(bases)
            shown = f"{check / 1000:>8.2f}us {base / 1000:>8.2f}us {check / base:>10.1f}x"
            print(f"{name:<52} {revision:<12} {shown} {relative:>9}")
        if figure == "1" and statistics.median(ratios) > 1.1:
            missed = True
    print("target: figure 1 within 1.1x of the other revision:", "MISSED" if missed else "OK")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
