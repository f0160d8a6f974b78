"""Creation tracking benchmark: what recording where each thread and task starts costs.

Run from the repository root (leakcheck installed, or importable from the clone)::

    python benchmarks/bench_tracking.py             # about 10 s; exits 0 even when a target is missed
    python benchmarks/bench_tracking.py --strict    # exits 1 when a target is missed
    python benchmarks/bench_tracking.py --quick     # fewer rounds: a quick look, not a figure to quote
    python benchmarks/bench_tracking.py --figures 1,2 --rounds 200

Each figure times an operation untracked and tracked, in batches of about
3 ms, interleaved (the order alternates every round) in the same process.  A
tracked batch turns tracking on (``leakcheck.track_creation()``) before its
timer starts and off (``leakcheck.stop_tracking_creation()``) after it stops;
tracking is checked to be off before and after every batch.  The figure is
the median of the batch means; ``ratio`` is tracked / untracked, ``paired``
the median of each round's own ratio.

1. ``Thread.start()`` + ``join()`` of a thread whose target does nothing.
   Target: tracked <= 1.5x untracked.
2. ``asyncio.create_task()`` of a trivial coroutine, in a running loop:
   (a) the ``create_task`` call alone (the coroutine objects are made before
   the timer starts, the tasks are gathered after it stops); (b) create the
   tasks and await their ``gather``, per task.  Targets: <= 3x for both; (a)
   is the issue's figure.
3. Figures 1 and 2 made 40 frames below the benchmark's own (informational),
   the frames being user code (the walk stops 1 frame past the marked one),
   standard-library code (no frame to mark: the walk stops at its cap of 32
   frames, the worst case), or test-runner code under a user function (the
   walk stops at the runner, as under pytest).
4. A clean ``with no_leaks(): pass`` with 10 idle threads, tracking on
   against off: the cost of opening and closing the block's ownership scope;
   both against bench_core's bare baseline (two ``threading.enumerate()``
   calls and an ident set difference); and ``no_leaks(track_creation=True)``
   while tracking is otherwise off, which installs and removes the hooks in
   every block (informational).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import threading
import time
from typing import Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # bench_core, next to this file

from bench_core import IdleThreads, bare_baseline, clean_with

# bench_core made leakcheck importable from the clone, when it is not installed.
import leakcheck
from leakcheck import no_leaks
from leakcheck.kinds import tasks as _tasks_kind
from leakcheck.kinds import threads as _threads_kind
from leakcheck.kinds.frames import is_library_file

perf_counter_ns = time.perf_counter_ns

BATCH_NS = 3_000_000  # each timed batch runs for about 3 ms
ROUNDS = 60
QUICK_ROUNDS = 15
DEPTH = 40
IDLE_THREADS = 10
FIGURES = ("1", "2", "3", "4")
THREAD_TARGET = 1.5
TASK_TARGET = 3.0

Runner = Callable[[int], int]
"""Runs an operation ``n`` times and returns the nanoseconds its timed part took."""
AsyncRunner = Callable[[int], Awaitable[int]]


# --------------------------------------------------------------------------- results table


class Row:
    """One line of the table: a figure measured without and with something, in ns per operation."""

    def __init__(
        self, label: str, base: Sequence[float], value: Sequence[float], limit: Optional[float] = None
    ) -> None:
        self.label = label
        self.base = statistics.median(base)
        self.value = statistics.median(value)
        # The median of each round's own ratio: a slow phase of the machine hits both sides of a round.
        self.paired = statistics.median(v / b for v, b in zip(value, base, strict=True))
        self.limit = limit  # the target for value / base, or None: informational

    @property
    def ratio(self) -> float:
        return self.value / self.base

    @property
    def ok(self) -> Optional[bool]:
        return None if self.limit is None else self.ratio <= self.limit

    def cells(self) -> List[str]:
        status = "info" if self.ok is None else ("OK" if self.ok else "MISSED")
        target = "info" if self.limit is None else f"<= {self.limit:g}x"
        added = self.value - self.base
        return [
            self.label,
            us(self.base),
            us(self.value),
            f"{'+' if added >= 0 else '-'}{us(abs(added))}",
            f"{self.ratio:.2f}x",
            f"{self.paired:.2f}x",
            target,
            status,
        ]


HEADERS = ("figure", "without", "with", "added", "ratio", "paired", "target", "status")


def us(ns: float) -> str:
    return f"{ns / 1000:,.2f} us" if ns < 100_000 else f"{ns / 1000:,.0f} us"


def print_table(rows: Sequence[Row]) -> None:
    cells = [row.cells() for row in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(HEADERS)]
    line = "  ".join(h.ljust(w) for h, w in zip(HEADERS, widths, strict=True)).rstrip()
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


# --------------------------------------------------------------------------- timing helpers


def _batch_size(per_op_ns: float) -> int:
    return max(10, int(BATCH_NS / max(1.0, per_op_ns)))


Samples = Dict[str, List[float]]
"""Each runner's batch means, ns per operation, one per round."""


