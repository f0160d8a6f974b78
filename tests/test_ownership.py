"""Ownership with creation tracking: which checked block blames which thread or task (issue 12).

With tracking on, a block blames what was started inside it and what that
started in turn, plus anything tracking did not see start (as without
tracking).  What code outside every block starts is nobody's.  Each scenario
is synchronised with events and barriers, so the interleaving it names is the
one that runs; threads park on an event that the test sets at its end, tasks
are cancelled by the ``asyncio.run`` that made them.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import functools
import gc
import logging
import queue
import sys
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Deque, Dict, Iterator, List, Optional, Tuple

import pytest
from helpers import JOIN_TIMEOUT, ParkedThreads, loop_in_thread, parked_threads, run_python

import leakcheck
from leakcheck import LeakError, ignore_name, no_leaks

LEAK = 0.2
"""The grace period of checks that are expected to find a leak."""

_ORIGINAL_START = threading.Thread.start
_ORIGINAL_START_NEW_THREAD = _thread.start_new_thread
_ORIGINAL_SUBMIT = ThreadPoolExecutor.submit
_ORIGINAL_CREATE_TASK = asyncio.BaseEventLoop.create_task
_ORIGINAL_CALL_EXCEPTION_HANDLER = asyncio.BaseEventLoop.call_exception_handler


@pytest.fixture(autouse=True)
def tracking_is_off_afterwards() -> Iterator[None]:
    yield
    assert not leakcheck.is_tracking_creation(), "the test left creation tracking on"
    # Every hook undone exactly.
    assert threading.Thread.start is _ORIGINAL_START
    assert _thread.start_new_thread is _ORIGINAL_START_NEW_THREAD
    assert ThreadPoolExecutor.submit is _ORIGINAL_SUBMIT
    assert asyncio.BaseEventLoop.create_task is _ORIGINAL_CREATE_TASK
    assert asyncio.BaseEventLoop.call_exception_handler is _ORIGINAL_CALL_EXCEPTION_HANDLER


@pytest.fixture
def parked() -> Iterator[ParkedThreads]:
    with parked_threads() as threads:
        yield threads


def names(error: BaseException) -> List[str]:
    """The names of the threads and tasks a LeakError reports."""
    assert isinstance(error, LeakError), repr(error)
    report = error.args[0]
    assert isinstance(report, str)
    return [line for line in report.splitlines() if line.startswith("  - ")]


def run_threads(*targets: Callable[[], None]) -> None:
    """Run each target in a thread of its own, all at once; re-raise the first failure.

    The targets start together once every thread runs: no block sees another scenario thread start.
    """
    failures: List[BaseException] = []
    ready = threading.Barrier(len(targets), timeout=JOIN_TIMEOUT)

    def guarded(target: Callable[[], None]) -> None:
        try:
            ready.wait()
            target()
        except BaseException as failure:
            failures.append(failure)

    threads = [
        threading.Thread(target=guarded, args=(target,), name=f"scenario-{i}") for i, target in enumerate(targets)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT * 4)
    assert not any(thread.is_alive() for thread in threads), "a scenario thread hung"
    if failures:
        raise failures[0]


def checked(track: bool, outcome: Dict[str, Optional[BaseException]], key: str) -> Any:
    """A context manager: a block with ``track_creation=track`` whose LeakError lands in ``outcome[key]``."""

    class Block:
        def __enter__(self) -> None:
            self.check = no_leaks(track_creation=track, timeout=LEAK)
            self.check.__enter__()

        def __exit__(self, *exc: Any) -> bool:
            try:
                self.check.__exit__(*exc)
            except LeakError as error:
                outcome[key] = error
                return True
            outcome.setdefault(key, None)
            return False

    return Block()


# -- functions whose names the reports must show


def unrelated_server(release: threading.Event) -> None:
    release.wait()


def churned_thread(done: threading.Event) -> None:
    done.wait()


def short_job() -> None:
    pass


def own_leak(release: threading.Event) -> None:
    release.wait()


def grandchild_waits(release: threading.Event) -> None:
    release.wait()


def started_by_a_thread_outside(release: threading.Event) -> None:
    release.wait()


def untracked_start(release: threading.Event) -> None:
    release.wait()


async def parked_task(release: asyncio.Event) -> None:
    await release.wait()


async def other_block_task(release: asyncio.Event) -> None:
    await release.wait()


# -- 1. the stress scenario: concurrent blocks, and a thread started outside them


@pytest.mark.parametrize("third_started_tracked", [False, True], ids=["third-untracked", "third-tracked"])
def test_concurrent_blocks_never_blame_a_thread_started_outside_them(
    parked: ParkedThreads, third_started_tracked: bool
) -> None:
    opened = threading.Barrier(3, timeout=JOIN_TIMEOUT)
    started = threading.Event()
    outcome: Dict[str, Optional[BaseException]] = {}

    def block(key: str) -> None:
        with checked(True, outcome, key):
            opened.wait()  # both blocks are open ...
            assert started.wait(JOIN_TIMEOUT)  # ... and stay open until the unrelated thread runs

    def third() -> None:
        opened.wait()
        parked.start(unrelated_server, name="unrelated-server")
        started.set()

    if third_started_tracked:  # the third thread itself started while tracking was on, outside every block
        with leakcheck.track_creation():
            run_threads(lambda: block("a"), lambda: block("b"), third)
    else:
        run_threads(lambda: block("a"), lambda: block("b"), third)
    assert outcome == {"a": None, "b": None}
    assert parked.threads[0].is_alive()


def test_concurrent_blocks_without_tracking_blame_a_thread_started_outside_them(parked: ParkedThreads) -> None:
    """The documented behaviour without tracking: concurrent checks can blame each other's threads."""
    opened = threading.Barrier(3, timeout=JOIN_TIMEOUT)
    started = threading.Event()
    outcome: Dict[str, Optional[BaseException]] = {}

    def block(key: str) -> None:
        with checked(False, outcome, key):
            opened.wait()
            assert started.wait(JOIN_TIMEOUT)

    def third() -> None:
        opened.wait()
        parked.start(unrelated_server, name="unrelated-server")
        started.set()

    run_threads(lambda: block("a"), lambda: block("b"), third)
    errors = [error for error in outcome.values() if error is not None]
    assert errors, "no block blamed the unrelated thread"
    for error in errors:
        reported = names(error)
        assert len(reported) == 1, reported
        assert reported[0].startswith(f"  - thread 'unrelated-server' in {__name__}.unrelated_server (")
        assert "Created at" not in str(error)


