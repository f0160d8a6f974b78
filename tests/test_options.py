"""no_leaks options: validation at call time, threads/tasks switches, on_leak and cancel_tasks."""

from __future__ import annotations

import asyncio
import decimal
import inspect
import re
import threading
import time
import warnings
from decimal import Decimal
from fractions import Fraction
from typing import Any, List

import pytest
from helpers import create_task_on, loop_in_thread, parked_threads

from leakcheck import LeakError, LeakReport, LeakWarning, find_leaks, ignore_name, no_leaks, snapshot

GRACE = 0.05


def options_id(value: object) -> str:
    """A test id that is the same in every process (pytest-xdist needs that): no addresses."""
    text = repr(value) if isinstance(value, dict) else getattr(value, "__name__", repr(value))
    return re.sub(r" at 0x[0-9a-fA-F]+", "", text)


def follow_logs(release: threading.Event) -> None:
    release.wait()


async def stream_events(release: asyncio.Event) -> None:
    await release.wait()


async def tail_forever() -> None:
    await asyncio.get_running_loop().create_future()


# --- invalid options fail when no_leaks() is called ---------------------------------------------------------------


@pytest.mark.parametrize(
    "options, error",
    [
        ({"timeout": -1}, ValueError),
        ({"timeout": -0.001}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": float("inf")}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"timeout": None}, TypeError),
        ({"timeout": True}, TypeError),
        ({"timeout": [1.0]}, TypeError),
        ({"forbid": 42}, TypeError),
        ({"forbid": [42]}, TypeError),
        ({"forbid": ["follow_logs", None]}, TypeError),
        ({"forbid": b"follow_logs"}, TypeError),
        ({"forbid": [re.compile(b"follow_logs")]}, TypeError),
        ({"forbid": ""}, ValueError),
        ({"forbid": ["follow_logs", ""]}, ValueError),
        ({"on_leak": "log"}, ValueError),
        ({"on_leak": "RAISE"}, ValueError),
        ({"on_leak": 42}, TypeError),
        ({"on_leak": None}, TypeError),
        ({"ignore": "worker"}, TypeError),
        ({"ignore": ["worker"]}, TypeError),
        ({"ignore": [re.compile("worker")]}, TypeError),
        ({"ignore": [ignore_name("worker"), 42]}, TypeError),
        ({"ignore": 42}, TypeError),
        ({"threads": "yes"}, TypeError),
        ({"threads": 1}, TypeError),
        ({"tasks": None}, TypeError),
        ({"cancel_tasks": "no"}, TypeError),
        ({"timout": 1.0}, TypeError),
        ({"on_leaks": "warn"}, TypeError),
    ],
    ids=options_id,
)
def test_invalid_option_is_rejected_when_no_leaks_is_called(options, error):
    with pytest.raises(error):
        no_leaks(**options)


def test_positional_options_are_rejected():
    with pytest.raises(TypeError):
        no_leaks(True, True)  # type: ignore[call-overload]


@pytest.mark.parametrize("timeout", [Fraction(1, 10), Decimal("0.1")], ids=["Fraction", "Decimal"])
def test_any_real_number_is_a_timeout(timeout):
    assert no_leaks(timeout=timeout).options.timeout == pytest.approx(0.1)


def test_complex_timeout_is_rejected():
    with pytest.raises(TypeError):
        no_leaks(timeout=1j)


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"timeout": 0},
        {"timeout": 0.0},
        {"timeout": 3},
        {"timeout": 2.5},
        {"forbid": "follow_logs"},
        {"forbid": re.compile(r"follow_\w+")},
        {"forbid": ["follow_logs", re.compile("tail")]},
        {"forbid": ("follow_logs",)},
        {"ignore": ignore_name("worker")},
        {"ignore": lambda info: False},
        {"ignore": [ignore_name("worker"), lambda info: False]},
        {"ignore": (ignore_name("worker"),)},
        {"on_leak": "raise"},
        {"on_leak": "warn"},
        {"on_leak": print},
        {"threads": False, "tasks": False, "forbid": "follow_logs"},
    ],
    ids=options_id,
)
def test_valid_options_are_accepted_and_usable(options):
    check = no_leaks(**options)
    with check:
        pass


# --- a check that would check nothing ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options",
    [{"threads": False, "tasks": False}, {"threads": False, "tasks": False, "cancel_tasks": True, "timeout": 0}],
    ids=options_id,
)
def test_turning_both_kinds_off_without_forbid_is_rejected_by_every_entry_point(options):
    fragment = "threads=False and tasks=False leave nothing to check"
    with pytest.raises(ValueError, match=fragment):
        no_leaks(**options)
    with pytest.raises(ValueError, match=fragment):
        find_leaks(snapshot(), **options)