def interleaved(runners: Mapping[str, Runner], rounds: int) -> Samples:
    """Batches of the runners, interleaved in alternating order.

    Every runner gets the same batch size, made from the slowest one's first
    measure, so that both sides of a ratio do the same amount of work per
    batch (a batch of tasks costs more per task as it grows).
    """
    for runner in runners.values():
        runner(20)  # warm up
    size = _batch_size(max(runner(200) / 200 for runner in runners.values()))
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(runners[name](size) / size)
    return samples


async def async_interleaved(runners: Mapping[str, AsyncRunner], rounds: int) -> Samples:
    """:func:`interleaved` inside a running event loop."""
    for runner in runners.values():
        await runner(20)
    size = _batch_size(max([await runner(200) / 200 for runner in runners.values()]))
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(await runners[name](size) / size)
    return samples


def _assert_off(when: str) -> None:
    if leakcheck.is_tracking_creation():
        raise AssertionError(f"creation tracking is on {when}: something left it on")


def untracked(runner: Runner) -> Runner:
    def run(n: int) -> int:
        _assert_off("before an untracked batch")
        return runner(n)

    return run


def tracked(runner: Runner) -> Runner:
    """``runner`` with tracking on around its batch (outside its timed part), and off again after."""

    def run(n: int) -> int:
        _assert_off("before a tracked batch")
        leakcheck.track_creation()
        try:
            return runner(n)
        finally:
            leakcheck.stop_tracking_creation()
            _assert_off("after a tracked batch")

    return run


def async_untracked(runner: AsyncRunner) -> AsyncRunner:
    async def run(n: int) -> int:
        _assert_off("before an untracked batch")
        return await runner(n)

    return run


def async_tracked(runner: AsyncRunner) -> AsyncRunner:
    async def run(n: int) -> int:
        _assert_off("before a tracked batch")
        leakcheck.track_creation()
        try:
            return await runner(n)
        finally:
            leakcheck.stop_tracking_creation()
            _assert_off("after a tracked batch")

    return run


def tracking_row(label: str, samples: Samples, limit: Optional[float] = None) -> Row:
    return Row(label, samples["untracked"], samples["tracked"], limit)


# --------------------------------------------------------------------------- the timed operations

# The operations are compiled from source, so that figure 3 can run the same
# code under another file name and module: the creation stack's walk depends
# on which frames count as user, library or test-runner code.
OPERATIONS = '''
import asyncio
import time

perf_counter_ns = time.perf_counter_ns


def nothing():
    pass


async def trivial():
    pass


def start_join(threads):
    """Start and join each thread; the nanoseconds it took."""
    started = perf_counter_ns()
    for thread in threads:
        thread.start()
        thread.join()
    return perf_counter_ns() - started


def create_tasks(coros):
    """asyncio.create_task() of each coroutine, in a running loop: (nanoseconds, tasks)."""
    create_task = asyncio.create_task
    tasks = []
    append = tasks.append
    started = perf_counter_ns()
    for coro in coros:
        append(create_task(coro))
    return perf_counter_ns() - started, tasks


def descend(depth, function, *args):
    """Call function(*args) depth frames down."""
    if depth <= 1:
        return function(*args)
    return descend(depth - 1, function, *args)
'''