def test_stress_concurrent_blocks_blame_only_their_own_threads(parked: ParkedThreads) -> None:
    workers, blocks = 8, 30
    requests: queue.Queue[Optional[int]] = queue.Queue()
    all_leaked = threading.Barrier(workers, timeout=JOIN_TIMEOUT)
    failures: List[Tuple[int, int, BaseException]] = []
    final: Dict[int, Optional[BaseException]] = {}

    def churn() -> None:
        # Unrelated threads start and end all the time, outside every block; a few are always alive.
        live: Deque[Tuple[threading.Thread, threading.Event]] = deque()
        try:
            while True:
                item = requests.get()
                if item is None:
                    break
                done = threading.Event()
                thread = threading.Thread(target=churned_thread, args=(done,), name="churned", daemon=True)
                thread.start()
                live.append((thread, done))
                if len(live) > 4:
                    oldest, its_done = live.popleft()
                    its_done.set()
                    oldest.join(JOIN_TIMEOUT)
        finally:
            for thread, done in live:
                done.set()
                thread.join(JOIN_TIMEOUT)

    def worker(index: int) -> None:
        for number in range(blocks):
            try:
                with no_leaks(track_creation=True, timeout=LEAK):
                    requests.put(number)
                    own = threading.Thread(target=short_job)
                    own.start()
                    own.join()
                    requests.put(number)
            except BaseException as failure:
                failures.append((index, number, failure))
        # Last, every worker leaks a thread of its own while the others' leaks are alive too.
        try:
            with no_leaks(track_creation=True, timeout=LEAK):
                parked.start(own_leak, name=f"own-leak-{index}")
                requests.put(-1)
                all_leaked.wait()
        except LeakError as error:
            final[index] = error
        else:
            final[index] = None

    churner = threading.Thread(target=churn, name="churner")
    churner.start()
    try:
        run_threads(*(functools.partial(worker, index) for index in range(workers)))
    finally:
        requests.put(None)
        churner.join(JOIN_TIMEOUT * 4)
    assert not churner.is_alive()
    assert not failures, f"{len(failures)} of {workers * blocks} blocks failed; the first: {failures[0][2]}"
    for index in range(workers):
        error = final[index]
        assert error is not None, f"worker {index}'s block did not blame its own leaked thread"
        reported = names(error)
        assert len(reported) == 1, reported
        assert f"thread 'own-leak-{index}' in {__name__}.own_leak" in reported[0]
        assert isinstance(error, LeakError)
        assert [info.name for info in error.report.threads] == [f"own-leak-{index}"]


# -- 2. transitive ownership


def _start_grandchild(parked: ParkedThreads) -> None:
    grandchild = threading.Thread(target=grandchild_waits, args=(parked.release_event,), name="grandchild")
    parked.threads.append(grandchild)
    grandchild.start()


def test_a_grandchild_thread_is_blamed_after_its_parent_ended(parked: ParkedThreads) -> None:
    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        parent = threading.Thread(target=_start_grandchild, args=(parked,), name="parent")
        parent.start()
        parent.join()
        assert not parent.is_alive()
    reported = names(caught.value)
    assert len(reported) == 1
    assert f"thread 'grandchild' in {__name__}.grandchild_waits" in reported[0]
    assert f"created at {__name__}._start_grandchild" in reported[0]


