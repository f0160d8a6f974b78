"""The issue's "Reliability" guarantees, one group of tests each.

* a report holds no frame objects;
* many checks keep memory flat;
* concurrent checks in several threads see no false leaks;
* threads and tasks ending while a snapshot is taken cause no error;
* ``import leakcheck`` starts no thread and patches nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import queue
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
import types
import weakref
from typing import Any, List, Optional

import pytest

from leakcheck import LeakError, find_leaks, find_stacks, no_leaks, snapshot
from leakcheck.kinds import asyncio_compat as _asyncio_compat

GRACE = 0.05
HOLDER_TYPES = (
    types.FrameType,
    types.TracebackType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    threading.Thread,
    asyncio.Future,  # and so asyncio.Task
)


class Payload:
    """A large object whose lifetime the tests follow through a weak reference."""

    def __init__(self) -> None:
        self.data = bytearray(16 * 1024 * 1024)


def hold_payload(ready: threading.Event, release: threading.Event, refs: List[Any]) -> None:
    payload = Payload()
    refs.append(weakref.ref(payload))
    ready.set()
    release.wait()


async def hold_payload_in_task(ready: asyncio.Event, refs: List[Any]) -> None:
    payload = Payload()
    refs.append(weakref.ref(payload))
    ready.set()
    await asyncio.get_running_loop().create_future()


async def hold_payload_until(ready: asyncio.Event, release: asyncio.Event, refs: List[Any]) -> None:
    payload = Payload()
    refs.append(weakref.ref(payload))
    ready.set()
    await release.wait()


def reachable(root: object) -> List[object]:
    """Every object reachable from ``root`` through gc referents, without descending into classes and modules."""
    seen = set()
    found: List[object] = []
    pending = [root]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        if not isinstance(obj, (type, types.ModuleType)):
            pending.extend(gc.get_referents(obj))
    return found


def holders_in(root: object) -> List[object]:
    return [obj for obj in reachable(root) if isinstance(obj, HOLDER_TYPES)]


@pytest.fixture
def parked_thread():
    """Start ``hold_payload`` in a thread on demand; always released and joined afterwards."""
    release = threading.Event()
    threads: List[threading.Thread] = []

    def start(refs: List[Any]) -> threading.Thread:
        ready = threading.Event()
        thread = threading.Thread(target=hold_payload, args=(ready, release, refs), name="payload-holder", daemon=True)
        threads.append(thread)
        thread.start()
        assert ready.wait(5)
        return thread

    try:
        yield start, release
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
        assert not any(thread.is_alive() for thread in threads)


# A report holds no frame objects


def test_payload_of_a_leaked_thread_is_freed_while_the_leak_error_is_kept(parked_thread):
    start, release = parked_thread
    refs: List[Any] = []
    with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        thread = start(refs)
    error = excinfo.value
    assert "hold_payload" in str(error.report)
    assert refs[0]() is not None  # alive while the thread runs

    release.set()
    thread.join(5)
    del thread
    gc.collect()
    assert refs[0]() is None
    assert "hold_payload" in str(error.report)  # the report is still there


def test_payload_of_a_leaked_thread_is_freed_while_the_snapshot_is_kept(parked_thread):
    start, release = parked_thread
    refs: List[Any] = []
    thread = start(refs)
    kept = snapshot()
    assert any("hold_payload" in info.stack for info in kept.threads)

    release.set()
    thread.join(5)
    del thread
    gc.collect()
    assert refs[0]() is None
    assert any("hold_payload" in info.stack for info in kept.threads)


@pytest.mark.asyncio
async def test_payload_of_a_leaked_task_is_freed_while_the_leak_error_is_kept():
    refs: List[Any] = []
    ready, release = asyncio.Event(), asyncio.Event()
    task = None
    try:
        with pytest.raises(LeakError) as excinfo:
            async with no_leaks(timeout=GRACE):
                task = asyncio.create_task(hold_payload_until(ready, release, refs), name="payload-task")
                await ready.wait()
        error = excinfo.value
        assert "hold_payload_until" in str(error.report)
        assert refs[0]() is not None
    finally:
        release.set()
        if task is not None:
            await task  # returns normally: no exception traceback pins the frame
    del task
    gc.collect()
    assert refs[0]() is None
    assert "payload-task" in str(error.report)


def test_leak_report_reaches_no_frame_traceback_thread_or_task(parked_thread):
    start, _ = parked_thread
    with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        start([])
    report = excinfo.value.report
    objects = reachable(report)
    assert any(isinstance(obj, str) and "hold_payload" in obj for obj in objects)  # the walk got to the stacks
    assert holders_in(report) == []


@pytest.mark.asyncio
async def test_task_leak_report_reaches_no_frame_coroutine_or_task():
    ready = asyncio.Event()
    task = None
    try:
        with pytest.raises(LeakError) as excinfo:
            async with no_leaks(timeout=GRACE):
                task = asyncio.create_task(hold_payload_in_task(ready, []), name="payload-task")
                await ready.wait()
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    report = excinfo.value.report
    assert any(isinstance(obj, str) and "hold_payload_in_task" in obj for obj in reachable(report))
    assert holders_in(report) == []


@pytest.mark.asyncio
async def test_snapshot_reaches_no_frame_traceback_thread_or_task(parked_thread):
    start, _ = parked_thread
    start([])
    ready = asyncio.Event()
    task = asyncio.create_task(hold_payload_in_task(ready, []), name="payload-task")
    try:
        await ready.wait()
        kept = snapshot()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert any(info.name == "payload-task" for info in kept.tasks)
    assert any(info.name == "payload-holder" for info in kept.threads)
    assert any(isinstance(obj, str) and "hold_payload_in_task" in obj for obj in reachable(kept))
    assert holders_in(kept) == []  # the census behind find_leaks included


class PayloadThread(threading.Thread):
    """A thread that keeps its state on itself, as server threads often do."""

    def __init__(self, release: threading.Event) -> None:
        super().__init__(name="payload-thread", daemon=True)
        self.release = release
        self.payload = Payload()

    def run(self) -> None:
        self.release.wait()


def test_kept_snapshot_does_not_keep_ended_thread_objects_alive():
    release = threading.Event()
    thread = PayloadThread(release)
    thread.start()
    try:
        kept = snapshot()
        assert any(info.name == "payload-thread" for info in kept.threads)
    finally:
        release.set()
        thread.join(5)
    payload = weakref.ref(thread.payload)
    del thread
    gc.collect()
    assert payload() is None
    assert holders_in(kept) == []


# Memory stays flat


@pytest.fixture
def idle_threads():
    release = threading.Event()
    threads = [threading.Thread(target=release.wait, name=f"idle-{n}", daemon=True) for n in range(5)]
    for thread in threads:
        thread.start()
    try:
        yield threads
    finally:
        release.set()
        for thread in threads:
            thread.join(5)


@pytest.fixture
def traced_memory():
    """``current()``: the traced memory now, after a garbage collection."""
    tracemalloc.start()

    def current() -> int:
        gc.collect()
        return tracemalloc.get_traced_memory()[0]

    try:
        yield current
    finally:
        tracemalloc.stop()


# In a fresh interpreter: tracemalloc slows every allocation down, and costs far less there than
# under pytest.  asyncio is imported so that the task census takes its real path.
FLAT_MEMORY_PROBE = textwrap.dedent(
    """
    import asyncio, gc, threading, tracemalloc
    from leakcheck import no_leaks

    release = threading.Event()
    idle = [threading.Thread(target=release.wait, name=f"idle-{n}", daemon=True) for n in range(5)]
    for thread in idle:
        thread.start()

    def clean_checks(count):
        for _ in range(count):
            with no_leaks():
                pass

    tracemalloc.start()
    clean_checks(3_000)  # warm-up: caches, free lists
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    clean_checks(100_000)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    release.set()
    for thread in idle:
        thread.join()
    print(after - before)
    """
)


def test_100000_clean_checks_keep_memory_flat():
    result = subprocess.run([sys.executable, "-c", FLAT_MEMORY_PROBE], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    growth = int(result.stdout)
    assert growth < 64 * 1024, f"{growth} bytes retained by 100,000 clean checks"


def test_blocks_entered_here_and_exited_elsewhere_leave_nothing_behind(traced_memory):
    # A thread that keeps entering blocks which another thread exits must not pile up
    # what it knows of them (the exits happen where it cannot clean up after them).
    stacks: queue.Queue[Optional[contextlib.ExitStack]] = queue.Queue()
    closed = threading.Semaphore(0)

    def close_stacks() -> None:
        while (stack := stacks.get()) is not None:
            stack.close()
            closed.release()

    def enter_here_exit_there(count: int) -> None:
        for _ in range(count):
            stack = contextlib.ExitStack()
            stack.enter_context(no_leaks())
            stacks.put(stack)
            assert closed.acquire(timeout=5)

    closer = threading.Thread(target=close_stacks, name="stack-closer")
    closer.start()
    try:
        enter_here_exit_there(200)  # warm-up
        before = traced_memory()
        enter_here_exit_there(2_000)
        growth = traced_memory() - before
    finally:
        stacks.put(None)
        closer.join(5)
    assert growth < 64 * 1024, f"{growth} bytes retained by 2,000 blocks exited from another thread"


def leaked_thread_target(running: threading.Event, release: threading.Event) -> None:
    running.set()
    release.wait()


def test_reported_and_released_thread_leaks_leave_nothing_behind(idle_threads, traced_memory):
    reports: List[Any] = []

    def leak_and_release(count: int) -> None:
        for _ in range(count):
            running, release = threading.Event(), threading.Event()
            thread = threading.Thread(target=leaked_thread_target, args=(running, release), daemon=True)
            with no_leaks(timeout=0, on_leak=reports.append):
                thread.start()
                running.wait(5)  # Thread.start() returns before the target is called
            release.set()
            thread.join(5)

    leak_and_release(100)  # warm-up, including the caches behind the report text
    assert all("leaked_thread_target" in str(report) for report in reports)
    reports.clear()
    before = traced_memory()
    leak_and_release(1000)
    assert len(reports) == 1000
    assert all("leaked_thread_target" in str(report) for report in reports)
    reports.clear()
    growth = traced_memory() - before
    assert growth < 64 * 1024, f"{growth} bytes retained after 1000 released thread leaks"


async def leaked_task_target(release: asyncio.Event) -> None:
    await release.wait()


@pytest.mark.asyncio
async def test_reported_and_finished_task_leaks_leave_nothing_behind(traced_memory):
    reports: List[Any] = []

    async def leak_and_finish(count: int) -> None:
        for _ in range(count):
            release = asyncio.Event()
            async with no_leaks(timeout=0, on_leak=reports.append):
                task = asyncio.create_task(leaked_task_target(release))
                await asyncio.sleep(0)
            release.set()
            await task

    await leak_and_finish(100)  # warm-up, including the caches behind the report text
    assert all("leaked_task_target" in str(report) for report in reports)
    reports.clear()
    before = traced_memory()
    await leak_and_finish(1000)
    assert len(reports) == 1000
    assert all("leaked_task_target" in str(report) for report in reports)
    reports.clear()
    growth = traced_memory() - before
    assert growth < 64 * 1024, f"{growth} bytes retained after 1000 finished task leaks"


# Concurrent checks


def short_work() -> None:
    sum(range(100))


def start_and_join_workers(count: int) -> None:
    workers = [threading.Thread(target=short_work, name="short-worker") for _ in range(count)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


async def short_task() -> None:
    await asyncio.sleep(0)


CHECKERS = 8
CHECK_FOR = 2.0


def test_eight_threads_checking_at_once_report_no_false_leaks():
    """Each checker's blocks see the others' short-lived workers come and go; none is blamed."""
    errors: List[BaseException] = []
    rounds = [0] * CHECKERS
    everyone_started = threading.Barrier(CHECKERS)
    shared = no_leaks(timeout=5.0)
    decorated = shared(start_and_join_workers)

    def sync_checker(index: int, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            with no_leaks(timeout=5.0):
                start_and_join_workers(2)
                with shared:  # nested, and the same LeakCheck used by every checker
                    start_and_join_workers(1)
            decorated(1)
            rounds[index] += 1

    async def async_checker(index: int, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            async with no_leaks(timeout=5.0):
                await asyncio.gather(*(asyncio.create_task(short_task()) for _ in range(3)))
                async with shared:
                    start_and_join_workers(1)
                    await asyncio.create_task(short_task())
            rounds[index] += 1

    def checker(index: int) -> None:
        try:
            everyone_started.wait(10)
            stop_at = time.monotonic() + CHECK_FOR
            if index % 4 == 3:
                asyncio.run(async_checker(index, stop_at))
            else:
                sync_checker(index, stop_at)
        except BaseException as error:
            errors.append(error)

    with no_leaks(timeout=5.0):
        threads = [threading.Thread(target=checker, args=(n,), name=f"checker-{n}") for n in range(CHECKERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    assert errors == []
    assert all(rounds), rounds


# Snapshots while threads and tasks end


def blink() -> None:
    time.sleep(0.0005)  # ends shortly: often in the middle of a snapshot


def spawn_short_threads(stop: threading.Event, errors: List[BaseException]) -> None:
    try:
        while not stop.is_set():
            threads = [threading.Thread(target=blink, name="blink") for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    except BaseException as error:
        errors.append(error)


async def blip_task() -> None:
    await asyncio.sleep(0.001)  # ends shortly: often in the middle of a snapshot


async def churn_tasks(stop: threading.Event, running: threading.Event) -> None:
    running.set()
    while not stop.is_set():
        await asyncio.gather(*(asyncio.create_task(blip_task()) for _ in range(20)))


def churn_loops(stop: threading.Event, errors: List[BaseException]) -> None:
    """Event loops made and closed all the time: on 3.14+ each one joins and leaves the loop registry."""
    try:
        while not stop.is_set():
            asyncio.run(blip_task())
    except BaseException as error:
        errors.append(error)


def run_task_churn(stop: threading.Event, running: threading.Event, errors: List[BaseException]) -> None:
    try:
        asyncio.run(churn_tasks(stop, running))
    except BaseException as error:
        errors.append(error)


# Generous: with three busy threads fighting for the GIL, a check may wait a while for its suspects.
CHURN_GRACE = 10.0


@pytest.fixture
def churn():
    """Threads ending, tasks finishing and loops closing all the time, in three background threads."""
    stop, running = threading.Event(), threading.Event()
    errors: List[BaseException] = []
    background = [
        threading.Thread(target=spawn_short_threads, args=(stop, errors), name="spawner"),
        threading.Thread(target=run_task_churn, args=(stop, running, errors), name="task-churn"),
        threading.Thread(target=churn_loops, args=(stop, errors), name="loop-churn"),
    ]
    for thread in background:
        thread.start()
    assert running.wait(10)  # the churning loop's main task exists before any baseline is taken
    try:
        yield errors
    finally:
        stop.set()
        for thread in background:
            thread.join(10)
        assert not any(thread.is_alive() for thread in background)


def test_snapshots_and_checks_while_threads_and_tasks_end(churn):
    errors = churn
    baseline = snapshot()
    deadline = time.monotonic() + 1.0
    seen = set()
    while time.monotonic() < deadline:
        taken = snapshot()
        assert str(taken)
        seen.update(info.name for info in taken.threads)
        seen.update(info.coro for info in taken.tasks)
        _asyncio_compat.task_tokens()
        seen.update(info.name for info in find_stacks("blink", "blip_task"))
        with no_leaks(timeout=CHURN_GRACE):
            pass
    report = find_leaks(baseline, timeout=CHURN_GRACE)
    assert errors == []
    assert not report, str(report)
    assert {"blink", "blip_task"} <= seen  # the snapshots did run into the churn


@pytest.mark.asyncio
async def test_async_checks_while_threads_and_tasks_end(churn):
    errors = churn
    deadline = time.monotonic() + 0.5
    rounds = 0
    while time.monotonic() < deadline:
        snapshot()
        async with no_leaks(timeout=CHURN_GRACE):
            await asyncio.sleep(0)
        rounds += 1
    assert rounds > 0
    assert errors == []


# import leakcheck has no side effects

# logging is imported up front: importing it registers logging's own atexit hook.
IMPORT_PROBE = textwrap.dedent(
    """
    import atexit, builtins, gc, logging, signal, sys, threading, warnings

    def state():
        monitoring = getattr(sys, "monitoring", None)
        return {
            "active_count": threading.active_count(),
            "threads": tuple(threading.enumerate()),
            "os_threads": len(sys._current_frames()),
            "Thread.__init__": threading.Thread.__init__,
            "Thread.start": threading.Thread.start,
            "Thread.run": threading.Thread.run,
            "Thread.join": threading.Thread.join,
            "Thread._bootstrap": threading.Thread._bootstrap,
            "Thread._bootstrap_inner": threading.Thread._bootstrap_inner,
            "threading.enumerate": threading.enumerate,
            "threading.current_thread": threading.current_thread,
            "threading.start_new": getattr(threading, "_start_new_thread", None),
            "threading.start_joinable": getattr(threading, "_start_joinable_thread", None),
            "threading.excepthook": threading.excepthook,
            "threading._trace_hook": getattr(threading, "_trace_hook", None),
            "threading._profile_hook": getattr(threading, "_profile_hook", None),
            "sys.excepthook": sys.excepthook,
            "sys.unraisablehook": sys.unraisablehook,
            "sys.displayhook": sys.displayhook,
            "sys.gettrace": sys.gettrace(),
            "sys.getprofile": sys.getprofile(),
            "sys.settrace": sys.settrace,
            "sys._current_frames": sys._current_frames,
            "sys.switchinterval": sys.getswitchinterval(),
            "sys.recursionlimit": sys.getrecursionlimit(),
            "sys.meta_path": tuple(sys.meta_path),
            "sys.path_hooks": tuple(sys.path_hooks),
            "monitoring": tuple(monitoring.get_tool(i) for i in range(6)) if monitoring else None,
            "builtins.__import__": builtins.__import__,
            "atexit": atexit._ncallbacks(),
            "gc.callbacks": tuple(gc.callbacks),
            "SIGINT": signal.getsignal(signal.SIGINT),
            "SIGTERM": signal.getsignal(signal.SIGTERM),
            "warnings.filters": tuple(warnings.filters),
            "logging.root.handlers": tuple(logging.root.handlers),
            "logging.getLoggerClass": logging.getLoggerClass(),
        }

    assert "asyncio" not in sys.modules and "unittest" not in sys.modules, "precondition"
    before = state()
    import leakcheck
    after = state()
    changed = [key for key in before if not (before[key] is after[key] or before[key] == after[key])]
    assert not changed, changed
    assert "asyncio" not in sys.modules, "import leakcheck imported asyncio"
    assert "unittest" not in sys.modules, "import leakcheck imported unittest"
    print("unchanged", len(before))
    """
)


def test_import_leakcheck_starts_no_thread_and_patches_nothing():
    result = subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("unchanged")


def test_import_probe_would_notice_a_started_thread():
    """The probe above can fail: importing a module that starts a thread trips it."""
    probe = IMPORT_PROBE.replace(
        "import leakcheck\n",
        "import leakcheck\nthreading.Thread(target=threading.Event().wait, daemon=True).start()\n",
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "active_count" in result.stderr
