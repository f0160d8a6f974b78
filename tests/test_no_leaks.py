"""no_leaks in its four forms, what counts as a leak, and find_leaks."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import pickle
import sys
import threading
import time
import traceback
import warnings
from typing import Any, Callable, Dict, List

import pytest
from helpers import JOIN_TIMEOUT, create_task_on, loop_in_thread, parked_threads

from leakcheck import (
    LeakCheck,
    LeakError,
    LeakReport,
    LeakWarning,
    Snapshot,
    assert_no_stack_match,
    find_leaks,
    no_leaks,
    snapshot,
)

GRACE = 0.05
LONG_GRACE = 5.0  # for things that end on their own: the check returns as soon as they have


def follow_logs(release: threading.Event) -> None:
    release.wait()


def send_heartbeats(release: threading.Event) -> None:
    release.wait()


def finish_shortly() -> None:
    time.sleep(0.05)


async def stream_events(release: asyncio.Event) -> None:
    await release.wait()


async def tail_forever() -> None:
    await asyncio.get_running_loop().create_future()


async def finish_soon() -> None:
    await asyncio.sleep(0.05)


@pytest.fixture(autouse=True)
def _no_leftover_threads():
    """Each test here releases what it started; make a slip visible at once."""
    before = set(threading.enumerate())
    yield
    leftovers = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    for thread in leftovers:
        thread.join(JOIN_TIMEOUT)
    assert not [t.name for t in leftovers if t.is_alive()]


# --- the four forms --------------------------------------------------------------------------------------------


def test_with_block_that_joins_its_thread_reports_nothing():
    with no_leaks(timeout=GRACE):
        thread = threading.Thread(target=time.sleep, args=(0,))
        thread.start()
        thread.join()


def test_with_block_reports_leaked_thread_by_function_and_name():
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        threads.start(follow_logs, name="log-follower")
    message = str(excinfo.value)
    assert "follow_logs" in message
    assert "log-follower" in message
    assert [info.name for info in excinfo.value.report.threads] == ["log-follower"]


def test_async_with_block_that_awaits_its_task_reports_nothing():
    async def scenario() -> None:
        async with no_leaks(timeout=GRACE):
            await asyncio.create_task(asyncio.sleep(0), name="awaited")

    asyncio.run(scenario())


def test_async_with_block_reports_leaked_task_by_coroutine_and_name():
    async def scenario() -> LeakError:
        release = asyncio.Event()
        task = None
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    task = asyncio.create_task(stream_events(release), name="event-stream")
            return excinfo.value
        finally:
            release.set()
            if task is not None:
                await task

    error = asyncio.run(scenario())
    assert "stream_events" in str(error)
    assert "event-stream" in str(error)
    assert [info.name for info in error.report.tasks] == ["event-stream"]
    assert error.report.threads == ()


def test_async_with_block_reports_leaked_thread():
    async def scenario() -> LeakError:
        with parked_threads() as threads, pytest.raises(LeakError) as excinfo:
            async with no_leaks(timeout=GRACE):
                threads.start(follow_logs, name="log-follower")
        return excinfo.value

    error = asyncio.run(scenario())
    assert "follow_logs" in str(error)
    assert [info.name for info in error.report.threads] == ["log-follower"]


def add_numbers(a: int, b: int = 0) -> int:
    """Adds numbers."""
    return a + b


async def add_numbers_later(a: int, b: int = 0) -> int:
    """Adds numbers, asynchronously."""
    await asyncio.sleep(0)
    return a + b


@pytest.mark.parametrize("decorator", [no_leaks, no_leaks(timeout=GRACE)], ids=["bare", "with-options"])
def test_decorated_function_passes_arguments_and_return_value(decorator):
    checked = decorator(add_numbers)
    assert checked(2, b=3) == 5
    assert checked.__name__ == "add_numbers"
    assert checked.__qualname__ == "add_numbers"
    assert checked.__doc__ == "Adds numbers."
    assert checked.__wrapped__ is add_numbers
    assert inspect.signature(checked) == inspect.signature(add_numbers)


@pytest.mark.parametrize("decorator", [no_leaks, no_leaks(timeout=GRACE)], ids=["bare", "with-options"])
def test_decorated_coroutine_function_passes_arguments_and_return_value(decorator):
    checked = decorator(add_numbers_later)
    assert inspect.iscoroutinefunction(checked)
    assert asyncio.run(checked(2, b=3)) == 5
    assert checked.__name__ == "add_numbers_later"
    assert checked.__doc__ == "Adds numbers, asynchronously."
    assert checked.__wrapped__ is add_numbers_later
    assert inspect.signature(checked) == inspect.signature(add_numbers_later)


def test_decorated_function_reports_leaked_thread():
    with parked_threads() as threads:

        @no_leaks(timeout=GRACE)
        def handler() -> str:
            threads.start(send_heartbeats, name="heartbeat")
            return "handled"

        with pytest.raises(LeakError) as excinfo:
            handler()
    assert "send_heartbeats" in str(excinfo.value)
    assert "heartbeat" in str(excinfo.value)


def test_bare_decorated_function_reports_leaked_thread():
    with parked_threads() as threads:

        @no_leaks
        def handler() -> None:
            threads.start(send_heartbeats, name="heartbeat")

        with pytest.raises(LeakError) as excinfo:
            handler()
    assert "send_heartbeats" in str(excinfo.value)


def test_decorated_coroutine_function_reports_leaked_task():
    release_box: List[asyncio.Event] = []
    tasks: List[asyncio.Task[None]] = []

    @no_leaks(timeout=GRACE)
    async def handler() -> None:
        release = asyncio.Event()
        release_box.append(release)
        tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))

    async def scenario() -> LeakError:
        try:
            with pytest.raises(LeakError) as excinfo:
                await handler()
            return excinfo.value
        finally:
            for release in release_box:
                release.set()
            await asyncio.gather(*tasks)

    error = asyncio.run(scenario())
    assert "stream_events" in str(error)
    assert [info.name for info in error.report.tasks] == ["event-stream"]


def test_decorating_a_generator_function_is_refused():
    def lines():
        yield "line"

    with pytest.raises(TypeError, match="generator"):
        no_leaks(lines)


def test_decorating_a_non_callable_is_refused():
    with pytest.raises(TypeError):
        no_leaks(timeout=GRACE)(42)


# --- grace period and who is to blame -------------------------------------------------------------------------


def test_thread_ending_shortly_after_the_block_is_not_a_leak():
    thread = threading.Thread(target=finish_shortly, name="short-lived")
    try:
        with no_leaks(timeout=LONG_GRACE):
            thread.start()
        assert not thread.is_alive()
    finally:
        thread.join(JOIN_TIMEOUT)


def test_task_ending_shortly_after_the_block_is_not_a_leak():
    async def scenario() -> asyncio.Task[None]:
        async with no_leaks(timeout=LONG_GRACE):
            task = asyncio.create_task(finish_soon(), name="short-lived")
        return task

    task = asyncio.run(scenario())
    assert task.done() and not task.cancelled()


def test_thread_and_task_ending_shortly_after_an_async_block_are_not_leaks():
    """Waiting for a thread must not stop the loop from finishing its own tasks meanwhile."""

    async def scenario() -> None:
        thread = threading.Thread(target=finish_shortly, name="short-lived")
        try:
            async with no_leaks(timeout=LONG_GRACE):
                thread.start()
                task = asyncio.create_task(finish_soon(), name="short-lived-task")
            assert task.done() and not task.cancelled()
            assert not thread.is_alive()
        finally:
            thread.join(JOIN_TIMEOUT)

    asyncio.run(scenario())


def test_thread_started_before_the_block_is_never_blamed():
    with parked_threads() as threads:
        old = threads.start(follow_logs, name="old-follower")
        with no_leaks(timeout=GRACE):
            pass
        assert old.is_alive()


def test_task_started_before_the_block_is_never_blamed():
    async def scenario() -> None:
        release = asyncio.Event()
        task = asyncio.create_task(stream_events(release), name="old-stream")
        try:
            async with no_leaks(timeout=GRACE):
                await asyncio.sleep(0)
            assert not task.done()
        finally:
            release.set()
            await task

    asyncio.run(scenario())


def test_thread_first_appearing_after_the_block_is_not_blamed():
    """The suspects are fixed when the block ends.

    Under ``async with`` nothing else runs on the loop between the block's end
    and the check's census, so a task created in the block cannot finish
    before the census; its done callback, which starts a thread, runs while
    the check waits for it.
    """
    late_started = threading.Event()
    with parked_threads() as threads:

        def start_late_thread(_task: object) -> None:
            threads.start(follow_logs, name="late-follower")
            late_started.set()

        async def scenario() -> None:
            async with no_leaks(timeout=LONG_GRACE):
                task = asyncio.create_task(asyncio.sleep(0), name="starter")
                task.add_done_callback(start_late_thread)

        asyncio.run(scenario())
        assert late_started.is_set()
        assert threads.threads[0].is_alive()


def test_task_first_appearing_after_the_block_is_not_blamed():
    async def scenario() -> None:
        release = asyncio.Event()
        late: List[asyncio.Task[None]] = []

        def start_late_task(_task: object) -> None:
            late.append(asyncio.get_running_loop().create_task(stream_events(release), name="late-stream"))

        try:
            async with no_leaks(timeout=LONG_GRACE):
                task = asyncio.create_task(asyncio.sleep(0), name="starter")
                task.add_done_callback(start_late_task)
            assert len(late) == 1 and not late[0].done()
        finally:
            release.set()
            await asyncio.gather(*late)

    asyncio.run(scenario())


def test_polling_an_unprogressable_task_does_not_spin(monkeypatch):
    import leakcheck.kinds.tasks as tasks_module

    calls = []
    original = tasks_module.TaskKind.describe

    def counting(self, objs):
        calls.append(len(objs))
        return original(self, objs)

    monkeypatch.setattr(tasks_module.TaskKind, "describe", counting)

    async def stuck_follow_logs() -> None:
        await asyncio.get_running_loop().create_future()

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(stuck_follow_logs(), name="stuck")
        loop.run_until_complete(asyncio.sleep(0))  # the task is parked; the loop then stops
        with pytest.raises(LeakError) as excinfo:
            assert_no_stack_match("stuck_follow_logs", timeout=0.3)
        assert "stuck_follow_logs" in str(excinfo.value)
        assert len(calls) < 100  # a busy loop made thousands of stack captures
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
    finally:
        loop.close()


# --- tasks everywhere ------------------------------------------------------------------------------------------


def test_task_on_a_loop_in_another_thread_is_reported():
    with loop_in_thread() as loop, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        create_task_on(loop, tail_forever(), "remote-tail")
    assert "tail_forever" in str(excinfo.value)
    assert [info.name for info in excinfo.value.report.tasks] == ["remote-tail"]
    assert excinfo.value.report.threads == ()


def test_task_from_run_coroutine_threadsafe_is_reported():
    started = threading.Event()

    async def announced_tail() -> None:
        started.set()
        await tail_forever()

    with loop_in_thread() as loop, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        future = asyncio.run_coroutine_threadsafe(announced_tail(), loop)
        assert started.wait(JOIN_TIMEOUT)
    assert future.cancelled(), "the loop's clean-up cancelled the leaked task"
    assert "announced_tail" in str(excinfo.value)
    assert "tail_forever" in str(excinfo.value)
    assert len(excinfo.value.report.tasks) == 1


@pytest.mark.parametrize("runs", [True, False], ids=["stopped", "never-ran"])
def test_task_on_a_loop_made_inside_the_block_and_left_open_is_reported(runs):
    """On 3.14+ such a loop is known only from its creation: no census ever saw it running."""
    loop = asyncio.new_event_loop()
    loop.close()  # a loop made before the block must not stand in for the one made inside
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            loop = asyncio.new_event_loop()
            task = loop.create_task(tail_forever(), name="left-on-open-loop")
            if runs:
                loop.run_until_complete(asyncio.sleep(0))
        assert "tail_forever" in str(excinfo.value)
        assert [info.name for info in excinfo.value.report.tasks] == ["left-on-open-loop"]
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


def test_pure_python_task_on_a_loop_made_inside_the_block_is_reported():
    """Tasks that are not native live in another registry on every version."""
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            task = asyncio.tasks._PyTask(tail_forever(), loop=loop, name="python-task")  # type: ignore[attr-defined]
            loop.run_until_complete(asyncio.sleep(0))
        assert [info.name for info in excinfo.value.report.tasks] == ["python-task"]
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


def test_asyncio_run_inside_the_block_leaves_nothing_behind():
    async def main() -> None:
        await asyncio.create_task(finish_soon(), name="finished-child")
        asyncio.create_task(tail_forever(), name="cancelled-by-run")  # noqa: RUF006 -- asyncio.run cancels it

    with no_leaks(timeout=GRACE):  # raises LeakError on a leak
        asyncio.run(main())


def test_task_on_another_loop_finishing_within_grace_is_not_a_leak():
    with loop_in_thread() as loop:
        with no_leaks(timeout=LONG_GRACE):
            task = create_task_on(loop, finish_soon(), "remote-short")
        assert task.done()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12")
def test_eager_task_is_reported():
    async def scenario() -> LeakError:
        asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        release = asyncio.Event()
        task = None
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    task = asyncio.create_task(stream_events(release), name="eager-stream")
            return excinfo.value
        finally:
            release.set()
            if task is not None:
                await task

    error = asyncio.run(scenario())
    assert "stream_events" in str(error)
    assert [info.name for info in error.report.tasks] == ["eager-stream"]


def block_in_first_step(in_first_step: threading.Event, release: threading.Event) -> None:
    in_first_step.set()
    release.wait()


async def eager_blocker(in_first_step: threading.Event, release: threading.Event) -> None:
    block_in_first_step(in_first_step, release)
    await asyncio.sleep(0)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12")
def test_eager_task_still_in_its_first_step_on_another_loop_is_reported():
    """An eager task that has not yielded yet is only in asyncio's eager-task registry."""
    in_first_step = threading.Event()
    release = threading.Event()
    with loop_in_thread(task_factory=asyncio.eager_task_factory) as loop:  # type: ignore[attr-defined]
        try:
            with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
                loop.call_soon_threadsafe(loop.create_task, eager_blocker(in_first_step, release))
                assert in_first_step.wait(JOIN_TIMEOUT)
        finally:
            release.set()
    assert "eager_blocker" in str(excinfo.value)
    assert len(excinfo.value.report.tasks) == 1
    assert excinfo.value.report.tasks[0].coro == "eager_blocker"


