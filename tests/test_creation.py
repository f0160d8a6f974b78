"""Creation sites and the tracking switch (issue 12).

Where each thread, task and child process was started, as a report, a dump
and JSON show it; and turning tracking on and off: what it patches, that it
puts back exactly what was there, counted use, ``LEAKCHECK_TRACK``,
``ignore_created_by`` and the options' validation.  Ownership between
concurrent blocks is tested in test_ownership.py.

Every leak here is released and joined (cancelled and awaited, reaped) before
its test ends, and no test leaves tracking on (see the autouse fixture).
"""

from __future__ import annotations

import _thread
import asyncio
import concurrent.futures
import contextlib
import gc
import http.server
import inspect
import json
import linecache
import multiprocessing.popen_fork
import os
import queue
import subprocess
import sys
import textwrap
import threading
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import helpers
import pytest

import leakcheck
from leakcheck import CreationSite, Frame, LeakError, ThreadInfo, no_leaks
from leakcheck.kinds import tasks as tasks_kind
from leakcheck.kinds import threads as threads_kind
from leakcheck.reporting.dump import parse_dump

MODULE = __name__
HERE = __file__
ROOT = Path(__file__).resolve().parent.parent
TIMEOUT = 0.2
JOIN = 10.0
HAS_PROC = os.path.exists("/proc/self/stat")
LEAKCHECK_DIR = os.path.dirname(leakcheck.__file__) + os.sep


@pytest.fixture(autouse=True)
def tracking_stays_off() -> Iterator[None]:
    """Each test starts and ends with tracking off: no hook may outlive it, whatever it did."""
    assert not leakcheck.is_tracking_creation(), "creation tracking was on before the test"
    yield
    assert not leakcheck.is_tracking_creation(), "the test left creation tracking on"


# -- helpers


def line_of(function: Callable[..., Any], snippet: str) -> int:
    """The line number of the first line of ``function``'s source that holds ``snippet``."""
    lines, first = inspect.getsourcelines(function)
    for offset, text in enumerate(lines):
        if snippet in text:
            return first + offset
    raise AssertionError(f"{snippet!r} is not in {function.__name__}")


def marked_lines(report: str) -> List[str]:
    return [line for line in report.splitlines() if line.startswith("  > File ")]


def assert_created_at(report: str, function: Callable[..., Any], snippet: str) -> None:
    """The report's summary names ``function`` (this module's) at the line of ``snippet``, and its block marks it."""
    qualname = f"{MODULE}.{function.__qualname__}"
    line = line_of(function, snippet)
    assert f", created at {qualname} ({HERE}:{line})" in report, report
    assert "  Created at (most recent call last):" in report, report
    marked = marked_lines(report)
    assert marked, report
    assert all(mark == f'  > File "{HERE}", line {line}, in {qualname}' for mark in marked), report
    assert LEAKCHECK_DIR not in report, report  # no hook nor wrapper of leakcheck's shows in any stack


def leak_report(body: Callable[[], Any], **options: Any) -> str:
    """The report of the LeakError that ``with no_leaks(...)`` around ``body()`` raises (tracking, unless told)."""
    settings = {"track_creation": True, "timeout": TIMEOUT, **options}
    if settings["track_creation"] is None:  # the default: as LEAKCHECK_TRACK says, else as tracking is now
        del settings["track_creation"]
    with pytest.raises(LeakError) as caught, no_leaks(**settings):
        body()
    return str(caught.value)


def start_parked(release: threading.Event, name: Optional[str] = None) -> threading.Thread:
    thread = threading.Thread(target=release.wait, name=name, daemon=True)
    thread.start()
    return thread


def start_through_outer(release: threading.Event) -> threading.Thread:
    return start_parked(release)


