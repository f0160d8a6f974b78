"""The grouped text dump against the ungrouped one: size and time.

Run from the repository root (leakcheck installed, or importable from the clone)::

    python benchmarks/bench_dump.py               # about 10 s
    python benchmarks/bench_dump.py --rounds 41

One snapshot of 1,000 real threads: 900 wait in the same function (one
stack), and each of the other 100 waits in a function of its own (100
stacks).  Both dumps of that one snapshot are timed, interleaved, round after
round (``snapshot.dump()`` against ``snapshot.dump(group=True)``), and so is
``parse_dump`` of each.  The ungrouped figure is the baseline of each ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from typing import Callable, Dict, List

try:
    import leakcheck
except ImportError:  # run from a clone without installing it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import leakcheck

SHARED, SOLO = 900, 100


class Gathering:
    """Threads parked where the snapshot sees them all waiting: a condition's wait gives its lock back
    only once the thread blocks, so the lock taken after the last arrival finds every one waiting."""

    def __init__(self) -> None:
        lock = threading.Lock()
        self.arrival, self.leave = threading.Condition(lock), threading.Condition(lock)
        self.arrived = 0
        self.released = False

    def wait_here(self) -> None:
        with self.leave:
            self.arrived += 1
            self.arrival.notify()
            self.leave.wait_for(lambda: self.released)

    def until(self, count: int) -> None:
        with self.arrival:
            if not self.arrival.wait_for(lambda: self.arrived == count, timeout=60):
                raise RuntimeError(f"only {self.arrived} of {count} threads arrived")

    def release(self) -> None:
        with self.leave:
            self.released = True
            self.leave.notify_all()


def solo_functions(gathering: Gathering) -> List[Callable[[], None]]:
    """One function per solo thread, each its own code, so that each has a stack of its own."""
    functions: List[Callable[[], None]] = []
    for number in range(SOLO):
        namespace: Dict[str, object] = {"gathering": gathering}
        exec(f"def solo_{number}():\n    gathering.wait_here()\n", namespace)
        functions.append(namespace[f"solo_{number}"])  # type: ignore[arg-type]
    return functions


def timed(function: Callable[[], object], repeat: int) -> float:
    started = time.perf_counter()
    for _ in range(repeat):
        function()
    return (time.perf_counter() - started) / repeat


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=21, help="interleaved rounds (default 21)")
    args = parser.parse_args()
    python = platform.python_version()
    print(f"leakcheck {leakcheck.__version__} dump benchmark: Python {python}, {os.cpu_count()} CPUs")

    gathering = Gathering()
    threads = [threading.Thread(target=gathering.wait_here, name=f"worker-{n}", daemon=True) for n in range(SHARED)]
    threads += [threading.Thread(target=f, name=f.__name__, daemon=True) for f in solo_functions(gathering)]
    for thread in threads:
        thread.start()
    try:
        gathering.until(SHARED + SOLO)
        taken = leakcheck.snapshot(tasks=False)
    finally:
        gathering.release()
        for thread in threads:
            thread.join()

    plain, grouped = taken.dump(), taken.dump(group=True)
    groups = grouped.count(" threads with this stack:")
    print(f"  snapshot: {len(taken.threads):,} threads; grouped dump: {groups} group(s) of more than one")
    if f"{SHARED} threads with this stack:" not in grouped:
        raise RuntimeError("the 900 workers do not share one stack: the benchmark is broken")
    if len(leakcheck.parse_dump(grouped).threads) != len(taken.threads):
        raise RuntimeError("the grouped dump does not read back to every thread")

    samples: Dict[str, List[float]] = {"dump": [], "dump(group=True)": [], "parse": [], "parse grouped": []}
    for _ in range(args.rounds):
        samples["dump"].append(timed(taken.dump, 3))
        samples["dump(group=True)"].append(timed(lambda: taken.dump(group=True), 3))
        samples["parse"].append(timed(lambda: leakcheck.parse_dump(plain), 1))
        samples["parse grouped"].append(timed(lambda: leakcheck.parse_dump(grouped), 1))
    median = {name: statistics.median(values) for name, values in samples.items()}

    print()
    print(f"{'figure':44}{'ungrouped':>14}{'grouped':>14}{'ratio':>8}")
    print("-" * 80)
    size_plain, size_grouped = len(plain.encode()), len(grouped.encode())
    print(f"{'size of the dump':44}{size_plain:>12,} B{size_grouped:>12,} B{size_grouped / size_plain:>7.2f}x")
    lines_plain, lines_grouped = plain.count("\n"), grouped.count("\n")
    print(f"{'lines':44}{lines_plain:>14,}{lines_grouped:>14,}{lines_grouped / lines_plain:>7.2f}x")
    for label, base, other in (
        ("making it (median)", "dump", "dump(group=True)"),
        ("parse_dump of it (median)", "parse", "parse grouped"),
    ):
        ratio = median[other] / median[base]
        print(f"{label:44}{median[base] * 1e3:>11.2f} ms{median[other] * 1e3:>11.2f} ms{ratio:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