def test_pending_task_on_running_loop_gets_its_grace_then_is_reported():
    async def scenario() -> LeakError:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=0.5):
                    tasks.append(asyncio.create_task(finish_soon(), name="quick"))
                    tasks.append(asyncio.create_task(stream_events(release), name="stuck-stream"))
            assert tasks[0].done(), "the grace period let the running loop finish the quick task"
            return excinfo.value
        finally:
            release.set()
            await asyncio.gather(*tasks)

    error = asyncio.run(scenario())
    assert [info.name for info in error.report.tasks] == ["stuck-stream"]
    assert "stream_events" in str(error)


def test_checking_task_is_never_reported():
    async def check_from_new_task(baseline: Any) -> LeakReport:
        return find_leaks(baseline, timeout=GRACE)

    async def scenario() -> LeakReport:
        baseline = snapshot()
        return await asyncio.create_task(check_from_new_task(baseline), name="checker-task")

    report = asyncio.run(scenario())
    assert not report, str(report)


def test_checking_thread_is_never_reported():
    baseline = snapshot()
    reports: List[LeakReport] = []
    checker = threading.Thread(target=lambda: reports.append(find_leaks(baseline, timeout=GRACE)), name="checker")
    checker.start()
    checker.join(JOIN_TIMEOUT)
    assert len(reports) == 1
    assert not reports[0], str(reports[0])