def test_a_grandchild_thread_started_outside_the_block_after_a_barrier_is_still_the_blocks(
    parked: ParkedThreads,
) -> None:
    """The parent, started in the block, starts its child after the block's code has ended: still the block's."""
    go = threading.Event()
    child_started = threading.Event()

    def parent() -> None:
        assert go.wait(JOIN_TIMEOUT)
        _start_grandchild(parked)
        child_started.set()

    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        thread = threading.Thread(target=parent, name="parent")
        thread.start()
        go.set()
        assert child_started.wait(JOIN_TIMEOUT)
        thread.join()
    assert f"in {__name__}.grandchild_waits" in names(caught.value)[0]


def _thread_from_a_task(parked: ParkedThreads) -> None:
    thread = threading.Thread(target=grandchild_waits, args=(parked.release_event,), name="from-a-task")
    parked.threads.append(thread)
    thread.start()


@pytest.mark.parametrize("how", ["thread-in-task", "to_thread"])
def test_a_thread_started_by_a_task_of_the_block_is_blamed(parked: ParkedThreads, how: str) -> None:
    async def starts_a_thread() -> None:
        if how == "to_thread":
            await asyncio.to_thread(_thread_from_a_task, parked)
        else:
            _thread_from_a_task(parked)

    async def main() -> None:
        await asyncio.create_task(starts_a_thread())

    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        asyncio.run(main())
    reported = names(caught.value)
    assert len(reported) == 1, reported
    assert f"thread 'from-a-task' in {__name__}.grandchild_waits" in reported[0]
    assert f"created at {__name__}._thread_from_a_task" in reported[0]


def test_a_thread_started_by_a_task_inside_async_with_is_blamed(parked: ParkedThreads) -> None:
    async def main() -> None:
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                await asyncio.create_task(asyncio.to_thread(_thread_from_a_task, parked))
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"in {__name__}.grandchild_waits" in reported[0]

    asyncio.run(main())


# -- 3. concurrent blocks in tasks of one loop


def _leak_a_task(release: asyncio.Event, keep: List[Any]) -> None:
    keep.append(asyncio.get_running_loop().create_task(parked_task(release), name="leaked-by-a"))


@pytest.mark.parametrize("track", [True, False])
def test_concurrent_blocks_in_tasks_of_one_loop(track: bool) -> None:
    outcome: Dict[str, Optional[BaseException]] = {}

    async def main() -> None:
        release = asyncio.Event()
        keep: List[Any] = []
        a_open, b_open, leaked, a_done = asyncio.Event(), asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def a() -> None:
            try:
                async with checked_async(track, outcome, "a"):
                    a_open.set()
                    await b_open.wait()
                    _leak_a_task(release, keep)
                    leaked.set()
                    # Open until B's block has closed (B waits for a_done only after that).
                    await asyncio.sleep(0)
                    await b_closed.wait()
            finally:
                a_done.set()

        b_closed = asyncio.Event()

        async def b() -> None:
            async with checked_async(track, outcome, "b"):
                b_open.set()
                await leaked.wait()
                # B makes a task of its own that ends inside the block: nothing to blame.
                await asyncio.create_task(asyncio.sleep(0))
            b_closed.set()
            await a_done.wait()  # B's task outlives A's block, which must not blame it either

        task_a = asyncio.create_task(a())
        await a_open.wait()
        task_b = asyncio.create_task(b())  # created while A's block is open, outside it
        await asyncio.gather(task_a, task_b)
        release.set()
        await asyncio.gather(*keep)

    asyncio.run(main())
    if track:
        assert outcome["b"] is None
        error = outcome["a"]
        assert error is not None, "A's block did not blame its own task"
        reported = names(error)
        assert len(reported) == 1, reported
        assert f"task 'leaked-by-a' in {__name__}.parked_task" in reported[0]
        assert f"created at {__name__}._leak_a_task" in reported[0]
    else:
        # Without tracking B's block, which closes first, takes A's task for its own leak.
        error = outcome["b"]
        assert error is not None
        assert "task 'leaked-by-a'" in names(error)[0]


def checked_async(track: bool, outcome: Dict[str, Optional[BaseException]], key: str) -> Any:
    """As :func:`checked`, for ``async with``."""

    class Block:
        async def __aenter__(self) -> None:
            self.check = no_leaks(track_creation=track, timeout=LEAK)
            await self.check.__aenter__()

        async def __aexit__(self, *exc: Any) -> bool:
            try:
                await self.check.__aexit__(*exc)
            except LeakError as error:
                outcome[key] = error
                return True
            outcome.setdefault(key, None)
            return False

    return Block()


def _leave_on_loop(name: str, keep: List[Any]) -> None:
    keep.append(asyncio.get_running_loop().create_task(parked_task(asyncio.Event()), name=name))


async def _leaves_a_task(name: str, keep: List[Any]) -> None:
    _leave_on_loop(name, keep)