class Operations:
    """The timed operations, compiled as code of ``filename`` in module ``module``, called ``depth`` frames down.

    ``frames_module``/``frames_filename``: the code of the frames in between,
    when it is not the same as the operations' (test-runner frames above a
    user function).
    """

    def __init__(
        self,
        filename: str,
        module: str,
        depth: int = 1,
        frames_filename: Optional[str] = None,
        frames_module: Optional[str] = None,
    ) -> None:
        self.ops = _compile(filename, module)
        frames = self.ops if frames_module is None else _compile(frames_filename or filename, frames_module)
        self.descend: Callable[..., Any] = frames["descend"]
        self.depth = depth

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        if self.depth <= 1:
            return function(*args)
        return self.descend(self.depth, function, *args)

    def threads(self, n: int) -> List[threading.Thread]:
        return [threading.Thread(target=self.ops["nothing"], daemon=True) for _ in range(n)]

    def coros(self, n: int) -> List[Any]:
        trivial = self.ops["trivial"]
        return [trivial() for _ in range(n)]

    def thread_start_join(self, n: int) -> int:
        """Figure 1: ``start()`` + ``join()`` of ``n`` threads made beforehand."""
        return int(self._call(self.ops["start_join"], self.threads(n)))

    async def task_create(self, n: int) -> int:
        """Figure 2a: ``create_task`` of ``n`` coroutines made beforehand; the tasks are gathered untimed."""
        elapsed, tasks = self._call(self.ops["create_tasks"], self.coros(n))
        await asyncio.gather(*tasks)
        return int(elapsed)

    async def task_create_run(self, n: int) -> int:
        """Figure 2b: ``create_task`` of ``n`` coroutines made beforehand, then ``await gather(...)`` of them."""
        coros = self.coros(n)
        started = perf_counter_ns()
        _, tasks = self._call(self.ops["create_tasks"], coros)
        await asyncio.gather(*tasks)
        return perf_counter_ns() - started

    def creation_frames(self) -> Tuple[int, int]:
        """How many frames tracking keeps for a thread and for a task started here, with tracking on."""
        with leakcheck.track_creation():
            thread = self.threads(1)
            self._call(self.ops["start_join"], thread)
            thread_created = _threads_kind.KIND.creation(thread[0])

            async def one_task() -> Any:
                _, tasks = self._call(self.ops["create_tasks"], self.coros(1))
                await asyncio.gather(*tasks)
                return _tasks_kind.KIND.creation(tasks[0])

            task_created = asyncio.run(one_task())
        _assert_off("after track_creation() ended")
        if thread_created is None or task_created is None:
            raise AssertionError("tracking on recorded no creation site: the hooks are not in place")
        return len(thread_created.site().frames), len(task_created.site().frames)


def _compile(filename: str, module: str) -> Dict[str, Any]:
    namespace: Dict[str, Any] = {"__name__": module}
    # Code objects that differ only in their file compare equal: each file and module gets code of its
    # own first line, so that nothing keyed by a code object's value can take one variant for another.
    first_line = _FIRST_LINES.setdefault((filename, module), 1000 * len(_FIRST_LINES))
    exec(compile("\n" * first_line + OPERATIONS, filename, "exec"), namespace)
    return namespace


_FIRST_LINES: Dict[Tuple[str, str], int] = {}


THIS_FILE = os.path.abspath(__file__)
SHALLOW = Operations(THIS_FILE, "bench_tracking_ops")


def sanity_check() -> None:
    """Untracked, nothing is recorded; tracked, the creation site marks the benchmark's own frame."""
    _assert_off("at the start")
    thread = SHALLOW.threads(1)
    SHALLOW.ops["start_join"](thread)
    if _threads_kind.KIND.creation(thread[0]) is not None:
        raise AssertionError("a thread started untracked has a creation site")

    async def untracked_task() -> Any:
        _, tasks = SHALLOW.ops["create_tasks"](SHALLOW.coros(1))
        await asyncio.gather(*tasks)
        return _tasks_kind.KIND.creation(tasks[0])

    if asyncio.run(untracked_task()) is not None:
        raise AssertionError("a task created untracked has a creation site")
    SHALLOW.creation_frames()
    with leakcheck.track_creation():
        thread = SHALLOW.threads(1)
        SHALLOW.ops["start_join"](thread)
        created = _threads_kind.KIND.creation(thread[0])
        blamed = created.site().blamed if created is not None else None
    if blamed is None or blamed.filename != THIS_FILE or "start_join" not in blamed.function:
        raise AssertionError(f"the tracked thread's creation site marks {blamed!r}, not start_join in this file")
    _assert_off("after the sanity check")


# --------------------------------------------------------------------------- figures


def figure_threads(rounds: int, ops: Operations = SHALLOW, label: str = "1 Thread.start() + join()") -> Row:
    gc.collect()
    runners = {"untracked": untracked(ops.thread_start_join), "tracked": tracked(ops.thread_start_join)}
    return tracking_row(label, interleaved(runners, rounds), THREAD_TARGET if ops is SHALLOW else None)


TASK_LABELS = ("create_task() alone", "create_task() + gather, per task")


