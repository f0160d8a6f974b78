"""Core benchmarks for leakcheck: the figures of the issue's Performance section.

Run from the repository root (leakcheck installed, or importable from the clone)::

    python benchmarks/bench_core.py            # about 10 s; exits 0 even when a target is missed
    python benchmarks/bench_core.py --strict   # exits 1 when a target is missed
    python benchmarks/bench_core.py --peers    # also time pyleak's checks, when pyleak is importable

Figures (benchmarks/README.md says what each one means):

1. Clean check: ``with no_leaks(): pass`` with 10 idle background threads and
   no running loop, against a bare baseline measured in the same run and
   interleaved with it (two ``threading.enumerate()`` calls and an ident set
   difference).  Targets: <= 20 us and <= 8x the baseline.  The decorator form
   and ``async with`` in a running loop are reported too (informational).
2. Grace latency: a thread ending 50 ms after the block exits; the check must
   return within 55 ms (median of 20 runs).  The same for an asyncio task
   under ``async with`` (informational).
3. Scale: a clean check with 1,000 threads and 10,000 pending tasks on a loop
   in another thread; 10x the work may take at most 12x the time.
4. Stacks are captured only for suspects and keyword assertions: captures are
   counted during many clean checks (must be 0) and in a leaky check (> 0).
5. Peers (informational): a pytest-threadleak-style check, and pyleak's checks
   with ``--peers``.
7. Clean check with ``processes=True, fds=True`` on a process with 200 open
   descriptors and 5 running children, against a bare baseline in the same
   run: ``os.listdir('/proc/self/fd')`` plus a scan of the children
   (``/proc/self/task/*/children``), done twice.  Informational.
6. Clean check with tasks: ``with no_leaks(): pass`` with 10 idle threads and
   100 pending tasks on 2 loops (one running in another thread, one stopped),
   against the same bare baseline.  Target: <= 8x the baseline.
   ``benchmarks/bench_versions.py`` runs this figure on several Pythons and
   compares them (3.14 and later may take at most 2x the 3.13 figure).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Dict, List, Mapping, Optional, Sequence

try:
    import leakcheck
except ImportError:  # run from a clone without installing it
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import leakcheck

from leakcheck import find_stacks, no_leaks

try:
    from leakcheck.kinds import frames as _frames
except ImportError:  # a revision from before the kinds redesign, run by bench_revisions.py
    from leakcheck import _frames  # type: ignore[attr-defined,no-redef]

if TYPE_CHECKING:
    import asyncio

# asyncio is imported only after the first measurement, so that figure 1 can
# also show what a program that never imports asyncio pays.

perf_counter_ns = time.perf_counter_ns

IDLE_THREADS = 10
BATCH_NS = 3_000_000  # each timed batch of a clean-check figure runs for about 3 ms
SMALL = (100, 1_000)  # scale figure: (threads, tasks)
LARGE = (1_000, 10_000)
SCALE_RUNS = 25
SCALE_STACK_SIZE = 256 * 1024  # keeps 1,000 threads cheap; Event.wait needs little stack
GRACE_RUNS = 20
GRACE_DELAY = 0.05
CAPTURE_CLEAN_CHECKS = 2_000
PYLEAK_RUNS = 7
FIGURES = ("1", "2", "3", "4", "5", "6", "7")
OPEN_FDS = 200
CHILDREN = 5
TASK_LOOPS = 2
TASKS_PER_LOOP = 50


# --------------------------------------------------------------------------- results table


class Row:
    """One line of the table; ``ok`` is None for informational figures."""

    def __init__(
        self,
        figure: str,
        value: str,
        baseline: str = "-",
        ratio: str = "-",
        target: str = "info",
        ok: Optional[bool] = None,
        raw: Optional[Dict[str, float]] = None,
    ) -> None:
        self.figure = figure
        self.value = value
        self.baseline = baseline
        self.ratio = ratio
        self.target = target
        self.ok = ok
        self.raw = raw or {}  # unrounded figures, for --json

    @property
    def status(self) -> str:
        if self.ok is None:
            return "info"
        return "OK" if self.ok else "MISSED"


def print_table(rows: Sequence[Row]) -> None:
    headers = ("figure", "value", "baseline", "ratio", "target", "status")
    cells = [(r.figure, r.value, r.baseline, r.ratio, r.target, r.status) for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def us(ns: float) -> str:
    return f"{ns / 1000:,.2f} us" if ns < 100_000 else f"{ns / 1000:,.0f} us"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def times(value: float) -> str:
    return f"{value:.1f}x"


# --------------------------------------------------------------------------- timing helpers

Runner = Callable[[int], int]
"""Runs an operation ``n`` times in a tight loop and returns the elapsed nanoseconds."""

AsyncRunner = Callable[[int], Awaitable[int]]


def _size_for(per_op_ns: float) -> int:
    return max(10, int(BATCH_NS / max(1.0, per_op_ns)))


def interleaved_medians(runners: Mapping[str, Runner], rounds: int) -> Dict[str, float]:
    """Median of batch means, in ns per operation, with the runners' batches interleaved.

    Interleaving (and alternating the order every round) spreads any drift of
    the machine evenly over the operations, so their ratios stay fair.
    """
    sizes = {}
    for name, runner in runners.items():
        runner(20)  # warm up
        sizes[name] = _size_for(runner(200) / 200)
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(runners[name](sizes[name]) / sizes[name])
    return {name: statistics.median(values) for name, values in samples.items()}


async def async_interleaved_medians(runners: Mapping[str, AsyncRunner], rounds: int) -> Dict[str, float]:
    """:func:`interleaved_medians` inside a running event loop."""
    sizes = {}
    for name, runner in runners.items():
        await runner(20)
        sizes[name] = _size_for(await runner(200) / 200)
    samples: Dict[str, List[float]] = {name: [] for name in runners}
    names = list(runners)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            samples[name].append(await runners[name](sizes[name]) / sizes[name])
    return {name: statistics.median(values) for name, values in samples.items()}


# --------------------------------------------------------------------------- timed operations


def bare_baseline(n: int) -> int:
    """Two ``threading.enumerate()`` calls and an ident set difference."""
    started = perf_counter_ns()
    for _ in range(n):
        before = threading.enumerate()
        after = threading.enumerate()
        _new = {t.ident for t in after} - {t.ident for t in before}
    return perf_counter_ns() - started


def threadleak_style(n: int) -> int:
    """What pytest-threadleak does around a test: frozensets of threads, and their difference."""
    started = perf_counter_ns()
    for _ in range(n):
        before = frozenset(threading.enumerate())
        after = frozenset(threading.enumerate())
        _new = after - before
    return perf_counter_ns() - started


def clean_with(n: int) -> int:
    started = perf_counter_ns()
    for _ in range(n):
        with no_leaks():
            pass
    return perf_counter_ns() - started


_PREBUILT = no_leaks()


def clean_with_prebuilt(n: int) -> int:
    check = _PREBUILT
    started = perf_counter_ns()
    for _ in range(n):
        with check:
            pass
    return perf_counter_ns() - started


@no_leaks
def _decorated() -> None:
    pass


def clean_decorated(n: int) -> int:
    started = perf_counter_ns()
    for _ in range(n):
        _decorated()
    return perf_counter_ns() - started


async def async_bare_baseline(n: int) -> int:
    return bare_baseline(n)


async def async_clean_with(n: int) -> int:
    started = perf_counter_ns()
    for _ in range(n):
        async with no_leaks():
            pass
    return perf_counter_ns() - started


# --------------------------------------------------------------------------- background load


class IdleThreads:
    """Daemon threads blocked on one Event until :meth:`close`."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.release = threading.Event()
        self.threads: List[threading.Thread] = []

    def grow(self, count: int) -> None:
        while len(self.threads) < count:
            name = f"{self.prefix}-{len(self.threads)}"
            thread = threading.Thread(target=self.release.wait, name=name, daemon=True)
            thread.start()
            self.threads.append(thread)

    def close(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join()
        self.threads.clear()


async def _idle_task(gate: asyncio.Future[None]) -> None:
    await gate


class LoopInThread:
    """An event loop running in its own thread, holding pending tasks until :meth:`close`."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-loop", daemon=True)
        self.thread.start()
        self.gate: asyncio.Future[None] = self._run(self._make_gate())
        self.tasks: List[asyncio.Task[None]] = []

    def _run(self, coro: Any) -> Any:
        import asyncio

        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def _make_gate(self) -> asyncio.Future[None]:
        return self.loop.create_future()

    async def _spawn(self, count: int) -> List[asyncio.Task[None]]:
        import asyncio

        tasks = [self.loop.create_task(_idle_task(self.gate)) for _ in range(count)]
        await asyncio.sleep(0)  # let every task reach its await
        return tasks

    def grow(self, count: int) -> None:
        if count > len(self.tasks):
            self.tasks.extend(self._run(self._spawn(count - len(self.tasks))))

    async def _finish(self) -> None:
        import asyncio

        if not self.gate.done():
            self.gate.set_result(None)
        await asyncio.gather(*self.tasks)

    def close(self) -> None:
        try:
            self._run(self._finish())
        finally:
            self.tasks.clear()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join()
            self.loop.close()


# --------------------------------------------------------------------------- figure 1


def figure_clean_check(rounds: int) -> List[Row]:
    rows = []
    if "asyncio" not in sys.modules:
        gc.collect()
        # The first batches of a fresh process run slow (the baseline too); discard them.
        interleaved_medians({"baseline": bare_baseline, "with": clean_with}, 10)
        plain = interleaved_medians({"baseline": bare_baseline, "with": clean_with}, max(10, rounds // 2))
        rows.append(
            Row(
                "1 clean check, asyncio never imported",
                us(plain["with"]),
                us(plain["baseline"]),
                times(plain["with"] / plain["baseline"]),
            )
        )
    import asyncio

    gc.collect()
    medians = interleaved_medians(
        {
            "baseline": bare_baseline,
            "with": clean_with,
            "prebuilt": clean_with_prebuilt,
            "decorator": clean_decorated,
            "threadleak": threadleak_style,
        },
        rounds,
    )
    base = medians["baseline"]
    check = medians["with"]

    async def in_loop() -> Dict[str, float]:
        runners = {"baseline": async_bare_baseline, "async with": async_clean_with}
        return await async_interleaved_medians(runners, max(10, rounds // 2))

    in_loop_medians = asyncio.run(in_loop())
    loop_base = in_loop_medians["baseline"]
    rows[:0] = [
        Row(
            "1 clean check `with no_leaks(): pass`",
            us(check),
            us(base),
            times(check / base),
            "<= 20 us",
            check <= 20_000,
            raw={"check_ns": check, "baseline_ns": base},
        ),
        Row(
            "1 clean check / bare baseline",
            times(check / base),
            us(base),
            times(check / base),
            "<= 8x",
            check / base <= 8,
        ),
    ]
    rows += [
        Row(
            "1 clean check, reused `chk = no_leaks()`",
            us(medians["prebuilt"]),
            us(base),
            times(medians["prebuilt"] / base),
        ),
        Row(
            "1 clean check, `@no_leaks` function call",
            us(medians["decorator"]),
            us(base),
            times(medians["decorator"] / base),
        ),
        Row(
            "1 clean check, `async with` in a running loop",
            us(in_loop_medians["async with"]),
            us(loop_base),
            times(in_loop_medians["async with"] / loop_base),
        ),
        Row(
            "5 pytest-threadleak-style check", us(medians["threadleak"]), us(base), times(medians["threadleak"] / base)
        ),
    ]
    return rows


# --------------------------------------------------------------------------- figure 7


def _children_listing() -> List[str]:
    """The children of this process, as the bare baseline of figure 7 reads them: every thread's ``children``."""
    found = []
    for task in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{task}/children") as listing:
                found.extend(listing.read().split())
        except OSError:
            pass
    return found


def bare_fds_and_children(n: int) -> int:
    """What a check of descriptors and children needs at the least: list both, twice."""
    started = perf_counter_ns()
    for _ in range(n):
        fds_before, children_before = os.listdir("/proc/self/fd"), _children_listing()
        fds_after, children_after = os.listdir("/proc/self/fd"), _children_listing()
        _new = (set(fds_after) - set(fds_before), set(children_after) - set(children_before))
    return perf_counter_ns() - started


def clean_with_processes_and_fds(n: int) -> int:
    started = perf_counter_ns()
    for _ in range(n):
        with no_leaks(processes=True, fds=True):
            pass
    return perf_counter_ns() - started


def figure_processes_and_fds(rounds: int) -> List[Row]:
    import subprocess

    if not os.path.isdir("/proc/self/fd"):
        return [Row("7 clean check, processes + fds", "skipped: no /proc", target="info")]
    children = [
        subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
        for _ in range(CHILDREN)
    ]
    extra = max(0, OPEN_FDS - len(os.listdir("/proc/self/fd")))
    pipes = [os.pipe() for _ in range(extra // 2 + 1)]
    try:
        open_fds = len(os.listdir("/proc/self/fd"))
        runners = {"baseline": bare_fds_and_children, "check": clean_with_processes_and_fds}
        medians = interleaved_medians(runners, rounds)
    finally:
        for read_end, write_end in pipes:
            os.close(read_end)
            os.close(write_end)
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait()
    check, base = medians["check"], medians["baseline"]
    return [
        Row(
            f"7 clean check, processes + fds ({open_fds} fds, {CHILDREN} children)",
            us(check),
            us(base),
            times(check / base),
            raw={"check_ns": check, "baseline_ns": base},
        )
    ]


# --------------------------------------------------------------------------- figure 6


class StoppedLoop:
    """An event loop that is not running, holding pending tasks until :meth:`close`."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.gate: asyncio.Future[None] = self.loop.create_future()
        self.tasks = [self.loop.create_task(_idle_task(self.gate)) for _ in range(TASKS_PER_LOOP)]
        self.loop.run_until_complete(asyncio.sleep(0))  # every task reaches its await, then the loop stops

    def close(self) -> None:
        import asyncio

        self.gate.set_result(None)
        self.loop.run_until_complete(asyncio.gather(*self.tasks))
        self.loop.close()


def figure_clean_check_with_tasks(rounds: int) -> List[Row]:
    running = LoopInThread()
    running.grow(TASKS_PER_LOOP)
    stopped = StoppedLoop()
    try:
        gc.collect()
        interleaved_medians({"baseline": bare_baseline, "with": clean_with}, 10)  # warm up both
        medians = interleaved_medians({"baseline": bare_baseline, "with": clean_with}, rounds)
    finally:
        stopped.close()
        running.close()
    check, base = medians["with"], medians["baseline"]
    label = f"6 clean check, {IDLE_THREADS} threads + {TASK_LOOPS * TASKS_PER_LOOP} tasks on {TASK_LOOPS} loops"
    raw = {"check_ns": check, "baseline_ns": base}
    return [Row(label, us(check), us(base), times(check / base), "<= 8x", check / base <= 8, raw)]


# --------------------------------------------------------------------------- figure 2


def _grace_thread_once() -> float:
    go = threading.Event()

    def ends_later() -> None:
        go.wait()
        time.sleep(GRACE_DELAY)

    thread = threading.Thread(target=ends_later, name="bench-ends-later", daemon=True)
    try:
        with no_leaks():
            thread.start()
            go.set()  # the thread's 50 ms start now, right before the block exits
            exited = time.perf_counter()
        return time.perf_counter() - exited
    finally:
        go.set()
        if thread.ident is not None:
            thread.join()


async def _ends_later_task() -> None:
    import asyncio

    await asyncio.sleep(GRACE_DELAY)


async def _grace_task_once() -> float:
    import asyncio

    task = None
    try:
        async with no_leaks():
            task = asyncio.get_running_loop().create_task(_ends_later_task())
            exited = time.perf_counter()
        return time.perf_counter() - exited
    finally:
        if task is not None:
            await task


async def _grace_thread_async_once() -> float:
    go = threading.Event()

    def ends_later() -> None:
        go.wait()
        time.sleep(GRACE_DELAY)

    thread = threading.Thread(target=ends_later, name="bench-ends-later", daemon=True)
    try:
        async with no_leaks():
            thread.start()
            go.set()
            exited = time.perf_counter()
        return time.perf_counter() - exited
    finally:
        go.set()
        if thread.ident is not None:
            thread.join()


def _latency_row(label: str, samples: List[float], target: Optional[float] = None) -> Row:
    median = statistics.median(samples)
    value = f"{ms(median)} (min {ms(min(samples))}, max {ms(max(samples))})"
    if target is None:
        return Row(label, value)
    return Row(label, value, target=f"<= {target * 1000:.0f} ms", ok=median <= target)


def figure_grace() -> List[Row]:
    import asyncio

    thread_samples = [_grace_thread_once() for _ in range(GRACE_RUNS)]

    async def in_loop() -> List[List[float]]:
        tasks = [await _grace_task_once() for _ in range(GRACE_RUNS)]
        threads = [await _grace_thread_async_once() for _ in range(GRACE_RUNS)]
        return [tasks, threads]

    task_samples, async_thread_samples = asyncio.run(in_loop())
    return [
        _latency_row("2 grace: thread ends 50 ms after `with`", thread_samples, 0.055),
        _latency_row("2 grace: task ends 50 ms after `async with`", task_samples),
        _latency_row("2 grace: thread ends 50 ms after `async with`", async_thread_samples),
    ]


# --------------------------------------------------------------------------- figure 3


def _measure_scale(threads: IdleThreads, loop: LoopInThread, workload: Sequence[int]) -> Dict[str, float]:
    threads.grow(workload[0])
    loop.grow(workload[1])
    gc.collect()
    return interleaved_medians({"baseline": bare_baseline, "with": clean_with}, SCALE_RUNS)


def figure_scale() -> List[Row]:
    threads = IdleThreads("bench-scale")
    loop = LoopInThread()
    previous_stack_size = threading.stack_size(SCALE_STACK_SIZE)
    try:
        small_medians = _measure_scale(threads, loop, SMALL)
        large_medians = _measure_scale(threads, loop, LARGE)
    finally:
        threading.stack_size(previous_stack_size)
        threads.close()
        loop.close()
    small, small_base = small_medians["with"], small_medians["baseline"]
    large, large_base = large_medians["with"], large_medians["baseline"]
    growth = large / small
    return [
        Row(
            f"3 scale: {SMALL[0]:,} threads + {SMALL[1]:,} tasks", us(small), us(small_base), times(small / small_base)
        ),
        Row(
            f"3 scale: {LARGE[0]:,} threads + {LARGE[1]:,} tasks", us(large), us(large_base), times(large / large_base)
        ),
        Row(
            "3 scale: time growth for 10x the work",
            times(growth),
            times(large_base / small_base),
            times(growth),
            "<= 12x",
            growth <= 12,
        ),
    ]


# --------------------------------------------------------------------------- figure 4


class CaptureCounter:
    """Counts stack captures: frame records built and ``sys._current_frames()`` calls."""

    def __init__(self) -> None:
        self.frame_records = 0
        self.current_frames = 0

    @property
    def total(self) -> int:
        return self.frame_records + self.current_frames

    def __str__(self) -> str:
        return f"{self.frame_records} frame records, {self.current_frames} _current_frames()"

    def reset(self) -> None:
        self.frame_records = self.current_frames = 0

    def __enter__(self) -> CaptureCounter:
        self._frame_record = _frames.frame_record
        self._current_frames = sys._current_frames

        def frame_record(frame: Any) -> Any:
            self.frame_records += 1
            return self._frame_record(frame)

        def current_frames() -> Any:
            self.current_frames += 1
            return self._current_frames()

        _frames.frame_record = frame_record
        sys._current_frames = current_frames
        return self

    def __exit__(self, *exc: object) -> None:
        _frames.frame_record = self._frame_record
        sys._current_frames = self._current_frames


def _leaky_check(counter: CaptureCounter) -> Row:
    release = threading.Event()
    reports: List[Any] = []
    thread = threading.Thread(target=release.wait, name="bench-leaky-worker", daemon=True)
    try:
        counter.reset()
        with no_leaks(timeout=0.01, on_leak=reports.append):
            thread.start()
        captured = str(counter)
        ok = counter.frame_records > 0
    finally:
        release.set()
        thread.join()
    named = bool(reports) and "bench-leaky-worker" in str(reports[0])
    return Row(
        "4 stack captures, leaky check", f"{captured}; culprit named: {named}", target="> 0, named", ok=ok and named
    )


def _suspect_ending_in_grace(counter: CaptureCounter) -> Row:
    go = threading.Event()

    def ends_soon() -> None:
        go.wait()
        time.sleep(0.005)

    thread = threading.Thread(target=ends_soon, name="bench-ends-soon", daemon=True)
    try:
        counter.reset()
        with no_leaks():
            thread.start()
            go.set()
        captured = str(counter)
    finally:
        go.set()
        thread.join()
    return Row("4 stack captures, suspect ending in its grace", captured)


def figure_captures() -> List[Row]:
    import asyncio

    loop = LoopInThread()
    loop.grow(100)  # pending tasks on another loop must not be described either
    try:
        with CaptureCounter() as counter:
            for _ in range(CAPTURE_CLEAN_CHECKS):
                with no_leaks():
                    pass
                _decorated()

            async def clean_async() -> None:
                for _ in range(CAPTURE_CLEAN_CHECKS // 10):
                    async with no_leaks():
                        pass

            asyncio.run(clean_async())
            checks = CAPTURE_CLEAN_CHECKS * 2 + CAPTURE_CLEAN_CHECKS // 10
            rows = [
                Row(f"4 stack captures in {checks:,} clean checks", str(counter), target="== 0", ok=counter.total == 0),
                _leaky_check(counter),
                _suspect_ending_in_grace(counter),
            ]
            counter.reset()
            matches = find_stacks("bench-idle")
            rows.append(
                Row(
                    "4 stack captures, find_stacks('bench-idle')",
                    f"{counter}; {len(matches)} matches",
                    target="> 0",
                    ok=counter.frame_records > 0 and len(matches) == IDLE_THREADS,
                )
            )
    finally:
        loop.close()
    return rows


# --------------------------------------------------------------------------- figure 5 (peers)


def figure_peers() -> List[Row]:
    import asyncio

    try:
        from pyleak import no_task_leaks, no_thread_leaks  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        return [Row("5 pyleak no_thread_leaks() clean check", "pyleak not importable; documented: sleeps 100 ms")]
    thread_samples = []
    for _ in range(PYLEAK_RUNS):
        started = time.perf_counter()
        with no_thread_leaks():
            pass
        thread_samples.append(time.perf_counter() - started)

    async def task_checks() -> List[float]:
        samples = []
        for _ in range(PYLEAK_RUNS):
            started = time.perf_counter()
            async with no_task_leaks():
                pass
            samples.append(time.perf_counter() - started)
        return samples

    task_samples = asyncio.run(task_checks())
    return [
        _latency_row("5 pyleak no_thread_leaks() clean check", thread_samples),
        _latency_row("5 pyleak no_task_leaks() clean check", task_samples),
    ]


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="leakcheck core benchmarks (see benchmarks/README.md)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--peers", action="store_true", help="also time pyleak's checks, when pyleak is importable")
    parser.add_argument("--rounds", type=int, default=60, help="interleaved batches per clean-check figure")
    parser.add_argument("--figures", default=",".join(FIGURES), help="comma-separated figures to run, e.g. 1,3")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON instead of a table")
    args = parser.parse_args(argv)
    wanted = {f.strip() for f in args.figures.split(",") if f.strip()}
    if not wanted <= set(FIGURES):
        parser.error(f"--figures takes some of {','.join(FIGURES)}")

    if not args.json:
        print(
            f"leakcheck {leakcheck.__version__} core benchmarks: Python {platform.python_version()} "
            f"({platform.python_implementation()}), {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
        )
    started = time.perf_counter()
    idle = IdleThreads("bench-idle")
    idle.grow(IDLE_THREADS)
    rows: List[Row] = []
    try:
        if "1" in wanted:
            rows += figure_clean_check(args.rounds)
        if "6" in wanted:  # before figure 3, whose 10,000 tasks leave 3.13's task registry a large table
            rows += figure_clean_check_with_tasks(args.rounds)
        if "7" in wanted:
            rows += figure_processes_and_fds(args.rounds)
        if "2" in wanted:
            rows += figure_grace()
        if "3" in wanted:
            rows += figure_scale()
        if "4" in wanted:
            rows += figure_captures()
        if "5" in wanted:
            if args.peers:
                rows += figure_peers()
            else:
                rows.append(Row("5 pyleak thread check (documented)", "sleeps 100 ms", target="info (--peers)"))
    finally:
        idle.close()
    if args.json:
        print(json.dumps({"python": platform.python_version(), "rows": [vars(row) for row in rows]}))
        return 0
    print_table(rows)
    missed = [row for row in rows if row.ok is False]
    for row in missed:
        print(f"TARGET MISSED: {row.figure}: {row.value} (target {row.target})")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
