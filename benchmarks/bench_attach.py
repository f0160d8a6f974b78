"""Attach, dump and detach (``sys.remote_exec``) against taking the same snapshot inside the target.

Run from the repository root with Python 3.14+ (leakcheck installed, or importable from the clone)::

    python benchmarks/bench_attach.py                 # about 10 s
    python benchmarks/bench_attach.py --threads 1000 --rounds 21

The target is a second Python process with ``--threads`` parked threads, whose
main thread ticks every millisecond (``sys.remote_exec`` runs the script where
the main thread runs Python code).  Interleaved, round after round:

- the baseline: ``snapshot()`` plus ``str()`` inside the target, timed there
  and asked for on its stdin;
- ``attach_snapshot(pid)``: attach, dump and detach, timed here;
- ``py-spy dump --pid`` of the same target, when ``py-spy`` is on the PATH
  (it reads the target's memory from outside, and needs ptrace).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from typing import Dict, List

try:
    import leakcheck
except ImportError:  # run from a clone without installing it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import leakcheck

from leakcheck.remote.attach import attach_snapshot

TARGET = r"""
import os, sys, threading, time
ROOT, THREADS = sys.argv[1], int(sys.argv[2])
gate = threading.Event()
for number in range(THREADS):
    threading.Thread(target=gate.wait, name=f"parked-{number}", daemon=True).start()

def answer():
    sys.path.insert(0, ROOT)
    import leakcheck
    for _ in sys.stdin:
        started = time.perf_counter()
        str(leakcheck.snapshot())
        print(time.perf_counter() - started, flush=True)

threading.Thread(target=answer, daemon=True).start()
print(os.getpid(), flush=True)
while True:
    time.sleep(0.001)
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--threads", type=int, default=100, help="parked threads in the target (default 100)")
    parser.add_argument("--rounds", type=int, default=11, help="interleaved rounds (default 11)")
    args = parser.parse_args()
    if not hasattr(sys, "remote_exec"):
        print("bench_attach.py needs Python 3.14 or later", file=sys.stderr)
        return 2
    python = platform.python_version()
    print(f"leakcheck {leakcheck.__version__} attach benchmark: Python {python}, {os.cpu_count()} CPUs")
    root = os.path.dirname(os.path.dirname(os.path.abspath(leakcheck.__file__)))
    target = subprocess.Popen(
        [sys.executable, "-c", TARGET, root, str(args.threads)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert target.stdin is not None and target.stdout is not None
    pid = int(target.stdout.readline())
    py_spy = shutil.which("py-spy")
    print(f"  target: pid {pid}, {args.threads} parked threads; py-spy: {py_spy or 'not on the PATH'}")
    samples: Dict[str, List[float]] = {"inside": [], "attach": [], "py-spy": []}
    try:
        attach_snapshot(pid, 10.0)  # warm-up: the first import of leakcheck in the target
        for _ in range(args.rounds):
            target.stdin.write("go\n")
            target.stdin.flush()
            samples["inside"].append(float(target.stdout.readline()))
            started = time.perf_counter()
            taken = attach_snapshot(pid, 10.0)
            samples["attach"].append(time.perf_counter() - started)
            if len(taken.threads) < args.threads:
                raise RuntimeError(f"the attach saw {len(taken.threads)} threads")
            if py_spy:
                started = time.perf_counter()
                subprocess.run([py_spy, "dump", "--pid", str(pid)], capture_output=True, check=True)
                samples["py-spy"].append(time.perf_counter() - started)
    finally:
        target.kill()
        target.wait()
    baseline = statistics.median(samples["inside"])
    print()
    print(f"{'figure (median of ' + str(args.rounds) + ' rounds)':52}{'time':>12}{'ratio':>10}")
    print("-" * 74)
    print(f"{'snapshot() + str() inside the target (baseline)':52}{baseline * 1e3:>9.2f} ms{'1.00x':>10}")
    for label, key in (("attach, dump and detach", "attach"), ("py-spy dump --pid", "py-spy")):
        if samples[key]:
            value = statistics.median(samples[key])
            print(f"{label:52}{value * 1e3:>9.2f} ms{value / baseline:>9.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