def test_a_task_a_block_sends_to_a_loop_in_another_thread_is_the_blocks() -> None:
    """``run_coroutine_threadsafe`` carries the block's context to the loop's thread; another caller's does not."""
    keep: List[Any] = []
    go, sent = threading.Event(), threading.Event()

    with loop_in_thread() as loop:

        def outsider() -> None:
            assert go.wait(JOIN_TIMEOUT)
            asyncio.run_coroutine_threadsafe(_leaves_a_task("left-by-an-outsider", keep), loop).result(JOIN_TIMEOUT)
            sent.set()

        thread = threading.Thread(target=outsider)
        thread.start()
        try:
            with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
                asyncio.run_coroutine_threadsafe(_leaves_a_task("left-by-the-block", keep), loop).result(JOIN_TIMEOUT)
                go.set()
                assert sent.wait(JOIN_TIMEOUT)
        finally:
            go.set()
            thread.join(JOIN_TIMEOUT)
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"task 'left-by-the-block' in {__name__}.parked_task" in reported[0]
        assert f"created at {__name__}._leave_on_loop" in reported[0]
        assert len(keep) == 2 and not any(task.done() for task in keep)


# -- 4. nesting: across threads, and in one thread


def test_a_block_in_a_thread_of_an_outer_block_reports_its_leak_once(parked: ParkedThreads) -> None:
    inner: Dict[str, Optional[BaseException]] = {}

    def in_thread() -> None:
        with checked(True, inner, "inner"):
            parked.start(own_leak, name="inner-leak")

    with no_leaks(track_creation=True, timeout=LEAK):  # raises nothing: the inner block reported it
        thread = threading.Thread(target=in_thread, name="outer-owned")
        thread.start()
        thread.join()
    error = inner["inner"]
    assert error is not None
    reported = names(error)
    assert len(reported) == 1 and "thread 'inner-leak'" in reported[0], reported


def test_nested_blocks_in_one_thread_report_an_inner_leak_once(parked: ParkedThreads) -> None:
    inner: Dict[str, Optional[BaseException]] = {}
    with no_leaks(track_creation=True, timeout=LEAK), checked(True, inner, "inner"):
        parked.start(own_leak, name="inner-leak")
    error = inner["inner"]
    assert error is not None
    assert "thread 'inner-leak'" in names(error)[0]


def test_what_an_inner_block_lets_go_is_the_outer_blocks(parked: ParkedThreads) -> None:
    """An inner block's resources are inside the outer one: it blames what the inner block ignored."""

    def in_thread() -> None:
        with no_leaks(track_creation=True, timeout=LEAK, ignore=[ignore_name("^tolerated$")]):
            parked.start(own_leak, name="tolerated")

    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
    assert "thread 'tolerated'" in names(caught.value)[0]


def test_after_an_inner_block_closes_its_thread_starts_for_the_outer_block(parked: ParkedThreads) -> None:
    inner: Dict[str, Optional[BaseException]] = {}

    def in_thread() -> None:
        with checked(True, inner, "inner"):
            pass
        parked.start(own_leak, name="after-inner")

    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        thread = threading.Thread(target=in_thread)
        thread.start()
        thread.join()
    assert inner == {"inner": None}
    assert "thread 'after-inner'" in names(caught.value)[0]


def test_nested_async_blocks_in_one_task_report_an_inner_leak_once() -> None:
    inner: Dict[str, Optional[BaseException]] = {}

    async def main() -> None:
        release = asyncio.Event()
        keep: List[Any] = []
        async with no_leaks(track_creation=True, timeout=LEAK), checked_async(True, inner, "inner"):
            keep.append(asyncio.create_task(parked_task(release), name="inner-task"))
            await asyncio.sleep(0)
        release.set()
        await asyncio.gather(*keep)

    asyncio.run(main())
    error = inner["inner"]
    assert error is not None
    reported = names(error)
    assert len(reported) == 1 and "task 'inner-task'" in reported[0], reported


# -- 5. a runner made in an earlier block


async def _noop() -> None:
    pass


def _leave_a_task(release: List[asyncio.Event], keep: List[Any]) -> None:
    event = asyncio.Event()
    release.append(event)
    keep.append(asyncio.get_running_loop().create_task(parked_task(event), name="left-on-the-runner"))


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_a_runner_made_in_an_earlier_block_leaks_for_the_block_that_uses_it() -> None:
    release: List[asyncio.Event] = []
    keep: List[Any] = []

    async def leaves_a_task() -> None:
        _leave_a_task(release, keep)

    with no_leaks(track_creation=True, timeout=LEAK):
        runner = asyncio.Runner()  # type: ignore[attr-defined]
        runner.run(_noop())  # its context (a copy of the block's) names this block from now on
    try:
        with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
            runner.run(leaves_a_task())
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"task 'left-on-the-runner' in {__name__}.parked_task" in reported[0]
        assert f"created at {__name__}._leave_a_task" in reported[0]
    finally:
        runner.close()  # cancels the task left on its loop
    assert keep[0].cancelled()


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_a_thread_a_to_thread_job_starts_on_a_reused_runner_is_the_using_blocks(parked: ParkedThreads) -> None:
    # asyncio.to_thread runs its job in a copy of the task's context, which names the block that made the
    # runner (closed long ago): the job's own owner, worked out where it was submitted, wins.
    async def main() -> None:
        await asyncio.to_thread(parked.start, name="started-by-a-to-thread-job")

    with no_leaks(track_creation=True, timeout=LEAK):
        runner = asyncio.Runner()  # type: ignore[attr-defined]
        runner.run(_noop())
    try:
        with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
            runner.run(main())
    finally:
        runner.close()
    reported = names(caught.value)
    assert len(reported) == 1, reported
    assert "thread 'started-by-a-to-thread-job'" in reported[0]