def test_idle_default_executor_worker_is_not_a_leak():
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        async with no_leaks(timeout=GRACE):
            assert await loop.run_in_executor(None, add_numbers, 1, 2) == 3

    asyncio.run(scenario())


def serve_blocking_request(release: threading.Event) -> str:
    release.wait()
    return "served"


def test_busy_default_executor_worker_is_reported():
    async def scenario() -> LeakError:
        loop = asyncio.get_running_loop()
        release = threading.Event()
        futures = []
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    futures.append(loop.run_in_executor(None, serve_blocking_request, release))
            return excinfo.value
        finally:
            release.set()
            await asyncio.gather(*futures)

    error = asyncio.run(scenario())
    assert "serve_blocking_request" in str(error)
    assert len(error.report.threads) == 1


# --- exceptions from the block --------------------------------------------------------------------------------


def notes_of(error: BaseException) -> str:
    return "\n".join(getattr(error, "__notes__", []))


def test_block_exception_propagates_unchanged_with_report_attached(caplog):
    caplog.set_level(logging.ERROR, logger="leakcheck")
    original = ValueError("the block's own failure")
    with parked_threads() as threads, pytest.raises(ValueError) as excinfo, no_leaks(timeout=GRACE):
        threads.start(follow_logs, name="log-follower")
        raise original
    assert excinfo.value is original
    assert type(excinfo.value) is ValueError
    assert "follow_logs" in notes_of(original)
    if sys.version_info < (3, 11):  # tracebacks do not show __notes__ there, so it is logged too
        assert "follow_logs" in caplog.text