def figure_tasks(rounds: int, ops: Operations = SHALLOW, labels: Sequence[str] = ()) -> List[Row]:
    async def measure() -> List[Samples]:
        create = {"untracked": async_untracked(ops.task_create), "tracked": async_tracked(ops.task_create)}
        create_run = {"untracked": async_untracked(ops.task_create_run), "tracked": async_tracked(ops.task_create_run)}
        return [await async_interleaved(create, rounds), await async_interleaved(create_run, rounds)]

    gc.collect()
    create, create_run = asyncio.run(measure())
    limit = TASK_TARGET if ops is SHALLOW else None
    create_label, create_run_label = labels or (f"2a {TASK_LABELS[0]}", f"2b {TASK_LABELS[1]}")
    return [tracking_row(create_label, create, limit), tracking_row(create_run_label, create_run, limit)]


def _library_filename() -> str:
    filename = os.path.join(os.path.dirname(os.__file__), "_bench_tracking_ops.py")
    if not is_library_file(filename):
        raise AssertionError(f"{filename} does not count as standard-library code")
    return filename


def figure_depth(rounds: int) -> List[Row]:
    variants = [
        (f"{DEPTH} user frames", Operations(THIS_FILE, "bench_tracking_ops", DEPTH)),
        (
            f"{DEPTH} stdlib frames",
            Operations(_library_filename(), "_bench_tracking_ops", DEPTH),
        ),
        (
            f"under {DEPTH} pytest frames",
            Operations(THIS_FILE, "bench_tracking_ops", DEPTH, THIS_FILE, "_pytest.bench_tracking_frames"),
        ),
    ]
    rows = []
    for name, ops in variants:
        thread_frames, task_frames = ops.creation_frames()
        rows.append(figure_threads(rounds, ops, f"3 {name}: start() + join() [{thread_frames} kept]"))
        labels = [f"3 {name}: {label} [{task_frames} kept]" for label in TASK_LABELS]
        rows += figure_tasks(rounds, ops, labels)
    return rows


def _explicitly_tracked(n: int) -> int:
    started = perf_counter_ns()
    for _ in range(n):
        with no_leaks(track_creation=True):
            pass
    return perf_counter_ns() - started


def figure_clean_check(rounds: int) -> List[Row]:
    idle = IdleThreads("bench-idle")
    idle.grow(IDLE_THREADS)
    try:
        gc.collect()
        runners = {
            "baseline": untracked(bare_baseline),
            "untracked": untracked(clean_with),
            "tracked": tracked(clean_with),
            "explicit": untracked(_explicitly_tracked),
        }
        interleaved(runners, 10)  # the first batches of a process run slow: discard them
        samples = interleaved(runners, rounds)
    finally:
        idle.close()
    base, off, on = samples["baseline"], samples["untracked"], samples["tracked"]
    return [
        Row("4 clean `with no_leaks()`: tracking off -> on", off, on),
        Row("4 clean check, tracking off / bare baseline", base, off),
        Row("4 clean check, tracking on / bare baseline", base, on),
        Row("4 `no_leaks(track_creation=True)`, tracking off", off, samples["explicit"]),
    ]


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="leakcheck creation tracking benchmark (see benchmarks/README.md)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--rounds", type=int, help=f"interleaved batches per figure (default {ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_ROUNDS} rounds, unless --rounds says otherwise")
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated figures to run, e.g. 1,2")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (QUICK_ROUNDS if args.quick else ROUNDS)
    if rounds < 1:
        parser.error("--rounds must be at least 1")
    wanted = {f.strip() for f in args.figures.split(",") if f.strip()}
    if not wanted <= set(FIGURES):
        parser.error(f"--figures takes some of {','.join(FIGURES)}")
    if os.environ.pop("LEAKCHECK_TRACK", None) is not None:
        print("  LEAKCHECK_TRACK is ignored here: figure 4 needs checks that follow whether tracking is on")

    print(
        f"leakcheck {leakcheck.__version__} creation tracking benchmark: Python {platform.python_version()} "
        f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"{rounds} rounds"
    )
    started = time.perf_counter()
    sanity_check()
    rows: List[Row] = []
    if "1" in wanted:
        rows.append(figure_threads(rounds))
    if "2" in wanted:
        rows += figure_tasks(rounds)
    if "3" in wanted:
        rows += figure_depth(rounds)
    if "4" in wanted:
        rows += figure_clean_check(rounds)
    _assert_off("at the end")
    print()
    print("Per operation, the median of the batch means. without: untracked; with: tracked (figure 4: as the row")
    print("says). ratio: of the medians; paired: the median of each round's own ratio. [N kept]: the frames a")
    print("creation stack keeps there")
    print_table(rows)
    missed = [row for row in rows if row.ok is False]
    for row in missed:
        print(f"TARGET MISSED: {row.label}: {row.ratio:.2f}x (target <= {row.limit:g}x)")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