FIRST_POOL_OF_THE_PROGRAM = r"""
import asyncio, sys, threading
import leakcheck

release = threading.Event()

def start_worker():
    threading.Thread(target=release.wait, name="started-by-the-first-job", daemon=True).start()

async def main():
    await asyncio.to_thread(start_worker)

async def nothing():
    pass

# concurrent.futures imports its thread pool module on first use: here, inside the second block.
assert "concurrent.futures.thread" not in sys.modules
runner = asyncio.Runner()
with leakcheck.no_leaks(track_creation=True, timeout=0.2):
    runner.run(nothing())
try:
    with leakcheck.no_leaks(track_creation=True, timeout=0.2):
        runner.run(main())
    print("not reported")
except leakcheck.LeakError as error:
    print("reported" if "thread 'started-by-the-first-job'" in str(error) else str(error))
runner.close()
release.set()
"""


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.Runner is new in 3.11")
def test_the_jobs_of_the_first_thread_pool_of_a_program_are_owned() -> None:
    result = run_python(FIRST_POOL_OF_THE_PROGRAM)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "reported"


@pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
def test_a_task_seen_before_its_record_is_judged_again_after_the_grace_period() -> None:
    # An eager task runs its first step inside create_task, before the hook notes which block made it:
    # a check in another thread lists it then.  Its record is there once the grace period is over.
    go, proceed, in_step, done = threading.Event(), threading.Event(), threading.Event(), threading.Event()

    async def server() -> None:
        in_step.set()
        proceed.wait(JOIN_TIMEOUT)  # the eager first step, held until the check below has its census
        await asyncio.Event().wait()

    async def outside_every_block() -> None:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        await asyncio.get_running_loop().run_in_executor(None, go.wait, JOIN_TIMEOUT)
        task = asyncio.get_running_loop().create_task(server(), name="outsiders-server")
        await asyncio.get_running_loop().run_in_executor(None, done.wait, JOIN_TIMEOUT)
        task.cancel()

    def after_the_census(_info: Any) -> bool:  # a matcher: the check calls it once its census is taken
        proceed.set()
        return False

    with leakcheck.track_creation():
        outsider = threading.Thread(target=asyncio.run, args=(outside_every_block(),))
        outsider.start()  # outside every block: nobody's, and so is what it starts
        try:
            with no_leaks(timeout=LEAK, ignore=[after_the_census]):
                go.set()
                assert in_step.wait(JOIN_TIMEOUT)
        finally:
            proceed.set()
            done.set()
            outsider.join(JOIN_TIMEOUT)
    assert proceed.is_set(), "the check never looked at the task"


# -- 6. tasks collected as garbage while pending


async def waits_for_nothing(future: asyncio.Future[None]) -> None:
    await future


def orphan_a_task(loop: asyncio.AbstractEventLoop) -> None:
    loop.create_task(waits_for_nothing(loop.create_future()), name="orphan")


async def _orphan_and_collect(messages: List[str], quiet: bool = False) -> None:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: messages.append(context["message"]))
    if quiet:
        task = loop.create_task(waits_for_nothing(loop.create_future()), name="orphan")
        task._log_destroy_pending = False  # type: ignore[attr-defined]
        gone = weakref.ref(task)
        del task
    else:
        orphan_a_task(loop)
    await asyncio.sleep(0)  # the task takes its first step and parks on its future
    gc.collect()
    if quiet:
        assert gone() is None, "the task was not collected"


DESTROYED = "Task was destroyed but it is pending!"


def test_a_pending_task_collected_as_garbage_in_the_block_is_reported() -> None:
    messages: List[str] = []
    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        asyncio.run(_orphan_and_collect(messages))
    assert messages == [DESTROYED]  # asyncio still says it: the hook swallows nothing
    text = str(caught.value)
    reported = names(caught.value)
    assert len(reported) == 1, reported
    assert "task 'orphan'" in reported[0]
    assert f"created at {__name__}.orphan_a_task" in reported[0]
    assert "coro=waits_for_nothing" in text
    assert "[destroyed while pending]" in text
    assert "Awaiting Future" in text
    tasks = caught.value.report.tasks
    assert [(info.name, info.state) for info in tasks] == [("orphan", "destroyed while pending")]
    site = tasks[0].created
    assert site is not None and site.blamed is not None
    assert site.blamed.function == f"{__name__}.orphan_a_task"


