"""Regression tests for defects found in review of the core.

Each test names the defect it guards against; each fails on the code before the fix.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
import warnings
from decimal import Decimal
from fractions import Fraction
from pathlib import Path

import pytest

from leakcheck import LeakError, LeakWarning, assert_no_stack_match, find_stacks, no_leaks

sys.path.insert(0, str(Path(__file__).parent))
from qualname_fixture import Pool, Server

GRACE = 0.1


def follow_logs(release: threading.Event) -> None:
    release.wait()


@contextlib.contextmanager
def leaked_thread(name: str):
    release = threading.Event()
    threads = []

    def start() -> None:
        thread = threading.Thread(target=follow_logs, args=(release,), name=name, daemon=True)
        threads.append(thread)
        thread.start()

    try:
        yield start
    finally:
        release.set()
        for thread in threads:
            thread.join(5)


# 1. Nothing may replace the block's own exception.


def test_warn_turned_into_an_error_does_not_replace_the_block_exception():
    error = ValueError("the block's own failure")
    with leaked_thread("warned-leak") as start, warnings.catch_warnings():
        warnings.simplefilter("error", LeakWarning)
        with pytest.raises(ValueError) as excinfo, no_leaks(timeout=GRACE, on_leak="warn"):
            start()
            raise error
    assert excinfo.value is error
    assert any("warned-leak" in note for note in excinfo.value.__notes__)


def test_on_leak_callback_raising_a_base_exception_does_not_replace_the_block_exception():
    class Stop(BaseException):
        pass

    def fail(report: object) -> None:
        raise Stop("from the callback")

    error = ValueError("the block's own failure")
    with leaked_thread("callback-leak") as start, pytest.raises(ValueError) as excinfo, no_leaks(
        timeout=GRACE, on_leak=fail
    ):
        start()
        raise error
    assert excinfo.value is error
    notes = "\n".join(excinfo.value.__notes__)
    assert "callback-leak" in notes
    assert "the on_leak callback failed" in notes


# 2. A default-executor worker busy at block end turns idle: no full grace period.


def test_busy_default_executor_worker_does_not_cost_the_whole_grace_period():
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = threading.Event()
        finish = threading.Event()

        def job() -> None:
            started.set()
            finish.wait()

        future = loop.run_in_executor(None, job)
        await loop.run_in_executor(None, started.wait)
        began = time.monotonic()
        async with no_leaks(timeout=30):
            loop.call_soon(finish.set)  # the worker turns idle right after the block
        elapsed = time.monotonic() - began
        await future
        return elapsed

    assert asyncio.run(scenario()) < 15  # it used to wait out all 30 s


# 3. Polling for a stack that cannot change must not spin.


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


# 4. Reported once, even by overlapping checks in two threads.


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


# 5. Qualnames: re-exported classes, decorators, hostile module globals (all versions).


def test_qualnames_of_reexported_classes_and_nested_functions():
    release = threading.Event()
    threads = [
        threading.Thread(target=Server().serve, args=(release,), name="qualname-server", daemon=True),
        threading.Thread(target=Pool().worker, args=(release,), name="qualname-pool", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        functions = {
            info.name: [frame.function for frame in info.frames if "qualname_fixture" in frame.filename]
            for info in find_stacks("qualname-")
        }
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
    assert functions["qualname-server"] == ["qualname_fixture.impl.Server.serve"]
    assert functions["qualname-pool"] == [
        "qualname_fixture.impl.Pool.worker",
        "qualname_fixture.impl.Pool.worker.<locals>.run",
    ]


# 6. A block may be exited from another task than the one that entered it.


def test_block_entered_in_one_task_and_exited_in_another():
    async def scenario() -> None:
        stack = contextlib.AsyncExitStack()
        await asyncio.create_task(stack.enter_async_context(no_leaks(timeout=GRACE)))
        await asyncio.create_task(stack.aclose())

    asyncio.run(scenario())


# 7. Cancellation is not delayed; every real number is a timeout.


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


@pytest.mark.parametrize("timeout", [Fraction(1, 10), Decimal("0.1")], ids=["Fraction", "Decimal"])
def test_any_real_number_is_a_timeout(timeout):
    assert no_leaks(timeout=timeout).options.timeout == pytest.approx(0.1)


def test_complex_timeout_is_rejected():
    with pytest.raises(TypeError):
        no_leaks(timeout=1j)