def test_async_block_exception_propagates_unchanged_with_report_attached():
    async def scenario() -> BaseException:
        original = KeyError("missing")
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with pytest.raises(KeyError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
                    raise original
            assert excinfo.value is original
            return original
        finally:
            release.set()
            await asyncio.gather(*tasks)

    error = asyncio.run(scenario())
    assert "stream_events" in notes_of(error)


def test_warn_turned_into_an_error_does_not_replace_the_block_exception():
    error = ValueError("the block's own failure")
    with parked_threads() as threads, warnings.catch_warnings():
        warnings.simplefilter("error", LeakWarning)
        with pytest.raises(ValueError) as excinfo, no_leaks(timeout=GRACE, on_leak="warn"):
            threads.start(follow_logs, name="warned-leak")
            raise error
    assert excinfo.value is error
    assert any("warned-leak" in note for note in excinfo.value.__notes__)


def test_on_leak_callback_raising_a_base_exception_does_not_replace_the_block_exception():
    class Stop(BaseException):
        pass

    def fail(report: object) -> None:
        raise Stop("from the callback")

    error = ValueError("the block's own failure")
    with parked_threads() as threads, pytest.raises(ValueError) as excinfo, no_leaks(timeout=GRACE, on_leak=fail):
        threads.start(follow_logs, name="callback-leak")
        raise error
    assert excinfo.value is error
    notes = "\n".join(excinfo.value.__notes__)
    assert "callback-leak" in notes
    assert "the on_leak callback failed" in notes


def test_clean_block_exception_gets_no_notes(caplog):
    caplog.set_level(logging.ERROR, logger="leakcheck")
    original = ValueError("the block's own failure")
    with pytest.raises(ValueError) as excinfo, no_leaks(timeout=GRACE):
        raise original
    assert excinfo.value is original
    assert not getattr(original, "__notes__", None)
    assert not caplog.records


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
def test_interrupt_skips_the_check(interrupt, caplog):
    caplog.set_level(logging.ERROR, logger="leakcheck")
    reports: List[LeakReport] = []
    check = no_leaks(timeout=GRACE, on_leak=reports.append)
    with parked_threads() as threads, pytest.raises(interrupt) as excinfo, check:
        threads.start(follow_logs, name="log-follower")
        raise interrupt()
    assert reports == []
    assert not getattr(excinfo.value, "__notes__", None)
    assert not caplog.records


def test_cancelled_block_is_not_held_up_by_the_grace_period():
    async def scenario() -> None:
        release = asyncio.Event()

        async def body() -> None:
            async with no_leaks(timeout=30):
                asyncio.get_running_loop().create_task(release.wait(), name="child")
                await asyncio.sleep(3600)

        began = time.monotonic()
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(body(), 0.05)
        assert time.monotonic() - began < 15  # it used to wait out all 30 s
        release.set()

    asyncio.run(scenario())


# --- each leak is reported once ---------------------------------------------------------------------------------


def test_nested_blocks_report_each_leak_once():
    # The outer block ends with the thread still alive, and must not blame it again.
    with parked_threads() as threads, no_leaks(timeout=GRACE):
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            threads.start(follow_logs, name="inner-follower")
        assert threads.threads[0].is_alive()
    assert "follow_logs" in str(excinfo.value)


def test_second_check_does_not_report_the_same_leak_again():
    with parked_threads() as threads:
        baseline = snapshot()
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            threads.start(follow_logs, name="log-follower")
        assert "follow_logs" in str(excinfo.value)
        again = find_leaks(baseline, timeout=GRACE)
        assert not again, str(again)


def test_outer_block_still_reports_what_inner_block_did_not_see():
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        threads.start(follow_logs, name="outer-follower")
        with no_leaks(timeout=GRACE):
            pass
    assert [info.name for info in excinfo.value.report.threads] == ["outer-follower"]


def test_overlapping_checks_never_both_report_the_same_thread():
    release = threading.Event()
    both_in = threading.Barrier(2)
    reports = {}
    ready = threading.Barrier(3)

    def checker(name: str, leak: bool) -> None:
        ready.wait(5)
        try:
            with no_leaks(timeout=GRACE, ignore=[lambda info: info.name.startswith("checker-")]):
                both_in.wait(5)
                if leak:
                    threading.Thread(target=follow_logs, args=(release,), name="shared-leak", daemon=True).start()
                both_in.wait(5)
            reports[name] = []
        except LeakError as error:
            reports[name] = [info.name for info in error.report.threads]

    checkers = [threading.Thread(target=checker, args=(f"checker-{i}", i == 0), name=f"checker-{i}") for i in (0, 1)]
    for thread in checkers:
        thread.start()
    ready.wait(5)
    for thread in checkers:
        thread.join(10)
    release.set()
    blamed = [name for names in reports.values() for name in names]
    assert blamed == ["shared-leak"]


# --- reuse and re-entrancy ---------------------------------------------------------------------------------------


def test_same_check_object_nested():
    check = no_leaks(timeout=GRACE)
    assert isinstance(check, LeakCheck)
    with parked_threads() as threads, pytest.raises(LeakError) as outer, check:
        threads.start(follow_logs, name="outer-follower")
        with pytest.raises(LeakError) as inner, check:
            threads.start(send_heartbeats, name="inner-heartbeat")
        with check:
            pass
    assert [info.name for info in inner.value.report.threads] == ["inner-heartbeat"]
    assert [info.name for info in outer.value.report.threads] == ["outer-follower"]
    assert "send_heartbeats" in str(inner.value)
    assert "follow_logs" in str(outer.value)


def test_check_object_is_reusable():
    check = no_leaks(timeout=GRACE)
    with check:
        pass
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        threads.start(follow_logs, name="second-use")
    assert "follow_logs" in str(excinfo.value)
    with check:
        pass


def test_same_decorated_function_in_eight_threads_at_once():
    workers = 8
    all_inside = threading.Barrier(workers, timeout=JOIN_TIMEOUT)

    @no_leaks(timeout=LONG_GRACE)
    def handle(number: int) -> int:
        helper = threading.Thread(target=all_inside.wait, name=f"helper-{number}")
        helper.start()
        helper.join()
        return number * 10

    results: List[int] = []
    failures: List[BaseException] = []

    def call(number: int) -> None:
        try:
            results.append(handle(number))
        except BaseException as failure:  # collected and asserted on below
            failures.append(failure)

    callers = [threading.Thread(target=call, args=(n,), name=f"caller-{n}") for n in range(workers)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(JOIN_TIMEOUT * 2)
    assert failures == []
    assert sorted(results) == [n * 10 for n in range(workers)]


def test_same_decorated_coroutine_function_in_concurrent_tasks():
    @no_leaks(timeout=LONG_GRACE)
    async def handle(number: int, gate: asyncio.Event) -> int:
        await gate.wait()
        return number

    async def scenario() -> List[int]:
        gate = asyncio.Event()
        calls = [asyncio.create_task(handle(n, gate)) for n in range(8)]
        await asyncio.sleep(0)
        gate.set()
        return await asyncio.gather(*calls)

    assert asyncio.run(scenario()) == list(range(8))


# --- blocks exited from another thread or task ------------------------------------------------------------------


def run_in_threads(steps: Dict[str, Callable[[], None]]) -> Dict[str, BaseException]:
    """Run each step in a thread of its own, all started before any step runs; what each raised."""
    raised: Dict[str, BaseException] = {}
    go = threading.Event()

    def run(name: str, step: Callable[[], None]) -> None:
        assert go.wait(JOIN_TIMEOUT)
        try:
            step()
        except BaseException as error:  # collected and asserted on by the test
            raised[name] = error

    runners = [threading.Thread(target=run, args=item, name=f"step-{item[0]}") for item in steps.items()]
    for runner in runners:
        runner.start()
    go.set()  # every block's baseline holds every runner
    for runner in runners:
        runner.join(JOIN_TIMEOUT * 3)
    assert not [runner.name for runner in runners if runner.is_alive()]
    return raised


def test_plain_block_closed_from_another_thread_ends_exactly_its_own_block():
    # Block A is entered in one thread and closed from a third while block B, also a plain
    # no_leaks(), is open in a second: each check must end its own block, with its own baseline.
    a_open, b_open, a_closed = threading.Event(), threading.Event(), threading.Event()
    stack = contextlib.ExitStack()
    with parked_threads() as threads:

        def enter_a() -> None:
            stack.enter_context(no_leaks())
            threads.start(follow_logs, name="a-follower")
            a_open.set()

        def run_b() -> None:
            assert a_open.wait(JOIN_TIMEOUT)
            with no_leaks():
                b_open.set()
                assert a_closed.wait(JOIN_TIMEOUT)
                threads.start(send_heartbeats, name="b-heartbeat")

        def close_a() -> None:
            assert b_open.wait(JOIN_TIMEOUT)
            try:
                stack.close()
            finally:
                a_closed.set()

        raised = run_in_threads({"enter A": enter_a, "B": run_b, "close A": close_a})
    assert sorted(raised) == ["B", "close A"], raised
    a_error, b_error = raised["close A"], raised["B"]
    assert isinstance(a_error, LeakError) and isinstance(b_error, LeakError), raised
    assert [info.name for info in a_error.report.threads] == ["a-follower"]
    assert [info.name for info in b_error.report.threads] == ["b-heartbeat"]
    assert "follow_logs" in str(a_error) and "send_heartbeats" in str(b_error)


def test_plain_async_block_closed_from_another_task_ends_exactly_its_own_block():
    async def scenario(threads: Any) -> List[Any]:
        a_open, b_open, a_closed = asyncio.Event(), asyncio.Event(), asyncio.Event()
        stack = contextlib.AsyncExitStack()

        async def enter_a() -> None:
            await stack.enter_async_context(no_leaks())
            threads.start(follow_logs, name="a-follower")
            a_open.set()

        async def run_b() -> None:
            await a_open.wait()
            async with no_leaks():
                b_open.set()
                await a_closed.wait()
                threads.start(send_heartbeats, name="b-heartbeat")

        async def close_a() -> None:
            await b_open.wait()
            try:
                await stack.aclose()
            finally:
                a_closed.set()

        # gather creates the three tasks before any runs: every block's baseline holds them.
        return await asyncio.gather(enter_a(), run_b(), close_a(), return_exceptions=True)

    with parked_threads() as threads:
        entered, b_error, a_error = asyncio.run(scenario(threads))
    assert entered is None
    assert isinstance(a_error, LeakError) and isinstance(b_error, LeakError), (a_error, b_error)
    assert [info.name for info in a_error.report.threads] == ["a-follower"]
    assert [info.name for info in b_error.report.threads] == ["b-heartbeat"]


def test_block_entered_in_one_task_and_exited_in_another():
    async def scenario() -> None:
        stack = contextlib.AsyncExitStack()
        await asyncio.create_task(stack.enter_async_context(no_leaks(timeout=GRACE)))
        await asyncio.create_task(stack.aclose())

    asyncio.run(scenario())


def test_one_object_closed_from_another_thread_ends_its_only_open_block():
    check = no_leaks(timeout=GRACE)
    stack = contextlib.ExitStack()
    opened = threading.Event()
    with parked_threads() as threads:

        def enter() -> None:
            stack.enter_context(check)
            threads.start(follow_logs, name="stack-follower")
            opened.set()

        def close() -> None:
            assert opened.wait(JOIN_TIMEOUT)
            stack.close()

        raised = run_in_threads({"enter": enter, "close": close})
    assert list(raised) == ["close"], raised
    assert isinstance(raised["close"], LeakError)
    assert [info.name for info in raised["close"].report.threads] == ["stack-follower"]
    with check:  # nothing was left behind: the object is as good as new
        pass


def test_one_object_open_twice_refuses_an_exit_it_cannot_attribute():
    check = no_leaks(timeout=GRACE)
    stack = contextlib.ExitStack()
    with_open, stack_open, refused = threading.Event(), threading.Event(), threading.Event()

    def inside_with() -> None:
        with check:  # its own thread's block: still ended exactly, and clean
            with_open.set()
            assert refused.wait(JOIN_TIMEOUT)

    def enter_stack() -> None:
        assert with_open.wait(JOIN_TIMEOUT)
        stack.enter_context(check)
        stack_open.set()

    def close_stack() -> None:
        assert stack_open.wait(JOIN_TIMEOUT)
        try:
            stack.close()  # two blocks of one object are open, and this thread entered neither
        finally:
            refused.set()

    raised = run_in_threads({"with": inside_with, "enter": enter_stack, "close": close_stack})
    assert list(raised) == ["close"], raised
    assert isinstance(raised["close"], RuntimeError)
    assert "cannot tell which block" in str(raised["close"])
    # The block that could not be exited was given up once the other one ended: nothing is left open.
    with pytest.raises(RuntimeError, match="has no open block"):
        check.__exit__(None, None, None)
    with check:
        pass


def test_exiting_a_block_that_was_never_entered_is_refused():
    with pytest.raises(RuntimeError, match="has no open block"):
        no_leaks().__exit__(None, None, None)
    check = no_leaks(timeout=GRACE)
    with check:
        pass
    with pytest.raises(RuntimeError, match="has no open block"):
        asyncio.run(check.__aexit__(None, None, None))


def test_every_no_leaks_call_makes_its_own_check():
    first, second = no_leaks(), no_leaks()
    assert first is not second
    assert first.options is second.options  # the validated defaults are shared
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, first:
        threads.start(follow_logs, name="outer-follower")
        with second:
            pass  # clean: the thread was there before it
    assert [info.name for info in excinfo.value.report.threads] == ["outer-follower"]


# --- the error and the warning ---------------------------------------------------------------------------------


def test_leak_error_and_warning_are_named_where_they_are_imported_from_and_pickle():
    with parked_threads() as threads:
        with pytest.raises(LeakError) as raised, no_leaks(timeout=GRACE):
            threads.start(follow_logs, name="pickled-follower")
        with warnings.catch_warnings(record=True) as record, no_leaks(timeout=GRACE, on_leak="warn"):
            warnings.simplefilter("always")
            threads.start(send_heartbeats, name="pickled-heartbeat")
    warned = record[0].message
    assert isinstance(warned, LeakWarning)
    for error, kind in ((raised.value, LeakError), (warned, LeakWarning)):
        assert f"{type(error).__module__}.{type(error).__qualname__}" == f"leakcheck.{kind.__name__}"
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is kind
        assert copy.report == error.report
        assert str(copy) == str(error)
    assert "pickled-follower" in str(raised.value) and "pickled-heartbeat" in str(warned)
    shown = "".join(traceback.format_exception_only(type(raised.value), raised.value))
    assert shown.startswith("leakcheck.LeakError: leakcheck: 1 leaked thread")


# --- find_leaks --------------------------------------------------------------------------------------------------


def test_find_leaks_clean_report_is_falsy():
    baseline = snapshot()
    thread = threading.Thread(target=time.sleep, args=(0,))
    thread.start()
    thread.join()
    report = find_leaks(baseline, timeout=GRACE)
    assert isinstance(report, LeakReport)
    assert not report
    assert report.threads == () and report.tasks == () and report.forbidden == ()


def test_find_leaks_reports_leaked_thread():
    with parked_threads() as threads:
        baseline = snapshot()
        threads.start(follow_logs, name="log-follower")
        report = find_leaks(baseline, timeout=GRACE)
    assert report
    assert [info.name for info in report.threads] == ["log-follower"]
    assert report.tasks == ()
    assert "follow_logs" in str(report)


def test_find_leaks_reports_leaked_task_on_another_loop():
    with loop_in_thread() as loop:
        baseline = snapshot()
        create_task_on(loop, tail_forever(), "remote-tail")
        report = find_leaks(baseline, timeout=GRACE)
    assert [info.name for info in report.tasks] == ["remote-tail"]
    assert report.threads == ()
    assert "tail_forever" in str(report)


def test_find_leaks_waits_for_thread_ending_within_grace():
    baseline = snapshot()
    thread = threading.Thread(target=finish_shortly, name="short-lived")
    thread.start()
    try:
        report = find_leaks(baseline, timeout=LONG_GRACE)
    finally:
        thread.join(JOIN_TIMEOUT)
    assert not report, str(report)


@pytest.mark.parametrize("baseline", [None, {}, "snapshot", (), LeakReport()])
def test_find_leaks_rejects_anything_but_a_snapshot(baseline):
    with pytest.raises(TypeError):
        find_leaks(baseline)


def test_find_leaks_rejects_a_snapshot_not_taken_live():
    with pytest.raises(ValueError):
        find_leaks(Snapshot(threads=(), tasks=(), pid=0, taken_at=0.0))


def test_find_leaks_rejects_on_leak():
    with pytest.raises(TypeError):
        find_leaks(snapshot(), on_leak="warn")  # type: ignore[call-arg]


def test_find_leaks_validates_its_options():
    with pytest.raises(ValueError):
        find_leaks(snapshot(), timeout=-1)
    with pytest.raises(TypeError):
        find_leaks(snapshot(), ignore=["worker"])


# --- forbid= -----------------------------------------------------------------------------------------------------


def test_forbid_fails_on_a_thread_alive_since_before_the_block():
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, forbid="follow_logs"):
            pass
    report = excinfo.value.report
    assert report.threads == ()
    assert [info.name for info in report.forbidden] == ["old-follower"]
    assert "follow_logs" in str(excinfo.value)
    assert "old-follower" in str(excinfo.value)


def test_forbid_with_a_compiled_pattern():
    import re

    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, forbid=[re.compile(r"follow_\w+")]):
            pass
    assert [info.name for info in excinfo.value.report.forbidden] == ["old-follower"]