def test_a_pending_task_collected_as_garbage_in_an_async_block_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def main() -> None:
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                orphan_a_task(asyncio.get_running_loop())
                await asyncio.sleep(0)
                gc.collect()
        reported = names(caught.value)
        assert len(reported) == 1 and "task 'orphan'" in reported[0], reported
        assert f"created at {__name__}.orphan_a_task" in reported[0]
        assert "[destroyed while pending]" in str(caught.value)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
    logged = [record.getMessage() for record in caplog.records if record.name == "asyncio"]
    assert len(logged) == 1 and logged[0].startswith(DESTROYED) and "name='orphan'" in logged[0], logged


def test_a_pending_task_collected_as_garbage_is_named_by_its_coroutine_and_what_it_awaited() -> None:
    # Without its frames: whether the coroutine still has them when the task goes depends on the order in
    # which the collector finalizes the two.  Its coroutine, what it awaited and its site are given.
    messages: List[str] = []
    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        asyncio.run(_orphan_and_collect(messages))
    report = str(caught.value)
    assert "coro=waits_for_nothing" in report
    assert "[destroyed while pending]:" in report
    assert "  Awaiting Future" in report
    assert "in test_ownership.waits_for_nothing" not in report
    assert f"created at {__name__}.orphan_a_task" in report


def test_a_task_asyncio_does_not_warn_about_is_not_reported() -> None:
    messages: List[str] = []
    with no_leaks(track_creation=True, timeout=LEAK):
        asyncio.run(_orphan_and_collect(messages, quiet=True))
    assert messages == []


def test_gathers_children_stranded_on_a_closed_loop_are_not_reported() -> None:
    async def fails() -> None:
        raise RuntimeError("boom")

    async def stranded(future: asyncio.Future[None]) -> None:
        await future

    async def main() -> None:
        await asyncio.gather(fails(), stranded(asyncio.get_running_loop().create_future()))

    messages: List[str] = []
    with no_leaks(track_creation=True, timeout=LEAK):
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(lambda _loop, context: messages.append(context["message"]))
        try:
            with pytest.raises(RuntimeError, match="boom"):
                loop.run_until_complete(main())
            (child,) = asyncio.all_tasks(loop)  # gather's other child, left pending
            assert child._log_destroy_pending is False  # type: ignore[attr-defined]
            gone = weakref.ref(child)
            del child
        finally:
            loop.close()
        gc.collect()
        assert gone() is None, "the stranded child was not collected"
    assert messages == []


def test_without_tracking_a_task_collected_while_pending_is_not_reported() -> None:
    """The documented limit: only tracking sees a task that vanished from every registry."""
    messages: List[str] = []
    with no_leaks(track_creation=False, timeout=LEAK):
        asyncio.run(_orphan_and_collect(messages))
    assert messages == [DESTROYED]


def test_a_task_of_another_block_collected_during_this_block_is_not_reported() -> None:
    """What vanishes is its owner's leak: a later block does not answer for an earlier block's task."""
    messages: List[str] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: messages.append(context["message"]))
        holder: List[Any] = []
        async with no_leaks(track_creation=True, timeout=LEAK, ignore=[ignore_name("^orphan$")]):
            holder.append(loop.create_task(waits_for_nothing(loop.create_future()), name="orphan"))
            await asyncio.sleep(0)
        async with no_leaks(track_creation=True, timeout=LEAK):
            holder.clear()
            gc.collect()

    asyncio.run(main())
    assert messages == [DESTROYED]


def test_an_inner_blocks_task_collected_after_it_closed_is_the_outer_blocks() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(lambda _loop, context: None)
        holder: List[Any] = []
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                async with no_leaks(track_creation=True, timeout=LEAK, ignore=[ignore_name("^orphan$")]):
                    holder.append(loop.create_task(waits_for_nothing(loop.create_future()), name="orphan"))
                    await asyncio.sleep(0)
                holder.clear()
                gc.collect()
        reported = names(caught.value)
        assert len(reported) == 1 and "task 'orphan'" in reported[0], reported
        assert "[destroyed while pending]" in str(caught.value)

    asyncio.run(main())


# -- 7. without tracking, nothing changes


@contextlib.contextmanager
def outsider_starting_a_thread(parked: ParkedThreads) -> Iterator[Callable[[], None]]:
    """A thread started before the block; the function yielded makes it start ``outside-start`` and waits for that."""
    go, started = threading.Event(), threading.Event()

    def other() -> None:
        assert go.wait(JOIN_TIMEOUT)
        parked.start(started_by_a_thread_outside, name="outside-start")
        started.set()

    def start_it_now() -> None:
        go.set()
        assert started.wait(JOIN_TIMEOUT)

    outsider = threading.Thread(target=other, name="outsider")
    outsider.start()
    try:
        yield start_it_now
    finally:
        outsider.join(JOIN_TIMEOUT)


def test_without_tracking_a_thread_another_thread_starts_during_the_block_is_blamed(parked: ParkedThreads) -> None:
    with (
        outsider_starting_a_thread(parked) as start_it_now,
        pytest.raises(LeakError) as caught,
        no_leaks(track_creation=False, timeout=LEAK),
    ):
        start_it_now()
    reported = names(caught.value)
    assert len(reported) == 1
    assert f"thread 'outside-start' in {__name__}.started_by_a_thread_outside" in reported[0]
    assert "created at" not in reported[0]