def test_both_kinds_off_with_forbid_checks_the_live_stacks():
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        check = no_leaks(threads=False, tasks=False, forbid="follow_logs", timeout=GRACE)
        with pytest.raises(LeakError) as excinfo, check:
            pass
    assert [info.name for info in excinfo.value.report.forbidden] == ["old-follower"]
    assert "follow_logs" in str(excinfo.value)
    with no_leaks(threads=False, tasks=False, forbid="follow_logs", timeout=GRACE):
        pass  # nothing matches any more: clean


def test_ignore_accepts_a_generator_of_matchers():
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=(ignore_name(name) for name in ["log-follower"])):
            threads.start(follow_logs, name="log-follower")
        assert threads.threads[0].is_alive()


def test_forbid_accepts_a_single_string():
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, forbid="follow_logs"):
            pass
    assert [info.name for info in excinfo.value.report.forbidden] == ["old-follower"]


def test_forbid_accepts_a_single_compiled_pattern():
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, forbid=re.compile(r"follow_lo+gs")):
            pass
    assert [info.name for info in excinfo.value.report.forbidden] == ["old-follower"]


def test_ignore_accepts_a_single_callable():
    seen: List[Any] = []

    def ignore_followers(info: Any) -> bool:
        seen.append(info)
        return info.name == "log-follower"

    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=ignore_followers):
            threads.start(follow_logs, name="log-follower")
        assert threads.threads[0].is_alive()
    assert "log-follower" in [info.name for info in seen]


# --- threads= and tasks= -----------------------------------------------------------------------------------------


def test_threads_false_does_not_check_threads():
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, threads=False):
            threads.start(follow_logs, name="unchecked-follower")
        assert threads.threads[0].is_alive()


def test_threads_false_still_checks_tasks():
    async def scenario() -> LeakError:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with parked_threads() as threads, pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE, threads=False):
                    threads.start(follow_logs, name="unchecked-follower")
                    tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
            return excinfo.value
        finally:
            release.set()
            await asyncio.gather(*tasks)

    error = asyncio.run(scenario())
    assert error.report.threads == ()
    assert [info.name for info in error.report.tasks] == ["event-stream"]
    assert "stream_events" in str(error)
    assert "follow_logs" not in str(error)


def test_tasks_false_does_not_check_tasks():
    async def scenario() -> None:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            async with no_leaks(timeout=GRACE, tasks=False):
                tasks.append(asyncio.create_task(stream_events(release), name="unchecked-stream"))
            assert not tasks[0].done()
        finally:
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_tasks_false_still_checks_threads():
    async def scenario() -> LeakError:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with parked_threads() as threads, pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE, tasks=False):
                    threads.start(follow_logs, name="log-follower")
                    tasks.append(asyncio.create_task(stream_events(release), name="unchecked-stream"))
            return excinfo.value
        finally:
            release.set()
            await asyncio.gather(*tasks)

    error = asyncio.run(scenario())
    assert error.report.tasks == ()
    assert [info.name for info in error.report.threads] == ["log-follower"]
    assert "stream_events" not in str(error)


# --- on_leak -------------------------------------------------------------------------------------------------------


def test_on_leak_raise_raises_leak_error_with_report():
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, on_leak="raise"):
        threads.start(follow_logs, name="log-follower")
    error = excinfo.value
    assert isinstance(error, AssertionError)
    assert isinstance(error.report, LeakReport)
    assert [info.name for info in error.report.threads] == ["log-follower"]
    assert str(error) == str(error.report)
    assert "follow_logs" in str(error)


def test_on_leak_warn_emits_leak_warning_with_report():
    assert issubclass(LeakWarning, Warning)
    with parked_threads() as threads, pytest.warns(LeakWarning) as record, no_leaks(timeout=GRACE, on_leak="warn"):
        threads.start(follow_logs, name="log-follower")
    assert len(record) == 1
    warning = record[0].message
    assert isinstance(warning, LeakWarning)
    assert [info.name for info in warning.report.threads] == ["log-follower"]
    assert "follow_logs" in str(warning)
    assert record[0].filename == __file__


def test_on_leak_warn_points_at_the_with_statement():
    with parked_threads() as threads, pytest.warns(LeakWarning) as record:
        line = inspect.currentframe().f_lineno + 1  # type: ignore[union-attr]
        with no_leaks(timeout=GRACE, on_leak="warn"):
            threads.start(follow_logs, name="block-follower")
    assert (record[0].filename, record[0].lineno) == (__file__, line)
    assert "block-follower" in str(record[0].message)