def start_other(release: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    return thread


class Parked:
    """Threads started by the test, released and joined at the end whatever happened."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.threads: List[threading.Thread] = []

    def add(self, thread: threading.Thread) -> threading.Thread:
        self.threads.append(thread)
        return thread

    def close(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(JOIN)
        assert not [thread for thread in self.threads if thread.is_alive()]


@pytest.fixture
def parked() -> Iterator[Parked]:
    threads = Parked()
    try:
        yield threads
    finally:
        threads.close()


def tracked_snapshot(**kinds: bool) -> leakcheck.Snapshot:
    """``snapshot(track_creation=True)``, without the hold on tracking that the snapshot keeps while it lives.

    So that a failing test, whose traceback keeps its locals, does not leave tracking on for the next ones.
    """
    taken = leakcheck.snapshot(track_creation=True, **kinds)  # type: ignore[misc]
    return leakcheck.Snapshot(records=taken.records, pid=taken.pid, taken_at=taken.taken_at)


def record_of(snapshot: leakcheck.Snapshot, name: str) -> ThreadInfo:
    found = [info for info in snapshot.threads if info.name == name]
    assert len(found) == 1, [info.name for info in snapshot.threads]
    return found[0]


# -- 1. threads: the helper, a Timer, an executor's worker, serve_forever


def test_a_thread_started_by_a_helper_names_the_helper(parked: Parked) -> None:
    report = leak_report(lambda: parked.add(start_parked(parked.release)))

    assert_created_at(report, start_parked, "thread.start()")
    summary = report.splitlines()[1]
    assert summary.startswith("  - thread 'Thread-"), report
    assert summary.endswith(f", created at {MODULE}.start_parked ({HERE}:{line_of(start_parked, 'thread.start()')})")
    # The stack stops where pytest called the test: nothing of pytest or pluggy.
    created = report.split("  Created at (most recent call last):\n", 1)[1].split("\n\n", 1)[0]
    assert "_pytest" not in created and "pluggy" not in created, created
    assert f"in {MODULE}.test_a_thread_started_by_a_helper_names_the_helper.<locals>.<lambda>" in created


def start_timer() -> threading.Timer:
    timer = threading.Timer(3600, print)
    timer.start()
    return timer


def test_a_timer_names_the_code_that_started_it() -> None:
    timers: List[threading.Timer] = []
    try:
        report = leak_report(lambda: timers.append(start_timer()))
    finally:
        for timer in timers:
            timer.cancel()
            timer.join(JOIN)
    assert "threading.Timer.run" in report  # its own stack is the standard library's only
    assert_created_at(report, start_timer, "timer.start()")


def park_job(release: threading.Event) -> None:
    release.wait()


def submit_job(pool: concurrent.futures.ThreadPoolExecutor, release: threading.Event) -> Any:
    return pool.submit(park_job, release)


def map_jobs(pool: concurrent.futures.ThreadPoolExecutor, release: threading.Event) -> Any:
    return pool.map(park_job, [release])


@pytest.mark.parametrize(("start", "snippet"), [(submit_job, "pool.submit("), (map_jobs, "pool.map(")])
def test_an_executor_worker_names_the_users_submit_or_map_call(start: Callable[..., Any], snippet: str) -> None:
    release = threading.Event()
    pool = concurrent.futures.ThreadPoolExecutor(1)
    try:
        report = leak_report(lambda: start(pool, release))
    finally:
        release.set()
        pool.shutdown(wait=True)
    assert_created_at(report, start, snippet)
    # The marked frame is the user's call; what follows it, innermost, is the executor's own code.
    lines = report.splitlines()
    after = lines[lines.index(marked_lines(report)[0]) + 2 :]
    assert after[0].startswith("    File ") and "concurrent/futures" in after[0], report
    assert "ThreadPoolExecutor" in after[0] or "Executor.map" in after[0], report


def start_server() -> Tuple[http.server.ThreadingHTTPServer, threading.Thread]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    return server, thread


def test_a_serve_forever_thread_names_the_function_that_started_it() -> None:
    started: List[Tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []
    try:
        report = leak_report(lambda: started.append(start_server()))
    finally:
        for server, thread in started:
            server.shutdown()
            thread.join(JOIN)
            server.server_close()
    assert "socketserver.BaseServer.serve_forever" in report
    assert_created_at(report, start_server, "thread.start()")


def test_the_stack_keeps_the_marked_frame_and_its_caller(parked: Parked) -> None:
    def nest(depth: int) -> threading.Thread:
        if depth:
            return nest(depth - 1)
        return parked.add(start_parked(parked.release))

    with leakcheck.track_creation():
        thread = nest(20)
        created = threads_kind.KIND.creation(thread)
    assert created is not None
    site = created.site()
    assert len(site.frames) == 2, site.frames
    assert site.marked == 1
    assert site.blamed is not None and site.blamed.function == f"{MODULE}.start_parked"
    assert site.frames[0].function.endswith("nest")


def test_a_thread_started_in_a_thread_stops_at_the_threads_start(parked: Parked) -> None:
    inner: queue.Queue[threading.Thread] = queue.Queue()

    def launcher() -> None:
        inner.put(parked.add(start_parked(parked.release)))

    with leakcheck.track_creation():
        outer = threading.Thread(target=launcher)
        outer.start()
        outer.join(JOIN)
        created = threads_kind.KIND.creation(inner.get(timeout=JOIN))
    assert created is not None
    functions = [frame.function for frame in created.site().frames]
    assert functions[-2:] == [f"{MODULE}.{launcher.__qualname__}", f"{MODULE}.start_parked"], functions
    assert not any("_bootstrap" in function for function in functions), functions


def start_again(thread: threading.Thread) -> str:
    """``thread.start()`` once more, as a start-if-not-started helper does: the error it gives."""
    try:
        thread.start()
    except RuntimeError as error:
        return str(error)
    raise AssertionError("a thread started twice")


def test_a_failed_second_start_does_not_move_the_creation_site(parked: Parked) -> None:
    with leakcheck.track_creation():
        thread = parked.add(start_parked(parked.release))
        assert "only be started once" in start_again(thread)
        created = threads_kind.KIND.creation(thread)
    assert created is not None and created.site().blamed is not None
    assert created.site().blamed.function == f"{MODULE}.start_parked"


def test_a_failed_second_start_outside_the_block_does_not_hide_the_leak(parked: Parked) -> None:
    requests: queue.Queue[Optional[threading.Thread]] = queue.Queue()
    answers: queue.Queue[str] = queue.Queue()

    def helper_thread() -> None:  # started before the block, outside every block
        while (thread := requests.get()) is not None:
            answers.put(start_again(thread))

    helper = threading.Thread(target=helper_thread, daemon=True)
    helper.start()

    def body() -> None:
        requests.put(parked.add(start_parked(parked.release)))
        assert "only be started once" in answers.get(timeout=JOIN)

    try:
        report = leak_report(body)
    finally:
        requests.put(None)
        helper.join(JOIN)
    assert_created_at(report, start_parked, "thread.start()")


def run_jobs(pool: concurrent.futures.ThreadPoolExecutor) -> Tuple[int, List[int], BaseException]:
    def fail() -> None:
        raise KeyError("from the job")

    failed = pool.submit(fail).exception(JOIN)
    assert failed is not None
    return pool.submit(pow, 2, 10).result(JOIN), list(pool.map(abs, [-1, -2])), failed


def test_a_pools_jobs_run_as_before_while_tracking() -> None:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        untracked = run_jobs(pool)
        with leakcheck.track_creation():
            tracked = run_jobs(pool)
    assert tracked[:2] == untracked[:2] == (1024, [1, 2])
    assert repr(tracked[2]) == repr(untracked[2]) == "KeyError('from the job')"


# -- 2. _thread.start_new_thread


def launch_raw(body: Callable[[], None]) -> int:
    return _thread.start_new_thread(body, ())


class RawThread:
    """A thread started with _thread.start_new_thread: it makes its dummy Thread, parks, and is waited for."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.dummies: queue.Queue[threading.Thread] = queue.Queue()
        self.dummy: Optional[threading.Thread] = None

    def body(self) -> None:
        self.dummies.put(threading.current_thread())
        self.release.wait()

    def start(self) -> None:
        launch_raw(self.body)
        self.dummy = self.dummies.get(timeout=JOIN)

    def close(self) -> None:
        self.release.set()
        if self.dummy is not None:
            threads_kind.KIND.wait([self.dummy], time.monotonic() + JOIN)
            assert not threads_kind.KIND.is_alive(self.dummy)


@pytest.mark.parametrize(
    "os_threads", [False, pytest.param(True, marks=pytest.mark.skipif(not HAS_PROC, reason="/proc"))]
)
def test_a_start_new_thread_thread_names_its_creator(os_threads: bool) -> None:
    raw = RawThread()
    options = {"os_threads": True} if os_threads else {}
    try:
        report = leak_report(raw.start, **options)
    finally:
        raw.close()
    assert raw.dummy is not None and isinstance(raw.dummy, threading._DummyThread)
    assert f"in {MODULE}.RawThread.body (" in report
    assert_created_at(report, launch_raw, "_thread.start_new_thread(")


class BareThread:
    """A _thread thread that never touches threading, so it has no dummy Thread: only os_threads sees it."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.ids: queue.Queue[Tuple[int, int]] = queue.Queue()
        self.ident: Optional[int] = None
        self.native_id = 0

    def body(self) -> None:
        self.ids.put((threading.get_ident(), threading.get_native_id()))
        self.release.wait()

    def start(self) -> None:
        launch_bare(self.body)
        self.ident, self.native_id = self.ids.get(timeout=JOIN)  # running Python code: paired with its TID

    def close(self) -> None:
        from leakcheck.kinds import os_threads

        self.release.set()
        found = [thread for thread in os_threads.KIND.live() if thread.ident == self.ident]
        os_threads.KIND.wait(found, time.monotonic() + JOIN)
        assert not [thread for thread in found if os_threads.KIND.is_alive(thread)]


def launch_bare(body: Callable[[], None]) -> int:
    return _thread.start_new_thread(body, ())


@pytest.mark.skipif(not HAS_PROC, reason="os_threads needs /proc")
def test_a_start_new_thread_thread_without_a_dummy_names_its_creator_as_an_os_thread() -> None:
    bare = BareThread()
    try:
        report = leak_report(bare.start, threads=False, tasks=False, os_threads=True)
    finally:
        bare.close()
    assert "leaked OS thread" in report and f"in {MODULE}.BareThread.body (" in report
    assert_created_at(report, launch_bare, "_thread.start_new_thread(")


@pytest.mark.skipif(not HAS_PROC, reason="os_threads needs /proc")
def test_an_os_thread_paired_late_still_has_its_creation_site() -> None:
    # Found when the block ended, before it ran Python code, the thread had no ident yet (resolve() gives
    # ident None), though describe() pairs it late and shows its frames: the site is found by TID too.
    from leakcheck.kinds import os_threads

    bare = BareThread()
    try:
        with leakcheck.track_creation():
            bare.start()
        # What resolve() gives for the thread when the block ends while it is still starting: no ident yet.
        found_early = os_threads.OsThread(
            bare.native_id, os_threads._starttime(bare.native_id), None, os_threads._comm(bare.native_id) or ""
        )
        [info] = os_threads.KIND.describe([found_early])
        assert info.ident == bare.ident and any(frame.function == f"{MODULE}.BareThread.body" for frame in info.frames)
        assert os_threads.KIND.creation(found_early) is not None
    finally:
        bare.close()


def raise_in_raw_thread() -> None:
    raise RuntimeError("raised by the raw thread")


def launch_failing() -> None:
    _thread.start_new_thread(raise_in_raw_thread, ())


def test_an_exception_in_a_start_new_thread_thread_still_names_the_users_function(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: queue.Queue[Tuple[Optional[str], str, BaseException]] = queue.Queue()

    def hook(unraisable: Any) -> None:
        seen.put((unraisable.err_msg, repr(unraisable.object), unraisable.exc_value))

    monkeypatch.setattr(sys, "unraisablehook", hook)
    with leakcheck.track_creation():
        launch_failing()
        message, shown, error = seen.get(timeout=JOIN)
    # 3.10-3.12 pass the function as the object, 3.13+ put its repr in the message: either way, the wrapper's
    # repr must be the user's function's.
    assert f"function raise_in_raw_thread at 0x{id(raise_in_raw_thread):x}" in f"{message} {shown}"
    assert "_Started" not in f"{message} {shown}"
    assert isinstance(error, RuntimeError) and str(error) == "raised by the raw thread"


def test_the_start_new_thread_wrapper_reprs_as_the_users_function() -> None:
    from leakcheck.kinds.creation import record

    with leakcheck.track_creation():
        created = record(0)
    assert created is not None
    wrapper = threads_kind._Started(raise_in_raw_thread, created)
    assert repr(wrapper) == repr(raise_in_raw_thread)


# -- 3. tasks


async def park_task(release: asyncio.Event) -> None:
    await release.wait()


def spawn_with_create_task(release: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.create_task(park_task(release))


def spawn_with_ensure_future(release: asyncio.Event) -> asyncio.Future[None]:
    return asyncio.ensure_future(park_task(release))


def spawn_with_loop(release: asyncio.Event) -> asyncio.Task[None]:
    return asyncio.get_running_loop().create_task(park_task(release))


async def leaked_task_report(spawn: Callable[[asyncio.Event], asyncio.Future[None]]) -> str:
    release = asyncio.Event()
    spawned: List[asyncio.Future[None]] = []
    try:
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=TIMEOUT):
                spawned.append(spawn(release))
    finally:
        release.set()
        for task in spawned:
            task.cancel()
        await asyncio.gather(*spawned, return_exceptions=True)
    return str(caught.value)


@pytest.mark.parametrize(
    ("spawn", "snippet"),
    [
        (spawn_with_create_task, "asyncio.create_task("),
        (spawn_with_ensure_future, "asyncio.ensure_future("),
        (spawn_with_loop, ".create_task(park_task"),
    ],
)
def test_a_leaked_task_names_its_creator(spawn: Callable[[asyncio.Event], Any], snippet: str) -> None:
    report = asyncio.run(leaked_task_report(spawn))
    assert f"in {MODULE}.park_task (" in report
    assert_created_at(report, spawn, snippet)


@pytest.mark.skipif(sys.version_info < (3, 11), reason="TaskGroup is 3.11+")
def test_a_task_group_task_names_its_creator() -> None:
    spawners: List[Callable[..., Any]] = []

    async def main() -> str:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined,unused-ignore]

            def spawn_in_group(release: asyncio.Event) -> Any:
                return group.create_task(park_task(release))

            spawners.append(spawn_in_group)
            return await leaked_task_report(spawn_in_group)

    report = asyncio.run(main())
    assert f"in {MODULE}.park_task (" in report
    assert_created_at(report, spawners[0], "group.create_task(")


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are 3.12+")
def test_an_eager_task_names_its_creator() -> None:
    ran: List[str] = []

    async def eager_park(release: asyncio.Event) -> None:
        ran.append("first step")
        await release.wait()

    def spawn_eagerly(release: asyncio.Event) -> Any:
        task = asyncio.create_task(eager_park(release))
        assert ran == ["first step"], "the task factory did not start it eagerly"
        return task

    async def main() -> str:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
        return await leaked_task_report(spawn_eagerly)

    report = asyncio.run(main())
    assert "eager_park" in report
    assert_created_at(report, spawn_eagerly, "asyncio.create_task(")


# -- 4. processes


needs_proc = pytest.mark.skipif(not HAS_PROC or sys.platform != "linux", reason="processes: Linux only")
PROCESS_OPTIONS = {"processes": True, "threads": False, "tasks": False}
READ_STDIN = [sys.executable, "-c", "import sys; sys.stdin.read()"]


def start_popen() -> subprocess.Popen[bytes]:
    return subprocess.Popen(READ_STDIN, stdin=subprocess.PIPE)


@needs_proc
def test_a_popen_child_names_its_creator() -> None:
    children: List[subprocess.Popen[bytes]] = []
    try:
        report = leak_report(lambda: children.append(start_popen()), **PROCESS_OPTIONS)
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(JOIN)
    assert f"pid {children[0].pid}" in report
    assert_created_at(report, start_popen, "subprocess.Popen(")


def start_process(context: Any, release: Any) -> Any:
    process = context.Process(target=release.wait, daemon=True)
    process.start()
    return process


@needs_proc
def test_a_multiprocessing_child_names_its_creator() -> None:
    import multiprocessing

    context = multiprocessing.get_context("fork")
    release = context.Event()
    processes: List[Any] = []
    try:
        with warnings.catch_warnings():  # 3.12+: fork() in a process with threads (pytest-xdist's)
            warnings.simplefilter("ignore", DeprecationWarning)
            report = leak_report(lambda: processes.append(start_process(context, release)), **PROCESS_OPTIONS)
    finally:
        release.set()
        for process in processes:
            process.join(JOIN)
            if process.exitcode is None:
                process.kill()
                process.join(JOIN)
    assert f"pid {processes[0].pid}" in report
    assert_created_at(report, start_process, "process.start()")


def fork_child(read_end: int, write_end: int) -> int:
    pid = os.fork()
    if pid == 0:  # the child: wait for the parent to close its end, then leave without running any Python cleanup
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    return pid


FIRST_FORK_CHILD = r"""
import multiprocessing, sys, threading, warnings
import leakcheck

warnings.simplefilter("ignore", DeprecationWarning)  # a fork in a process with threads
release = multiprocessing.get_context("fork").Event()

def start_child():
    child = multiprocessing.get_context("fork").Process(target=release.wait, name="first-child", daemon=True)
    child.start()

# multiprocessing imports its fork start method's module inside the first start().
assert "multiprocessing.popen_fork" not in sys.modules
try:
    with leakcheck.no_leaks(track_creation=True, processes=True, threads=False, tasks=False, timeout=0.2):
        start_child()
    print("not reported")
except leakcheck.LeakError as error:  # (the child's command line is this script: no literal to find in it)
    print("named" if "created at __main__." + "start_child" in str(error) else str(error))
release.set()
"""


@needs_proc
def test_the_first_multiprocessing_child_of_a_program_names_its_creator() -> None:
    result = helpers.run_python(FIRST_FORK_CHILD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "named"


@contextlib.contextmanager
def waiting_children() -> Iterator[Tuple[int, int, List[int]]]:
    """A pipe whose read end children block on, and a list for their pids: each reaped once the pipe closes."""
    read_end, write_end = os.pipe()
    pids: List[int] = []
    try:
        yield read_end, write_end, pids
    finally:
        os.close(write_end)
        for pid in pids:
            os.waitpid(pid, 0)
        os.close(read_end)


@needs_proc
def test_an_os_fork_child_is_reported_without_a_creation_site() -> None:
    # A documented limit: os.fork itself is not hooked, so that CPython's fork DeprecationWarning keeps
    # naming its caller.  The child is still the block's leak, judged as without tracking.
    with waiting_children() as (read_end, write_end, pids), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        report = leak_report(lambda: pids.append(fork_child(read_end, write_end)), **PROCESS_OPTIONS)
    assert f"pid {pids[0]}" in report
    assert "Created at" not in report


@needs_proc
@pytest.mark.skipif(sys.version_info < (3, 12), reason="the fork DeprecationWarning is new in 3.12")
def test_the_fork_warning_still_names_the_caller_while_tracking(parked: Parked) -> None:
    keeper = parked.add(threading.Thread(target=parked.release.wait, name="fork-warning-keeper"))
    keeper.start()  # a second thread: os.fork warns in a threaded process
    with (
        waiting_children() as (read_end, write_end, pids),
        leakcheck.track_creation(),
        warnings.catch_warnings(record=True) as caught,
    ):
        warnings.simplefilter("always", DeprecationWarning)
        pids.append(fork_child(read_end, write_end))
    forks = [warning for warning in caught if "fork" in str(warning.message)]
    assert forks, [str(warning.message) for warning in caught]
    assert all(warning.filename == __file__ for warning in forks), [warning.filename for warning in forks]


def spawn_child(read_end: int) -> int:
    return os.posix_spawn(READ_STDIN[0], READ_STDIN, os.environ, file_actions=[(os.POSIX_SPAWN_DUP2, read_end, 0)])


@needs_proc
def test_a_posix_spawn_child_names_its_creator() -> None:
    with waiting_children() as (read_end, _write_end, pids):
        report = leak_report(lambda: pids.append(spawn_child(read_end)), **PROCESS_OPTIONS)
    assert f"pid {pids[0]}" in report
    assert_created_at(report, spawn_child, "os.posix_spawn(")


@needs_proc
def test_a_process_creation_site_round_trips_through_the_dump_and_json() -> None:
    children: List[subprocess.Popen[bytes]] = []
    try:
        with leakcheck.track_creation():
            children.append(start_popen())
            taken = tracked_snapshot(processes=True, threads=False, tasks=False)
    finally:
        for child in children:
            assert child.stdin is not None
            child.stdin.close()
            child.wait(JOIN)
    [info] = [info for info in taken.of("processes") if getattr(info, "pid", None) == children[0].pid]
    assert info.created is not None and info.created.blamed is not None
    assert info.created.blamed.function == f"{MODULE}.start_popen"
    assert parse_dump(str(taken)) == taken
    assert leakcheck.Snapshot.from_json(taken.to_json()) == taken


# -- 5. dump and JSON


def taken_with_sites(parked: Parked) -> Tuple[leakcheck.Snapshot, str]:
    """A snapshot of threads and tasks where one thread and one task have a creation site."""
    name = "creation-dump-thread"

    async def main() -> leakcheck.Snapshot:
        release = asyncio.Event()
        task = spawn_with_create_task(release)
        await asyncio.sleep(0)  # let it reach its first await
        try:
            return tracked_snapshot()
        finally:
            release.set()
            await task

    with leakcheck.track_creation():
        parked.add(start_parked(parked.release, name))
        taken = asyncio.run(main())
    return taken, name


def test_a_snapshot_records_where_each_thread_and_task_was_created(parked: Parked) -> None:
    taken, name = taken_with_sites(parked)
    thread = record_of(taken, name)
    assert thread.created is not None
    assert thread.created.blamed == thread.created.frames[thread.created.marked or 0]
    assert thread.created.blamed is not None
    assert thread.created.blamed.function == f"{MODULE}.start_parked"
    assert thread.created.blamed.lineno == line_of(start_parked, "thread.start()")
    assert thread.created.blamed.line == "thread.start()"
    [task] = [info for info in taken.tasks if info.frames and info.frames[0].function == f"{MODULE}.park_task"]
    assert task.created is not None and task.created.blamed is not None
    assert task.created.blamed.function == f"{MODULE}.spawn_with_create_task"
    main_thread = record_of(taken, threading.main_thread().name)
    assert main_thread.created is None  # started before tracking: no site


def test_a_snapshot_without_tracking_has_no_creation_sites(parked: Parked) -> None:
    with leakcheck.track_creation():
        parked.add(start_parked(parked.release, "untracked-snapshot-thread"))
    taken = leakcheck.snapshot()  # tracking is off again: records carry no site
    assert record_of(taken, "untracked-snapshot-thread").created is None
    assert "Created at" not in str(taken)


def test_creation_sites_round_trip_through_the_dump_and_json(parked: Parked) -> None:
    taken, name = taken_with_sites(parked)
    text = str(taken)
    assert "  Created at (most recent call last):" in text
    assert f'  > File "{HERE}", line {line_of(start_parked, "thread.start()")}, in {MODULE}.start_parked' in text

    parsed = parse_dump(text)
    assert parsed == taken
    assert record_of(parsed, name).created == record_of(taken, name).created
    assert record_of(parsed, name).created.marked == record_of(taken, name).created.marked  # type: ignore[union-attr]
    assert str(parsed) == text

    document = json.loads(taken.to_json())
    created = [record["created"] for record in document["threads"] if record["name"] == name]
    assert created and created[0]["marked"] == record_of(taken, name).created.marked  # type: ignore[union-attr]
    assert leakcheck.Snapshot.from_json(taken.to_json()) == taken
    assert leakcheck.Snapshot.from_json(parsed.to_json()) == taken


HOSTILE_FILE = 'evil"\nfile\\ "name.py'
HOSTILE_MODULE = "hostile\nmodule"
HOSTILE_NAME = 'st"art\nFile "x", line 1, in y'


def hostile_starter() -> Callable[[threading.Event], threading.Thread]:
    """A function whose code has a crafted file name, module name, name and source line."""
    source = textwrap.dedent(
        """\
        def hostile(release):
            thread = threading.Thread(target=release.wait, name='hostile-thread', daemon=True)
            thread.start()
            return thread
        """
    )
    namespace: Dict[str, Any] = {"__name__": HOSTILE_MODULE, "threading": threading}
    exec(compile(source, HOSTILE_FILE, "exec"), namespace)
    function = namespace["hostile"]
    renamed = {"co_name": HOSTILE_NAME}
    if sys.version_info >= (3, 11):
        renamed["co_qualname"] = HOSTILE_NAME
    function.__code__ = function.__code__.replace(**renamed)
    function.__qualname__ = HOSTILE_NAME  # what names it before 3.11, which has no co_qualname
    return function  # type: ignore[no-any-return]


@pytest.fixture
def hostile_lines() -> Iterator[None]:
    # The source line linecache gives for the crafted file: it could pass for frame lines, unescaped.
    lines = [
        "def hostile(release):\n",
        "    x = 1\n",
        '    thread.start()  \x1b[31m\n  > File "/etc/passwd", line 1, in fake\n',
        "    return thread\n",
    ]
    linecache.cache[HOSTILE_FILE] = (sum(map(len, lines)), None, lines, HOSTILE_FILE)
    try:
        yield
    finally:
        linecache.cache.pop(HOSTILE_FILE, None)


def test_hostile_names_in_a_creation_site_are_escaped_and_round_trip(parked: Parked, hostile_lines: None) -> None:
    hostile = hostile_starter()
    with leakcheck.track_creation():
        parked.add(hostile(parked.release))
        taken = tracked_snapshot()
    info = record_of(taken, "hostile-thread")
    assert info.created is not None and info.created.blamed is not None
    blamed = info.created.blamed
    assert blamed.filename == HOSTILE_FILE
    assert blamed.function.startswith(HOSTILE_MODULE + ".") and HOSTILE_NAME in blamed.function
    assert "\x1b" in blamed.line

    text = str(taken)
    assert HOSTILE_FILE not in text and HOSTILE_NAME not in text and "\x1b" not in text
    assert "/etc/passwd" in text  # there, but only inside an escaped literal:
    assert not any(line.startswith('  > File "/etc/passwd"') for line in text.split("\n"))
    assert sum(line.startswith("  > File ") for line in text.split("\n")) == 1
    assert parse_dump(text) == taken
    assert record_of(parse_dump(text), "hostile-thread").created == info.created
    assert leakcheck.Snapshot.from_json(taken.to_json()) == taken

    # The report's summary line and hint escape it too.
    report = str(leakcheck.LeakReport(threads=[info], timeout=TIMEOUT))
    summary = report.splitlines()[1]
    assert ", created at \\" in summary and "\n" not in summary
    assert HOSTILE_NAME not in report and HOSTILE_FILE not in report


def dump_with_site(parked: Parked) -> Tuple[str, str]:
    """A one-thread dump whose thread has a creation site of several frames, the first unmarked; and its name."""
    name = "malformed-site-thread"
    with leakcheck.track_creation():
        parked.add(start_through_outer(parked.release))
        thread = parked.threads[-1]
        thread.name = name
        taken = tracked_snapshot(threads=True, tasks=False)
    only = leakcheck.Snapshot(records={"threads": [record_of(taken, name)]}, pid=taken.pid, taken_at=taken.taken_at)
    text = str(only)
    site = record_of(only, name).created
    assert site is not None and len(site.frames) >= 2 and site.marked not in (None, 0)
    return text, name


def test_a_created_at_line_without_frames_is_refused(parked: Parked) -> None:
    text, _ = dump_with_site(parked)
    head = text.split("  Created at (most recent call last):\n", 1)[0]
    broken = head + "  Created at (most recent call last):\n"
    with pytest.raises(ValueError, match="expected the frames of the creation site"):
        parse_dump(broken)
    with pytest.raises(ValueError, match="expected the frames of the creation site"):
        parse_dump(head + "  Created at (most recent call last):\n  garbage\n")


def test_two_marked_frames_are_refused(parked: Parked) -> None:
    text, _ = dump_with_site(parked)
    head, rest = text.split("  Created at (most recent call last):\n", 1)
    assert rest.startswith("    File ")
    broken = head + "  Created at (most recent call last):\n" + "  > " + rest[4:]
    with pytest.raises(ValueError, match="marks two frames"):
        parse_dump(broken)


def test_a_dump_with_one_marked_frame_moved_still_reads(parked: Parked) -> None:
    # Control for the test above: the mark is read where it is, and only once.
    text, name = dump_with_site(parked)
    head, rest = text.split("  Created at (most recent call last):\n", 1)
    rest = rest.replace("  > File ", "    File ", 1)
    moved = head + "  Created at (most recent call last):\n" + "  > " + rest[4:]
    site = record_of(parse_dump(moved), name).created
    assert site is not None and site.marked == 0
    unmarked = record_of(parse_dump(head + "  Created at (most recent call last):\n" + rest), name).created
    assert unmarked is not None and unmarked.marked is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda site: site.update(marked=len(site["frames"])), "marks frame"),
        (lambda site: site.update(marked=10**30), "out of range"),
        (lambda site: site.update(marked=-1), "out of range"),
        (lambda site: site.update(marked="0"), "created.marked is str"),
        (lambda site: site.update(marked=True), "created.marked is bool"),
        (lambda site: site.update(marked=0.0), "created.marked is float"),
        (lambda site: site.pop("marked"), "created has no 'marked'"),
        (lambda site: site.pop("frames"), "created has no 'frames'"),
        (lambda site: site.update(frames="nope"), "created.frames is str"),
        (lambda site: site["frames"][0].pop("lineno"), r"created\.frames\[0\] has no 'lineno'"),
        (lambda site: site.update(frames=[], marked=0), "at least one frame"),
        (lambda site: site.update(frames=[], marked=None), "at least one frame"),
    ],
)
def test_a_malformed_json_creation_site_is_refused(parked: Parked, change: Callable[[Any], Any], message: str) -> None:
    text, name = dump_with_site(parked)
    document = json.loads(parse_dump(text).to_json())
    [record] = [record for record in document["threads"] if record["name"] == name]
    change(record["created"])
    with pytest.raises(ValueError, match=message):
        leakcheck.Snapshot.from_json(json.dumps(document))


@pytest.mark.parametrize("created", [5, "site", [], {"frames": []}])
def test_a_json_creation_site_of_the_wrong_shape_is_refused(parked: Parked, created: Any) -> None:
    text, name = dump_with_site(parked)
    document = json.loads(parse_dump(text).to_json())
    [record] = [record for record in document["threads"] if record["name"] == name]
    record["created"] = created
    with pytest.raises(ValueError, match=r"threads\[0\]\.created"):
        leakcheck.Snapshot.from_json(json.dumps(document))


def test_a_creation_site_cannot_mark_a_frame_it_does_not_have() -> None:
    frame = Frame("/x/app.py", 3, "app.main", "start()")
    with pytest.raises(ValueError, match="cannot mark frame 1"):
        CreationSite((frame,), 1)
    with pytest.raises(ValueError, match="cannot mark frame -1"):
        CreationSite((frame,), -1)
    assert CreationSite((frame,), 0).blamed == frame
    assert CreationSite((frame,), None).blamed is None
    # Nor have no frame at all: the text dump could not write it back (a bare "Created at" line).
    with pytest.raises(ValueError, match="at least one frame"):
        CreationSite((), None)


# -- 6. the switch


def patch_points() -> List[Tuple[Any, str]]:
    """Every attribute tracking replaces while it is on, where it exists on this Python."""
    import _posixsubprocess  # type: ignore[import-not-found,unused-ignore]
    import asyncio.base_events

    points: List[Tuple[Any, str]] = [
        (threading.Thread, "start"),
        (_thread, "start_new_thread"),
        (_thread, "start_new"),
        (asyncio.base_events.BaseEventLoop, "create_task"),
        (asyncio.base_events.BaseEventLoop, "call_exception_handler"),
        (multiprocessing.popen_fork.Popen, "_launch"),
        (os, "posix_spawn"),
        (os, "posix_spawnp"),
        (_posixsubprocess, "fork_exec"),
        (subprocess, "_fork_exec"),
        (concurrent.futures.ThreadPoolExecutor, "submit"),
    ]
    return [(target, name) for target, name in points if hasattr(target, name)]


def originals() -> List[Tuple[Any, str, Any]]:
    return [(target, name, getattr(target, name)) for target, name in patch_points()]


def point_name(target: Any, name: str) -> str:
    return f"{getattr(target, '__name__', target)}.{name}"


def changed(saved: List[Tuple[Any, str, Any]]) -> List[str]:
    return [point_name(target, name) for target, name, original in saved if getattr(target, name) is not original]


def test_tracking_patches_every_hook_and_stopping_restores_each_exactly() -> None:
    saved = originals()
    names = {point_name(target, name) for target, name, _ in saved}
    assert {"Thread.start", "_thread.start_new_thread", "BaseEventLoop.create_task", "Popen._launch"} <= names
    assert "BaseEventLoop.call_exception_handler" in names and "_posixsubprocess.fork_exec" in names
    assert "os.posix_spawn" in names and "ThreadPoolExecutor.submit" in names
    if sys.version_info >= (3, 13):
        assert "subprocess._fork_exec" in names
    own = {point_name(target, name): name in vars(target) for target, name, _ in saved}

    leakcheck.track_creation()
    try:
        assert leakcheck.is_tracking_creation()
        assert sorted(changed(saved)) == sorted(names)
    finally:
        leakcheck.stop_tracking_creation()
    assert changed(saved) == []
    assert {point_name(target, name): name in vars(target) for target, name, _ in saved} == own
    assert not leakcheck.is_tracking_creation()


def test_a_with_block_restores_every_hook_exactly_even_when_it_raises() -> None:
    saved = originals()
    with pytest.raises(KeyError), leakcheck.track_creation() as tracking:
        assert isinstance(tracking, leakcheck.TrackCreation)
        assert "on" in repr(tracking)
        assert len(changed(saved)) == len(saved)
        raise KeyError("out of the block")
    assert changed(saved) == []
    assert "off" in repr(tracking)


IMPORT_PATCHES_NOTHING = r"""
import sys
meta_path, hooks = list(sys.meta_path), (sys.gettrace(), sys.getprofile())
import threading, _thread, os, subprocess, _posixsubprocess

import multiprocessing.popen_fork
points = [(threading.Thread, "start"), (_thread, "start_new_thread"), (_thread, "start_new"),
          (multiprocessing.popen_fork.Popen, "_launch"), (os, "posix_spawn"), (os, "posix_spawnp"),
          (_posixsubprocess, "fork_exec"), (subprocess, "_fork_exec")]
import concurrent.futures
points.append((concurrent.futures.ThreadPoolExecutor, "submit"))
if ASYNCIO_FIRST:
    import asyncio, asyncio.base_events
    points += [(asyncio.base_events.BaseEventLoop, "create_task"),
               (asyncio.base_events.BaseEventLoop, "call_exception_handler")]
saved = [(target, name, getattr(target, name)) for target, name in points if hasattr(target, name)]

import leakcheck

def changed():
    return [name for target, name, original in saved if getattr(target, name) is not original]

assert changed() == [], changed()
assert ASYNCIO_FIRST or "asyncio" not in sys.modules, "importing leakcheck imported asyncio"
import leakcheck.kinds.registry
leakcheck.kinds.registry.kinds()  # every kind's module, loaded
assert changed() == [], changed()
assert list(sys.meta_path) == meta_path and (sys.gettrace(), sys.getprofile()) == hooks
assert threading.active_count() == 1
assert not leakcheck.is_tracking_creation()

leakcheck.track_creation()
assert len(changed()) == len(saved), changed()
# Asked for by name, tracking hooks asyncio at once, imported or not.
import asyncio.base_events
assert hasattr(asyncio.base_events.BaseEventLoop.create_task, "__wrapped__")
leakcheck.stop_tracking_creation()
assert changed() == [], changed()
assert not hasattr(asyncio.base_events.BaseEventLoop.create_task, "__wrapped__")
print("patched nothing")
"""


@pytest.mark.parametrize("asyncio_first", [False, True])
def test_importing_leakcheck_patches_nothing(asyncio_first: bool) -> None:
    result = helpers.run_python(IMPORT_PATCHES_NOTHING.replace("ASYNCIO_FIRST", str(asyncio_first)))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "patched nothing"


HOOKS_WAIT_FOR_IMPORTS = r"""
import sys
import leakcheck
from leakcheck.kinds import tracking

WAITED_FOR = ("asyncio", "concurrent.futures.thread", "subprocess", "multiprocessing")

def imported():
    return [name for name in WAITED_FOR if name in sys.modules]

# Held on, as the pytest plugin holds it for a run: checks come and go.
tracking.acquire()
with leakcheck.no_leaks(track_creation=True):
    pass
assert imported() == [], imported()

import asyncio

async def park():
    await asyncio.Event().wait()

def start_parked():
    return asyncio.get_running_loop().create_task(park(), name="parked-task")

async def main():
    try:
        async with leakcheck.no_leaks(track_creation=True, timeout=0.05):  # hooks asyncio as it starts
            start_parked()
    except leakcheck.LeakError as error:
        return str(error)
    return "no report"

report = asyncio.run(main())
assert "task 'parked-task'" in report and "created at __main__.start_parked" in report, report
print("hooked once imported")
"""


def test_a_check_hooks_a_module_only_once_the_program_has_imported_it() -> None:
    # Importing asyncio only to hook it would cost every check a census of tasks in runs that never use it.
    result = helpers.run_python(HOOKS_WAIT_FOR_IMPORTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hooked once imported"


def test_a_tracked_snapshot_collected_while_another_thread_holds_the_lock_does_not_wait(
    request: pytest.FixtureRequest,
) -> None:
    # The collector runs a finalizer on whatever thread allocates, perhaps one inside an import that the
    # lock's holder waits for: the finalizer gives tracking back without waiting, and the next user of
    # the lock takes it back for it.
    from leakcheck.kinds import tracking

    assert not leakcheck.is_tracking_creation()
    dropped: List[Any] = [leakcheck.snapshot(threads=True, tasks=False, track_creation=True)]
    dropped.append(dropped)  # a cycle: only the collector frees it, and only the collection below
    assert leakcheck.is_tracking_creation()
    held, let_go = threading.Event(), threading.Event()
    gc.disable()
    request.addfinalizer(gc.enable)

    def hold_the_lock() -> None:
        with tracking._lock:
            held.set()
            let_go.wait(4 * helpers.JOIN_TIMEOUT)  # longer than the join below: set at the end, whatever happens

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    try:
        assert held.wait(helpers.JOIN_TIMEOUT)
        del dropped
        collecting = threading.Thread(target=gc.collect)
        collecting.start()
        collecting.join(helpers.JOIN_TIMEOUT)
        assert not collecting.is_alive(), "the finalizer waited for the lock"
    finally:
        let_go.set()
        holder.join(helpers.JOIN_TIMEOUT)
    with leakcheck.track_creation():  # the next user of the lock gives back the finalizer's lease
        pass
    assert not leakcheck.is_tracking_creation()


def test_plain_calls_are_counted() -> None:
    saved = originals()
    leakcheck.track_creation()
    leakcheck.track_creation()
    leakcheck.stop_tracking_creation()
    assert leakcheck.is_tracking_creation() and len(changed(saved)) == len(saved)
    leakcheck.stop_tracking_creation()
    assert not leakcheck.is_tracking_creation() and changed(saved) == []
    with pytest.raises(RuntimeError, match="matches no track_creation"):
        leakcheck.stop_tracking_creation()


def test_stop_without_a_plain_call_raises() -> None:
    with pytest.raises(RuntimeError, match="stop_tracking_creation"):
        leakcheck.stop_tracking_creation()
    with leakcheck.track_creation():
        # The block's own call is the block's, not one stop_tracking_creation() may undo.
        with pytest.raises(RuntimeError):
            leakcheck.stop_tracking_creation()
        assert leakcheck.is_tracking_creation()
    with pytest.raises(RuntimeError):
        leakcheck.stop_tracking_creation()


def test_a_snapshots_hold_is_no_plain_call_and_ends_with_the_snapshot() -> None:
    saved = originals()
    taken = leakcheck.snapshot(track_creation=True)
    try:
        assert leakcheck.is_tracking_creation()
        with pytest.raises(RuntimeError):
            leakcheck.stop_tracking_creation()
        assert leakcheck.is_tracking_creation()
    finally:
        del taken
    assert not leakcheck.is_tracking_creation()
    assert changed(saved) == []


def test_a_with_block_inside_a_plain_call_leaves_tracking_on() -> None:
    leakcheck.track_creation()
    try:
        with leakcheck.track_creation():
            assert leakcheck.is_tracking_creation()
        assert leakcheck.is_tracking_creation()
    finally:
        leakcheck.stop_tracking_creation()
    assert not leakcheck.is_tracking_creation()


def test_a_plain_call_inside_a_with_block_outlives_it() -> None:
    saved = originals()
    with leakcheck.track_creation():
        leakcheck.track_creation()
    try:
        assert leakcheck.is_tracking_creation() and len(changed(saved)) == len(saved)
    finally:
        leakcheck.stop_tracking_creation()
    assert changed(saved) == []


def test_a_tracked_block_inside_a_with_block_does_not_turn_tracking_off(parked: Parked) -> None:
    with leakcheck.track_creation():
        with no_leaks(track_creation=True, timeout=TIMEOUT):
            pass
        assert leakcheck.is_tracking_creation()
        # Still recording: a thread started now has a site.
        thread = parked.add(start_parked(parked.release))
        assert threads_kind.KIND.creation(thread) is not None
        report = leak_report(lambda: parked.add(start_parked(parked.release)))
        assert leakcheck.is_tracking_creation()
    assert_created_at(report, start_parked, "thread.start()")


def test_a_tracked_block_turns_tracking_on_for_its_code_only(parked: Parked) -> None:
    saved = originals()
    seen: List[bool] = []
    with no_leaks(track_creation=True, timeout=TIMEOUT):
        seen.append(leakcheck.is_tracking_creation())
        seen.append(len(changed(saved)) == len(saved))
    assert seen == [True, True]
    assert changed(saved) == []
    thread = parked.add(start_parked(parked.release))
    assert threads_kind.KIND.creation(thread) is None


def test_a_wrapper_added_after_ours_stays_and_ours_records_nothing_more() -> None:
    original = threading.Thread.start
    wrapped: List[str] = []
    leakcheck.track_creation()
    try:
        ours = threading.Thread.start
        assert ours is not original

        def theirs(self: threading.Thread) -> None:
            wrapped.append(self.name)
            ours(self)

        threading.Thread.start = theirs  # type: ignore[method-assign]
        before = threading.Thread(target=lambda: None, name="started-while-tracking")
        before.start()
        before.join(JOIN)
        assert threads_kind.KIND.creation(before) is not None  # control: ours records while tracking is on
    finally:
        leakcheck.stop_tracking_creation()
    try:
        assert threading.Thread.start is theirs
        after = threading.Thread(target=lambda: None, name="started-after-tracking")
        after.start()
        after.join(JOIN)
        assert wrapped == ["started-while-tracking", "started-after-tracking"]
        assert threads_kind.KIND.creation(after) is None
        assert "_leakcheck_created" not in vars(after)
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]
    # And tracking turns on and off exactly again afterwards.
    saved = originals()
    with leakcheck.track_creation():
        assert threading.Thread.start is not original
    assert changed(saved) == []


def test_our_hook_given_back_by_a_later_wrapper_records_nothing_and_goes_at_the_next_stop() -> None:
    original = threading.Thread.start
    leakcheck.track_creation()
    try:
        ours = threading.Thread.start

        def theirs(self: threading.Thread) -> None:
            ours(self)

        threading.Thread.start = theirs  # type: ignore[method-assign]
    finally:
        leakcheck.stop_tracking_creation()
    try:
        threading.Thread.start = ours  # type: ignore[method-assign]  # the other wrapper undone, LIFO-blind
        thread = threading.Thread(target=lambda: None)
        thread.start()
        thread.join(JOIN)
        assert threads_kind.KIND.creation(thread) is None
        with leakcheck.track_creation():
            thread = threading.Thread(target=lambda: None)
            thread.start()
            thread.join(JOIN)
            assert threads_kind.KIND.creation(thread) is not None
        assert threading.Thread.start is original
    finally:
        threading.Thread.start = original  # type: ignore[method-assign]


def test_a_track_creation_undone_by_stop_releases_nothing_more() -> None:
    stale = leakcheck.track_creation()
    leakcheck.stop_tracking_creation()
    with no_leaks(track_creation=True, timeout=TIMEOUT):
        with stale:
            pass
        still_on = leakcheck.is_tracking_creation()
    assert still_on


def test_a_task_constructed_directly_has_no_creation_site() -> None:
    # A documented limit: only the loop's create_task() is hooked, not asyncio.Task(...) itself.
    async def main() -> str:
        release = asyncio.Event()
        spawned: List[asyncio.Task[None]] = []
        try:
            with pytest.raises(LeakError) as caught:
                async with no_leaks(track_creation=True, timeout=TIMEOUT):
                    spawned.append(asyncio.Task(park_task(release)))
        finally:
            release.set()
            await asyncio.gather(*spawned)
        return str(caught.value)

    report = asyncio.run(main())
    assert f"in {MODULE}.park_task (" in report  # still blamed, as without tracking
    assert "created at" not in report and "Created at" not in report


# -- 7. LEAKCHECK_TRACK


def test_leakcheck_track_1_makes_a_plain_block_track(monkeypatch: pytest.MonkeyPatch, parked: Parked) -> None:
    monkeypatch.setenv("LEAKCHECK_TRACK", "1")
    with pytest.raises(LeakError) as caught, no_leaks(timeout=TIMEOUT):
        assert leakcheck.is_tracking_creation()
        parked.add(start_parked(parked.release))
    assert_created_at(str(caught.value), start_parked, "thread.start()")


@pytest.mark.parametrize("value", ["0", "no", "OFF", " false "])
def test_leakcheck_track_0_turns_tracking_off_for_a_block(
    monkeypatch: pytest.MonkeyPatch, parked: Parked, value: str
) -> None:
    monkeypatch.setenv("LEAKCHECK_TRACK", value)
    with leakcheck.track_creation():
        with pytest.raises(LeakError) as caught, no_leaks(timeout=TIMEOUT):
            parked.add(start_parked(parked.release))
        # An explicit option wins over the environment.
        report = leak_report(lambda: parked.add(start_parked(parked.release)))
    assert str(caught.value).startswith("leakcheck: 1 leaked thread ")
    assert "created at" not in str(caught.value) and "Created at" not in str(caught.value)
    assert_created_at(report, start_parked, "thread.start()")


def test_a_bad_leakcheck_track_is_refused_at_block_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LEAKCHECK_TRACK", "maybe")
    ran: List[bool] = []
    check = no_leaks(timeout=TIMEOUT)  # options given at the call are valid: the environment is read at entry
    with pytest.raises(ValueError, match="LEAKCHECK_TRACK") as caught, check:
        ran.append(True)
    assert "maybe" in str(caught.value)
    assert ran == []
    with pytest.raises(ValueError, match="LEAKCHECK_TRACK"):
        leakcheck.snapshot()
    with no_leaks(track_creation=False, timeout=TIMEOUT):  # an explicit option never reads it
        ran.append(True)
    assert ran == [True]


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_leakcheck_track_is_unset(monkeypatch: pytest.MonkeyPatch, parked: Parked, value: str) -> None:
    monkeypatch.setenv("LEAKCHECK_TRACK", value)
    with pytest.raises(LeakError) as caught, no_leaks(timeout=TIMEOUT):
        assert not leakcheck.is_tracking_creation()
        parked.add(start_parked(parked.release))
    assert "created at" not in str(caught.value)
    with leakcheck.track_creation():  # unset: tracking on right now decides
        report = leak_report(lambda: parked.add(start_parked(parked.release)), track_creation=None)
    assert_created_at(report, start_parked, "thread.start()")


def test_leakcheck_track_1_makes_snapshot_and_find_leaks_track(monkeypatch: pytest.MonkeyPatch, parked: Parked) -> None:
    monkeypatch.setenv("LEAKCHECK_TRACK", "1")
    baseline = leakcheck.snapshot()
    try:
        parked.add(start_parked(parked.release))
        report = str(leakcheck.find_leaks(baseline, timeout=TIMEOUT))
    finally:
        del baseline
    assert_created_at(report, start_parked, "thread.start()")


# -- 8. ignore_created_by


def test_ignore_created_by_ignores_what_the_named_function_started(parked: Parked) -> None:
    with no_leaks(track_creation=True, timeout=TIMEOUT, ignore=[leakcheck.ignore_created_by(f"{MODULE}.start_parked")]):
        parked.add(start_parked(parked.release))
    # Any frame of the creation stack, not only the marked one.
    with no_leaks(
        track_creation=True, timeout=TIMEOUT, ignore=[leakcheck.ignore_created_by(f"{MODULE}.start_through_outer")]
    ):
        parked.add(start_through_outer(parked.release))


def test_ignore_created_by_does_not_ignore_what_another_function_started(parked: Parked) -> None:
    def both() -> None:
        parked.add(start_parked(parked.release))
        parked.add(start_other(parked.release))

    report = leak_report(both, ignore=[leakcheck.ignore_created_by(f"{MODULE}.start_parked")])
    assert report.startswith("leakcheck: 1 leaked thread ")
    assert_created_at(report, start_other, "thread.start()")
    assert f"{MODULE}.start_parked" not in report


def test_ignore_created_by_never_ignores_a_record_without_a_creation_site(parked: Parked) -> None:
    matcher = leakcheck.ignore_created_by(f"{MODULE}.start_parked")
    baseline = leakcheck.snapshot()
    parked.add(start_parked(parked.release, "started-untracked"))  # tracking is off: no site
    report = leakcheck.find_leaks(baseline, track_creation=True, timeout=TIMEOUT, ignore=[matcher])
    [info] = [info for info in report.threads if info.name == "started-untracked"]
    assert info.created is None
    assert not matcher(info)
    site = CreationSite((Frame(HERE, 1, f"{MODULE}.start_parked", ""),), 0)
    assert matcher(info.with_created(site))  # control: the same record with a site is ignored


@pytest.mark.parametrize("bad", [42, b"mod.fn", None, ["mod.fn"]])
def test_ignore_created_by_takes_a_str(bad: Any) -> None:
    with pytest.raises(TypeError, match="ignore_created_by"):
        leakcheck.ignore_created_by(bad)


@pytest.mark.parametrize("bad", ["start_parked", "", " mod.fn", "mod.fn "])
def test_ignore_created_by_takes_a_module_qualified_name(bad: str) -> None:
    with pytest.raises(ValueError, match="ignore_created_by"):
        leakcheck.ignore_created_by(bad)


# -- 9. the options' values


def test_track_creation_options_take_only_a_bool() -> None:
    with pytest.raises(TypeError, match="track_creation"):
        no_leaks(track_creation="yes")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        no_leaks(track_creation=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        leakcheck.snapshot(track_creation=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        leakcheck.snapshot(track_creation="yes")  # type: ignore[arg-type]
    baseline = leakcheck.snapshot()
    with pytest.raises(TypeError, match="track_creation"):
        leakcheck.find_leaks(baseline, track_creation=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        leakcheck.find_leaks(baseline, track_creation=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        no_leaks(track_creation=None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="track_creation"):
        leakcheck.snapshot(track_creation=None)  # type: ignore[arg-type]


def test_find_leaks_with_a_tracked_baseline_names_the_creator(parked: Parked) -> None:
    baseline = leakcheck.snapshot(track_creation=True)
    try:
        parked.add(start_parked(parked.release))
        report = leakcheck.find_leaks(baseline, timeout=TIMEOUT)
    finally:
        del baseline
    assert_created_at(str(report), start_parked, "thread.start()")
    assert not leakcheck.is_tracking_creation()


def test_find_leaks_track_creation_false_shows_no_site(parked: Parked) -> None:
    baseline = leakcheck.snapshot(track_creation=True)
    try:
        parked.add(start_parked(parked.release))
        report = str(leakcheck.find_leaks(baseline, timeout=TIMEOUT, track_creation=False))
    finally:
        del baseline
    assert report.startswith("leakcheck: 1 leaked thread ")
    assert "created at" not in report and "Created at" not in report


# -- 10. nothing kept


class Local:
    """Something the creating function holds in a local variable."""


def start_holding_a_local(release: threading.Event) -> Tuple[weakref.ref[Local], threading.Thread]:
    local = Local()
    thread = threading.Thread(target=release.wait, daemon=True)
    thread.start()
    return weakref.ref(local), thread


def test_a_creation_site_keeps_no_frame_alive(parked: Parked) -> None:
    with leakcheck.track_creation():
        ref, thread = start_holding_a_local(parked.release)
        parked.add(thread)
        created = threads_kind.KIND.creation(thread)
        assert created is not None and thread.is_alive()
        gc.collect()
        assert ref() is None, gc.get_referrers(ref())
        site = created.site()  # formatted only now, from code objects: still right
    assert site.blamed is not None and site.blamed.function == f"{MODULE}.start_holding_a_local"
    assert site.blamed.line == "thread.start()"


BATCH = 1000


def test_the_task_table_stays_bounded() -> None:
    async def nothing() -> None:
        pass

    async def main() -> int:
        most = 0
        for _ in range(5):
            # A batch alive at once, so that the tasks have distinct ids: one that is freed at once gives its
            # address, and so its entry, to the next.
            batch = [asyncio.create_task(nothing()) for _ in range(BATCH)]
            most = max(most, len(tasks_kind._tracked))
            for task in batch:  # not gather(), whose result keeps the batch a while longer
                await task
            del batch, task
            gc.collect()
        return most

    # The table is the process's: an earlier test may have left its pruning point higher.
    bound = max(2 * tasks_kind._PRUNE_FLOOR, tasks_kind._prune_at) + 16
    with leakcheck.track_creation():
        most = asyncio.run(main())
    assert BATCH <= most <= bound, most  # it held a whole batch (they were tracked), and no more than the bound
    assert len(tasks_kind._tracked) <= bound


# -- 11. the hint


def test_the_hint_suggests_ignore_created_by_for_a_default_name(parked: Parked) -> None:
    report = leak_report(lambda: parked.add(start_parked(parked.release)))
    hints = report.split("\nWhat to do:\n", 1)[1]
    assert f"no_leaks(ignore=[ignore_created_by('{MODULE}.start_parked')])" in hints
    assert f"leakcheck_ignore = created:{MODULE}.start_parked" in hints
    assert f"leakcheck.ignore_globally(leakcheck.ignore_created_by('{MODULE}.start_parked'))" in hints


def test_the_hint_keeps_a_name_of_its_own(parked: Parked) -> None:
    report = leak_report(lambda: parked.add(start_parked(parked.release, "my-worker")))
    hints = report.split("\nWhat to do:\n", 1)[1]
    assert "ignore_name('^my-worker$')" in hints
    assert "ignore_created_by" not in hints
    assert_created_at(report, start_parked, "thread.start()")


def test_the_hint_without_tracking_falls_back_to_the_top_function(parked: Parked) -> None:
    report = leak_report(lambda: parked.add(start_parked(parked.release)), track_creation=False)
    hints = report.split("\nWhat to do:\n", 1)[1]
    assert "ignore_created_by" not in hints and "ignore_top_function(" in hints


# -- 12. keyword assertions search the live stack only


def start_for_keywords(release: threading.Event) -> threading.Thread:
    thread = threading.Thread(target=release.wait, name="keyword-thread", daemon=True)
    thread.start()
    return thread


def test_keyword_assertions_do_not_search_creation_stacks(parked: Parked) -> None:
    needle = start_for_keywords.__name__
    with leakcheck.track_creation():
        parked.add(start_for_keywords(parked.release))
        taken = tracked_snapshot()
        [info] = [info for info in taken.threads if info.name == "keyword-thread"]
        assert info.created is not None and needle in info.created.text  # control: the creator is recorded
        assert [found.name for found in leakcheck.find_stacks("keyword-thread")] == ["keyword-thread"]
        assert leakcheck.find_stacks(needle) == []
        assert leakcheck.find_stacks(needle, source=taken) == []
        assert [found.name for found in leakcheck.find_stacks("keyword-thread", source=taken)] == ["keyword-thread"]
        leakcheck.assert_no_stack_match(needle)
        with no_leaks(track_creation=True, timeout=TIMEOUT, forbid=[needle]):
            pass