def test_with_tracking_the_same_thread_is_not_blamed(parked: ParkedThreads) -> None:
    with outsider_starting_a_thread(parked) as start_it_now, no_leaks(track_creation=True, timeout=LEAK):
        start_it_now()
    assert parked.threads[0].is_alive()


# -- 8. what tracking did not see start is blamed as before


def test_a_thread_started_through_an_unhooked_thread_start_is_blamed(parked: ParkedThreads) -> None:
    original_start = threading.Thread.start  # taken while tracking is off: the hook will not see it
    with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
        assert threading.Thread.start is not original_start  # the block's tracking hooked it
        thread = threading.Thread(target=untracked_start, args=(parked.release_event,), name="unhooked")
        parked.threads.append(thread)
        original_start(thread)
    reported = names(caught.value)
    assert len(reported) == 1
    assert f"thread 'unhooked' in {__name__}.untracked_start" in reported[0]
    assert "created at" not in reported[0]
    assert "Created at" not in str(caught.value)


def test_a_thread_an_outside_thread_starts_unhooked_is_blamed(parked: ParkedThreads) -> None:
    original_start = threading.Thread.start
    go, started = threading.Event(), threading.Event()

    def other() -> None:
        assert go.wait(JOIN_TIMEOUT)
        thread = threading.Thread(target=untracked_start, args=(parked.release_event,), name="outside-unhooked")
        parked.threads.append(thread)
        original_start(thread)
        started.set()

    outsider = threading.Thread(target=other)
    outsider.start()
    try:
        with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
            go.set()
            assert started.wait(JOIN_TIMEOUT)
    finally:
        outsider.join(JOIN_TIMEOUT)
    assert "thread 'outside-unhooked'" in names(caught.value)[0]


def test_a_raw_thread_started_through_an_unhooked_start_new_thread_is_blamed() -> None:
    start_new_thread = _thread.start_new_thread  # the original: taken while tracking is off
    running, release, ended = threading.Event(), threading.Event(), threading.Event()

    def raw_worker() -> None:
        try:
            threading.current_thread()  # registers a dummy Thread: what the census sees
            running.set()
            release.wait()
        finally:
            ended.set()

    try:
        with pytest.raises(LeakError) as caught, no_leaks(track_creation=True, timeout=LEAK):
            start_new_thread(raw_worker, ())
            assert running.wait(JOIN_TIMEOUT)
    finally:
        release.set()
        assert ended.wait(JOIN_TIMEOUT)
    reported = names(caught.value)
    assert len(reported) == 1
    assert "raw_worker" in reported[0]
    assert "created at" not in reported[0]


def test_a_task_constructed_directly_is_blamed() -> None:
    """``asyncio.Task(...)`` bypasses the loop's ``create_task``: tracking does not see it start."""

    async def main() -> None:
        release = asyncio.Event()
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                task = asyncio.Task(parked_task(release), name="made-directly")
                await asyncio.sleep(0)
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"task 'made-directly' in {__name__}.parked_task" in reported[0]
        assert "created at" not in reported[0]
        release.set()
        await task

    asyncio.run(main())


def test_a_task_another_task_constructs_directly_is_blamed() -> None:
    async def main() -> None:
        release = asyncio.Event()
        go, made = asyncio.Event(), asyncio.Event()
        tasks: List[Any] = []

        async def other() -> None:
            await go.wait()
            tasks.append(asyncio.Task(other_block_task(release), name="outside-direct"))
            made.set()

        outsider = asyncio.create_task(other())
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                go.set()
                await made.wait()
        await outsider
        assert "task 'outside-direct'" in names(caught.value)[0]
        release.set()
        await asyncio.gather(*tasks)

    asyncio.run(main())


# -- work handed to a pool's thread: a job is its submitter's


def leaked_by_a_job(release: threading.Event) -> None:
    release.wait()


def _job_leaking_a_thread(parked: ParkedThreads, name: str = "job-leak") -> None:
    thread = threading.Thread(target=leaked_by_a_job, args=(parked.release_event,), name=name)
    parked.threads.append(thread)
    thread.start()


@pytest.mark.parametrize("worker_started", ["in-an-earlier-block", "outside-every-block"])
@pytest.mark.parametrize("track", [True, False])
def test_a_thread_leaked_by_a_job_on_an_older_pool_worker_is_blamed(
    parked: ParkedThreads, worker_started: str, track: bool
) -> None:
    pool = ThreadPoolExecutor(1, thread_name_prefix="older-pool")
    try:
        if worker_started == "in-an-earlier-block":
            with no_leaks(track_creation=track, timeout=LEAK, ignore=[ignore_name("^older-pool")]):
                pool.submit(short_job).result()  # the worker starts here, owned by this block
        else:
            pool.submit(short_job).result()
        with pytest.raises(LeakError) as caught, no_leaks(track_creation=track, timeout=LEAK):
            pool.submit(_job_leaking_a_thread, parked).result()
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"thread 'job-leak' in {__name__}.leaked_by_a_job" in reported[0]
        if track:
            assert f"created at {__name__}._job_leaking_a_thread" in reported[0]
    finally:
        pool.shutdown(wait=True)