def test_on_leak_warn_of_a_decorated_function_points_at_the_function_not_its_caller():
    @no_leaks(timeout=GRACE, on_leak="warn")
    def follow(threads: Any) -> None:
        threads.start(follow_logs, name="decorated-follower")

    async def stream(threads: Any) -> None:
        threads.start(follow_logs, name="decorated-streamer")

    checked_stream = no_leaks(timeout=GRACE, on_leak="warn")(stream)
    with parked_threads() as threads, pytest.warns(LeakWarning) as record:
        follow(threads)
        asyncio.run(checked_stream(threads))
    locations = [(warning.filename, warning.lineno) for warning in record]
    # The code checked (its first line: the decorator, as in tracebacks), not the caller.
    assert locations == [
        (__file__, follow.__wrapped__.__code__.co_firstlineno),  # type: ignore[attr-defined]
        (__file__, stream.__code__.co_firstlineno),
    ]
    assert "decorated-follower" in str(record[0].message)
    assert "decorated-streamer" in str(record[1].message)


def test_on_leak_warn_does_not_warn_when_clean():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with no_leaks(timeout=GRACE, on_leak="warn"):
            pass


def test_on_leak_callable_receives_the_report_instead_of_raising():
    reports: List[LeakReport] = []
    with parked_threads() as threads, no_leaks(timeout=GRACE, on_leak=reports.append):
        threads.start(follow_logs, name="log-follower")
    assert len(reports) == 1
    assert isinstance(reports[0], LeakReport)
    assert [info.name for info in reports[0].threads] == ["log-follower"]
    assert "follow_logs" in str(reports[0])


def test_on_leak_callable_is_not_called_when_clean():
    reports: List[LeakReport] = []
    with no_leaks(timeout=GRACE, on_leak=reports.append):
        pass
    assert reports == []


def test_on_leak_callable_may_raise_its_own_error():
    class Custom(Exception):
        pass

    def fail(report: LeakReport) -> None:
        raise Custom(str(report))

    with parked_threads() as threads, pytest.raises(Custom) as excinfo, no_leaks(timeout=GRACE, on_leak=fail):
        threads.start(follow_logs, name="log-follower")
    assert "follow_logs" in str(excinfo.value)


# --- cancel_tasks --------------------------------------------------------------------------------------------------


def test_cancel_tasks_cancels_leaked_tasks_after_reporting():
    async def scenario() -> None:
        tasks: List[asyncio.Task[None]] = []
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE, cancel_tasks=True):
                    tasks.append(asyncio.create_task(tail_forever(), name="forgotten-tail"))
            assert [info.name for info in excinfo.value.report.tasks] == ["forgotten-tail"]
            assert excinfo.value.report.tasks[0].state == "pending"
            assert "tail_forever" in str(excinfo.value)
            assert tasks[0].cancelled()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def test_cancel_tasks_cancels_leaked_task_on_another_loop():
    with loop_in_thread() as loop:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=1.0, cancel_tasks=True):
            task = create_task_on(loop, tail_forever(), "remote-tail")
        assert "tail_forever" in str(excinfo.value)
        assert task.cancelled()


def test_leaked_tasks_keep_running_by_default():
    async def scenario() -> None:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    tasks.append(asyncio.create_task(stream_events(release), name="forgotten-stream"))
            assert "stream_events" in str(excinfo.value)
            assert not tasks[0].done()
        finally:
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())


def test_cancel_tasks_with_warn_still_cancels():
    async def scenario() -> None:
        tasks: List[asyncio.Task[None]] = []
        try:
            with pytest.warns(LeakWarning) as record:
                async with no_leaks(timeout=GRACE, on_leak="warn", cancel_tasks=True):
                    tasks.append(asyncio.create_task(tail_forever(), name="forgotten-tail"))
            assert "tail_forever" in str(record[0].message)
            assert tasks[0].cancelled()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(scenario())


def finish_shortly() -> None:
    time.sleep(0.05)


def test_huge_timeout_is_rejected_up_front_or_works():
    """A timeout above threading.TIMEOUT_MAX must not reach Thread.join, which raises OverflowError."""
    try:
        check = no_leaks(timeout=1e10)
    except ValueError:
        return
    thread = threading.Thread(target=finish_shortly, name="short-lived")
    try:
        with check:
            thread.start()
    finally:
        thread.join(5)


@pytest.mark.parametrize("timeout", [10**400, decimal.Decimal("sNaN")])
def test_a_timeout_no_float_holds_is_a_value_error_naming_it(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a finite number of seconds >= 0"):
        no_leaks(timeout=timeout)  # type: ignore[arg-type]