def test_forbid_looks_at_every_stack_even_with_a_kind_turned_off():
    """``threads=False`` turns off the leak check of threads, not the ``forbid`` keywords."""
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, threads=False, forbid="follow_logs"):
            pass
    assert [info.name for info in excinfo.value.report.forbidden] == ["old-follower"]


def test_forbid_fails_on_a_matching_task():
    async def scenario() -> LeakError:
        release = asyncio.Event()
        task = asyncio.create_task(stream_events(release), name="old-stream")
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE, forbid="stream_events"):
                    await asyncio.sleep(0)
            return excinfo.value
        finally:
            release.set()
            await task

    error = asyncio.run(scenario())
    assert [info.name for info in error.report.forbidden] == ["old-stream"]


def follow_logs_briefly() -> None:
    time.sleep(0.05)


def test_forbid_allows_a_matching_thread_that_ends_within_grace():
    thread = threading.Thread(target=follow_logs_briefly, name="brief-follower")
    thread.start()
    try:
        with no_leaks(timeout=LONG_GRACE, forbid="follow_logs_briefly"):
            pass
    finally:
        thread.join(JOIN_TIMEOUT)


def test_forbid_passes_when_nothing_matches():
    with parked_threads() as threads:
        threads.start(send_heartbeats, name="heartbeat")
        with no_leaks(timeout=GRACE, forbid="follow_logs"):
            pass


def test_forbid_never_matches_the_checking_thread():
    with no_leaks(timeout=GRACE, forbid="test_forbid_never_matches_the_checking_thread"):
        pass


def test_forbid_report_names_a_leak_only_once_when_it_also_matches():
    check = no_leaks(timeout=GRACE, forbid="follow_logs")
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        threads.start(follow_logs, name="new-follower")
    report = excinfo.value.report
    assert [info.name for info in report.threads] == ["new-follower"]
    assert [info.name for info in report.forbidden] == ["new-follower"]
    assert str(report).count("Thread 'new-follower'") == 1