def test_a_job_submitted_outside_every_block_is_nobodys(parked: ParkedThreads) -> None:
    """A job another thread submits, to a worker that a block started, starts nothing that block answers for."""
    pool = ThreadPoolExecutor(1, thread_name_prefix="blocks-pool")
    go, submitted = threading.Event(), threading.Event()

    def outsider() -> None:
        assert go.wait(JOIN_TIMEOUT)
        pool.submit(_job_leaking_a_thread, parked, "outsiders-job-leak").result(JOIN_TIMEOUT)
        submitted.set()

    thread = threading.Thread(target=outsider)
    thread.start()
    try:
        with no_leaks(track_creation=True, timeout=LEAK, ignore=[ignore_name("^blocks-pool")]):
            pool.submit(short_job).result()  # the worker is this block's
            go.set()
            assert submitted.wait(JOIN_TIMEOUT)
    finally:
        go.set()
        thread.join(JOIN_TIMEOUT)
        pool.shutdown(wait=True)
    assert [t.name for t in parked.threads] == ["outsiders-job-leak"] and parked.threads[0].is_alive()


def test_a_thread_leaked_by_run_in_executor_on_an_older_default_executor_is_blamed(parked: ParkedThreads) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, short_job)  # the default executor's worker starts outside the block
        with pytest.raises(LeakError) as caught:
            async with no_leaks(track_creation=True, timeout=LEAK):
                await loop.run_in_executor(None, _job_leaking_a_thread, parked)
        reported = names(caught.value)
        assert len(reported) == 1, reported
        assert f"thread 'job-leak' in {__name__}.leaked_by_a_job" in reported[0]

    asyncio.run(main())


# -- regressions found in review


def test_a_task_made_outside_every_block_stays_nobodys_when_a_block_drives_its_loop() -> None:
    loop = asyncio.new_event_loop()
    try:
        with leakcheck.track_creation():

            async def serve(requests: asyncio.Queue[asyncio.Event]) -> None:
                while True:
                    done = await requests.get()
                    asyncio.get_running_loop().create_task(done.wait())  # a handler, forever
                    await asyncio.sleep(0)

            async def setup() -> Tuple[asyncio.Queue[asyncio.Event], asyncio.Task[None]]:
                requests: asyncio.Queue[asyncio.Event] = asyncio.Queue()
                return requests, asyncio.get_running_loop().create_task(serve(requests))

            requests, server = loop.run_until_complete(setup())  # outside every block
            stop = asyncio.Event()

            async def request() -> None:
                requests.put_nowait(stop)
                for _ in range(3):
                    await asyncio.sleep(0)

            with no_leaks(track_creation=True, timeout=LEAK):  # the server's handler is not this block's
                loop.run_until_complete(request())
            stop.set()
            server.cancel()
            loop.run_until_complete(asyncio.sleep(0))
    finally:
        for task in asyncio.all_tasks(loop):
            task.cancel()
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()


def test_blocks_closed_out_of_order_leave_no_closed_block_owning_the_context() -> None:
    from leakcheck.engine.window import Tracked
    from leakcheck.kinds import ownership

    outer, inner = Tracked(), Tracked()
    outer.release()  # closed first
    assert ownership.current_owner() is inner.owner
    inner.release()
    owner = ownership.current_owner()
    assert owner is None or owner.open or owner.shared


def test_a_task_collected_while_the_lost_log_is_being_read_does_not_deadlock() -> None:
    from leakcheck.kinds import ownership

    async def forever() -> None:
        await asyncio.get_running_loop().create_future()

    finished = threading.Event()

    def collect_under_the_lock() -> None:
        loop = asyncio.new_event_loop()
        try:
            with leakcheck.track_creation():
                loop.create_task(forever())  # noqa: RUF006 - dropped on purpose: it must be collected
                loop.run_until_complete(asyncio.sleep(0))
                with ownership._lost_lock:  # as take_lost() holds it when a collection starts
                    gc.collect()  # the task's finalizer reports it lost, on this very thread
                ownership.take_lost(0, None, ["tasks"])
        finally:
            loop.close()
            finished.set()

    thread = threading.Thread(target=collect_under_the_lock, name="collector", daemon=True)
    thread.start()
    assert finished.wait(JOIN_TIMEOUT), "a finalizer waited for a lock its own thread held"
    thread.join(JOIN_TIMEOUT)


def test_setting_the_default_owner_gives_back_the_one_it_replaces() -> None:
    from leakcheck.kinds import ownership

    outer = ownership.Owner(None, shared=True)
    assert ownership.set_default_owner(outer) is None
    try:
        inner = ownership.Owner(None, shared=True)
        assert ownership.set_default_owner(inner) is outer
        assert ownership.set_default_owner(outer) is inner  # what a run inside a run puts back
    finally:
        ownership.set_default_owner(None)
