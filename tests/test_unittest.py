"""unittest integration: ``@no_leaks`` on TestCase classes and the two base classes.

Each scenario defines an inner TestCase inside the test function (so pytest does
not collect it), runs it with a TestLoader into a fresh TestResult and asserts
on that result.  Threads leaked by inner tests park on Events kept here, at
module scope, and are released and joined after every test.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import threading
import unittest
from typing import Any, ClassVar, Dict, List, Tuple

import pytest

from leakcheck import AsyncLeakCheckTestCase, LeakCheckTestCase, LeakWarning, ignore_name, no_leaks

GRACE = 0.1

_parked: List[Tuple[threading.Event, threading.Thread]] = []
_check_began = threading.Event()


def leaky_worker(running: threading.Event, stop: threading.Event) -> None:
    running.set()
    stop.wait()


def setup_worker(running: threading.Event, stop: threading.Event) -> None:
    running.set()
    stop.wait()


def start_worker(target=leaky_worker, name: str = "worker") -> Tuple[threading.Event, threading.Thread]:
    """Start a thread parked on a module-level Event until it is released.

    Returns once the thread runs ``target``, so its stack always shows it.
    """
    running, stop = threading.Event(), threading.Event()
    thread = threading.Thread(target=target, args=(running, stop), name=name, daemon=True)
    _parked.append((stop, thread))
    thread.start()
    assert running.wait(5)
    return stop, thread


def stop_worker(stop: threading.Event, thread: threading.Thread) -> None:
    stop.set()
    thread.join(5)


@pytest.fixture(autouse=True)
def release_parked_threads():
    try:
        yield
    finally:
        for stop, _ in _parked:
            stop.set()
        for _, thread in _parked:
            thread.join(5)
        leftovers = [thread for _, thread in _parked if thread.is_alive()]
        _parked.clear()
        _check_began.clear()
        assert not leftovers


def run_case(case_class: type) -> unittest.TestResult:
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(case_class).run(result)
    return result


def entries_for(entries, method: str) -> List[str]:
    return [text for test, text in entries if test._testMethodName == method]


async def forgotten_job() -> None:
    await asyncio.get_running_loop().create_future()


async def setup_job() -> None:
    await asyncio.get_running_loop().create_future()


async def job_done_once_the_check_began() -> None:
    while not _check_began.is_set():
        await asyncio.sleep(0.001)


def note_check_began(info) -> bool:
    """An ignore matcher that ignores nothing: it tells the test that the check has begun."""
    _check_began.set()
    return False


# @no_leaks on unittest.TestCase


@pytest.mark.parametrize("decorator", [no_leaks, no_leaks(timeout=GRACE)], ids=["bare", "with-options"])
def test_decorated_testcase_reports_a_leaking_test_as_a_failure(decorator):
    @decorator
    class Inner(unittest.TestCase):
        def test_leaks(self):
            start_worker(name="leaked-by-test")

        def test_clean(self):
            stop, thread = start_worker()
            stop_worker(stop, thread)

    result = run_case(Inner)
    assert result.testsRun == 2
    assert result.errors == []
    assert len(result.failures) == 1
    (failure,) = entries_for(result.failures, "test_leaks")
    assert "leaky_worker" in failure
    assert "leaked-by-test" in failure
    assert entries_for(result.failures, "test_clean") == []


def test_every_test_method_is_checked():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def test_one(self):
            start_worker(name="leak-one")

        def test_two(self):
            start_worker(name="leak-two")

    result = run_case(Inner)
    assert result.errors == []
    assert "leak-one" in entries_for(result.failures, "test_one")[0]
    assert "leak-two" in entries_for(result.failures, "test_two")[0]


def test_run_test_method_is_checked_too():
    """A TestCase built around ``runTest`` (the unittest default method name) is checked as well."""

    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def runTest(self):
            start_worker(name="leaked-by-runtest")

    result = unittest.TestResult()
    Inner().run(result)
    assert result.errors == []
    (failure,) = entries_for(result.failures, "runTest")
    assert "leaked-by-runtest" in failure
    assert "leaky_worker" in failure


def test_clean_decorated_testcase_passes():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def test_nothing(self):
            pass

        def test_joined_thread(self):
            stop, thread = start_worker()
            stop_worker(stop, thread)

    result = run_case(Inner)
    assert result.testsRun == 2
    assert result.wasSuccessful(), result.failures + result.errors


def test_thread_started_in_test_and_stopped_in_teardown_is_not_a_leak():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def test_starts(self):
            self.worker = start_worker()

        def tearDown(self):
            stop_worker(*self.worker)

    result = run_case(Inner)
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.failures + result.errors


def test_thread_started_in_setup_and_stopped_by_a_cleanup_is_not_a_leak():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def setUp(self):
            self.addCleanup(stop_worker, *start_worker(setup_worker))

        def test_uses_it(self):
            pass

    result = run_case(Inner)
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.failures + result.errors


def test_thread_started_in_setup_and_never_stopped_is_a_leak():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def setUp(self):
            start_worker(setup_worker, name="never-stopped")

        def test_uses_it(self):
            pass

    result = run_case(Inner)
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_uses_it")
    assert "setup_worker" in failure
    assert "never-stopped" in failure


def test_thread_started_in_setupclass_is_not_blamed_on_the_tests():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        @classmethod
        def setUpClass(cls):
            cls.server = start_worker(name="class-wide-server")

        @classmethod
        def tearDownClass(cls):
            stop_worker(*cls.server)

        def test_one(self):
            self.assertTrue(self.server[1].is_alive())

        def test_two(self):
            self.assertTrue(self.server[1].is_alive())

    result = run_case(Inner)
    assert result.testsRun == 2
    assert result.wasSuccessful(), result.failures + result.errors


def test_non_test_methods_are_not_checked():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def helper(self):
            return start_worker(name="from-helper")

        def test_nothing(self):
            pass

    stop, thread = Inner("test_nothing").helper()  # a plain call: no check, no error
    assert thread.is_alive()
    stop_worker(stop, thread)


def test_skipped_tests_are_not_failures():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        @unittest.skip("decorated skip")
        def test_skipped(self):
            start_worker(name="never-started")

        def test_skips_itself(self):
            self.skipTest("skipped from inside")

    result = run_case(Inner)
    assert len(result.skipped) == 2  # (3.12.1 does not count skipped tests in testsRun)
    assert result.failures == []
    assert result.errors == []


def test_skipped_decorated_class_is_not_a_failure():
    @no_leaks(timeout=GRACE)
    @unittest.skip("whole class skipped")
    class Inner(unittest.TestCase):
        def test_anything(self):
            start_worker(name="never-started")

    result = run_case(Inner)
    assert len(result.skipped) == 1
    assert result.failures == []
    assert result.errors == []


def test_failing_and_leaking_test_reports_both():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def test_fails_and_leaks(self):
            start_worker(name="leaked-while-failing")
            self.assertEqual(1, 2, "the original assertion message")

    result = run_case(Inner)
    assert result.errors == []
    failures = entries_for(result.failures, "test_fails_and_leaks")
    assert len(failures) == 2
    original = [text for text in failures if "the original assertion message" in text]
    leak = [text for text in failures if "leaky_worker" in text]
    assert len(original) == 1
    assert len(leak) == 1
    assert original != leak
    assert "leaked-while-failing" in leak[0]


def test_erroring_and_leaking_test_reports_the_error_and_the_leak_failure():
    @no_leaks(timeout=GRACE)
    class Inner(unittest.TestCase):
        def test_errors_and_leaks(self):
            start_worker(name="leaked-while-erroring")
            raise RuntimeError("the original error")

    result = run_case(Inner)
    (error,) = entries_for(result.errors, "test_errors_and_leaks")
    assert "the original error" in error
    (failure,) = entries_for(result.failures, "test_errors_and_leaks")
    assert "leaky_worker" in failure


def test_decorating_a_class_that_is_not_a_testcase_is_a_type_error():
    class NotATestCase:
        def test_something(self):
            pass

    with pytest.raises(TypeError, match="TestCase"):
        no_leaks(NotATestCase)


def test_leak_is_a_failure_on_the_unittest_command_line(tmp_path):
    module = tmp_path / "leaky_tests.py"
    module.write_text(
        textwrap.dedent(
            """
            import threading
            import unittest

            from leakcheck import no_leaks

            running = threading.Event()
            stop = threading.Event()


            def follow_logs():
                running.set()
                stop.wait()


            @no_leaks(timeout=0.05)
            class LeakyTests(unittest.TestCase):
                def test_leaks(self):
                    threading.Thread(target=follow_logs, daemon=True).start()
                    running.wait(5)

                def test_clean(self):
                    pass
            """
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "unittest", "leaky_tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "FAIL: test_leaks" in result.stderr
    assert "ERROR:" not in result.stderr
    assert "follow_logs" in result.stderr
    assert "FAILED (failures=1)" in result.stderr


# LeakCheckTestCase


def test_leakcheck_testcase_fails_leaking_tests_only():
    class Inner(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        def test_leaks(self):
            start_worker(name="leaked-from-base-class")

        def test_clean(self):
            stop_worker(*start_worker())

    result = run_case(Inner)
    assert result.testsRun == 2
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_leaks")
    assert "leaky_worker" in failure
    assert "leaked-from-base-class" in failure


def test_leakcheck_testcase_window_covers_teardown_and_cleanups():
    class Inner(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        def setUp(self):
            self.addCleanup(stop_worker, *start_worker(setup_worker))

        def test_starts_one_more(self):
            self.worker = start_worker()

        def tearDown(self):
            stop_worker(*self.worker)

    result = run_case(Inner)
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.failures + result.errors


def test_leakcheck_testcase_honours_ignore_option():
    class Inner(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE, "ignore": [ignore_name("^keepalive-")]}

        def test_ignored_thread(self):
            start_worker(name="keepalive-1")

        def test_other_thread(self):
            start_worker(name="not-ignored")

    result = run_case(Inner)
    assert result.errors == []
    assert entries_for(result.failures, "test_ignored_thread") == []
    (failure,) = entries_for(result.failures, "test_other_thread")
    assert "not-ignored" in failure


def test_leakcheck_testcase_honours_on_leak_warn():
    class Inner(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE, "on_leak": "warn"}

        def test_leaks(self):
            start_worker(name="leak-as-warning")

    with pytest.warns(LeakWarning, match="leaky_worker"):
        result = run_case(Inner)
    assert result.wasSuccessful(), result.failures + result.errors


def test_leakcheck_testcase_subclass_inherits_and_overrides_options():
    class Base(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE, "ignore": [ignore_name("^keepalive-")]}

    class Child(Base):
        def test_ignored_thread(self):
            start_worker(name="keepalive-2")

    class Stricter(Base):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        def test_same_thread(self):
            start_worker(name="keepalive-3")

    assert run_case(Child).wasSuccessful()
    result = run_case(Stricter)
    (failure,) = entries_for(result.failures, "test_same_thread")
    assert "keepalive-3" in failure


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"timeout": -1}, ValueError),
        ({"timeout": float("nan")}, ValueError),
        ({"timeout": "1"}, TypeError),
        ({"on_leak": "explode"}, ValueError),
        ({"ignore": ["just a string"]}, TypeError),
        ({"forbid": [42]}, TypeError),
        ({"no_such_option": True}, TypeError),
        ([("timeout", 1.0)], TypeError),
        ({"threads": False, "tasks": False}, ValueError),  # would check nothing
    ],
)
@pytest.mark.parametrize("base", [LeakCheckTestCase, AsyncLeakCheckTestCase])
def test_invalid_leakcheck_options_fail_when_the_class_is_defined(base, options, error):
    with pytest.raises(error):
        type("Invalid", (base,), {"leakcheck_options": options})


# AsyncLeakCheckTestCase and @no_leaks on IsolatedAsyncioTestCase

ASYNC_KINDS = ["AsyncLeakCheckTestCase", "decorated-IsolatedAsyncioTestCase"]


def async_base(kind: str) -> type:
    return AsyncLeakCheckTestCase if kind == "AsyncLeakCheckTestCase" else unittest.IsolatedAsyncioTestCase


def checked(kind: str, case_class: type) -> type:
    """The class as the test runs it: decorated with its own options unless it has the base class."""
    if kind == "AsyncLeakCheckTestCase":
        return case_class
    decorated: type = no_leaks(**case_class.leakcheck_options)(case_class)
    return decorated


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_pending_task_at_the_end_of_an_async_test_is_a_failure(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def test_forgets_a_task(self):
            self.task = asyncio.create_task(forgotten_job(), name="forgotten-task")

        async def test_clean(self):
            task = asyncio.create_task(forgotten_job())
            await asyncio.sleep(0)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    result = run_case(checked(kind, Inner))
    assert result.testsRun == 2
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_forgets_a_task")
    assert "forgotten_job" in failure
    assert "forgotten-task" in failure


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_task_finishing_during_the_grace_period_is_not_a_leak(kind):
    """The task is still pending when the test ends, and only finishes once the check has begun."""

    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": 5.0, "ignore": [note_check_began]}

        async def test_leaves_a_finishing_task(self):
            self.task = asyncio.create_task(job_done_once_the_check_began(), name="finishing")

        async def asyncTearDown(self):
            self.assertFalse(self.task.done())

    result = run_case(checked(kind, Inner))
    assert result.testsRun == 1
    assert _check_began.is_set()
    assert result.wasSuccessful(), result.failures + result.errors


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_thread_finishing_during_the_grace_period_of_an_async_test_is_not_a_leak(kind):
    """The check waits for the thread off the loop, so the test's loop keeps running meanwhile."""

    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": 5.0, "ignore": [note_check_began]}

        async def test_leaves_a_finishing_thread(self):
            self.thread = threading.Thread(target=_check_began.wait, name="finishing", daemon=True)
            _parked.append((_check_began, self.thread))
            self.thread.start()

        async def asyncTearDown(self):
            self.assertTrue(self.thread.is_alive())

    result = run_case(checked(kind, Inner))
    assert result.testsRun == 1
    assert _check_began.is_set()
    assert result.wasSuccessful(), result.failures + result.errors


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_task_from_async_setup_cancelled_in_async_teardown_is_not_a_leak(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def asyncSetUp(self):
            self.task = asyncio.create_task(setup_job(), name="setup-task")

        async def test_uses_it(self):
            await asyncio.sleep(0)
            self.assertFalse(self.task.done())

        async def asyncTearDown(self):
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    result = run_case(checked(kind, Inner))
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.failures + result.errors


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_task_from_async_setup_never_cancelled_is_a_leak(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def asyncSetUp(self):
            self.task = asyncio.create_task(setup_job(), name="setup-task-left")

        async def test_uses_it(self):
            pass

    result = run_case(checked(kind, Inner))
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_uses_it")
    assert "setup_job" in failure
    assert "setup-task-left" in failure


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_thread_leaked_by_an_async_test_is_a_failure(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def test_starts_a_thread(self):
            start_worker(name="leaked-by-async-test")

    result = run_case(checked(kind, Inner))
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_starts_a_thread")
    assert "leaky_worker" in failure
    assert "leaked-by-async-test" in failure


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_failing_and_leaking_async_test_reports_both(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def test_fails_and_leaks(self):
            self.task = asyncio.create_task(forgotten_job(), name="leaked-while-failing")
            self.assertEqual(1, 2, "the original async assertion")

    result = run_case(checked(kind, Inner))
    assert result.errors == []
    failures = entries_for(result.failures, "test_fails_and_leaks")
    assert len(failures) == 2
    assert len([text for text in failures if "the original async assertion" in text]) == 1
    assert len([text for text in failures if "forgotten_job" in text]) == 1


@pytest.mark.parametrize("kind", ASYNC_KINDS)
def test_idle_default_executor_workers_of_the_test_loop_are_not_leaks(kind):
    class Inner(async_base(kind)):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        async def test_uses_the_executor(self):
            loop = asyncio.get_running_loop()
            self.assertEqual(await loop.run_in_executor(None, sum, [1, 2]), 3)

    result = run_case(checked(kind, Inner))
    assert result.testsRun == 1
    assert result.wasSuccessful(), result.failures + result.errors


# How a leak failure reads: the report, under leakcheck's public name, and no frame of
# leakcheck's own (nor, for IsolatedAsyncioTestCase, of asyncio's runner).


def frames_before_the_message(text: str) -> str:
    assert "leakcheck.LeakError: leakcheck: " in text, text
    assert "leakcheck.reporting.report" not in text
    return text.split("leakcheck.LeakError: leakcheck: ", 1)[0]


def leaking_case(kind: str) -> type:
    if kind in ASYNC_KINDS:

        class AsyncInner(async_base(kind)):  # type: ignore[misc]
            leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

            async def test_leaks(self):
                start_worker(name="unseen-frames-worker")

        return checked(kind, AsyncInner)

    class Inner(LeakCheckTestCase if kind == "LeakCheckTestCase" else unittest.TestCase):  # type: ignore[misc]
        leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE}

        def test_leaks(self):
            start_worker(name="unseen-frames-worker")

    return Inner if kind == "LeakCheckTestCase" else no_leaks(timeout=GRACE)(Inner)


@pytest.mark.parametrize("kind", ["LeakCheckTestCase", "decorated-TestCase", *ASYNC_KINDS])
def test_leak_failure_of_a_checked_test_shows_the_report_and_no_frame(kind):
    result = run_case(leaking_case(kind))
    assert result.errors == []
    (failure,) = entries_for(result.failures, "test_leaks")
    assert "thread 'unseen-frames-worker' in " in failure
    frames = frames_before_the_message(failure)
    assert 'File "' not in frames, failure  # like a failure unittest raises itself


@pytest.mark.parametrize("name", ["test_with", "test_decorated"])
def test_leak_of_a_no_leaks_block_in_a_test_shows_no_inner_frame_of_the_check(name):
    class Inner(unittest.TestCase):
        def test_with(self):
            with no_leaks(timeout=GRACE):
                start_worker(name="block-worker")

        @no_leaks(timeout=GRACE)
        def test_decorated(self):
            start_worker(name="block-worker")

    result = unittest.TestResult()
    Inner(name).run(result)
    (failure,) = entries_for(result.failures, name)
    assert "thread 'block-worker' in " in failure
    frames = frames_before_the_message(failure)
    for internal in ("act_on_report", "in finish", "in _finish"):
        assert internal not in frames, failure
    # At most the test's frame and the one leakcheck frame that raised: the with statement's exit
    # or the decorator's wrapper.
    assert frames.count('File "') <= 2, failure


# Where an on_leak="warn" warning points: the test method, not unittest's cleanup machinery.


@pytest.mark.parametrize("kind", ["LeakCheckTestCase", "decorated-TestCase", *ASYNC_KINDS])
def test_on_leak_warn_points_at_the_test_method(kind):
    if kind in ASYNC_KINDS:

        class AsyncInner(async_base(kind)):  # type: ignore[misc]
            leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE, "on_leak": "warn"}

            async def test_leaks(self):
                start_worker(name="warned-worker")

        case_class = checked(kind, AsyncInner)
    else:

        class Inner(LeakCheckTestCase if kind == "LeakCheckTestCase" else unittest.TestCase):  # type: ignore[misc]
            leakcheck_options: ClassVar[Dict[str, Any]] = {"timeout": GRACE, "on_leak": "warn"}

            def test_leaks(self):
                start_worker(name="warned-worker")

        case_class = Inner if kind == "LeakCheckTestCase" else no_leaks(**Inner.leakcheck_options)(Inner)
    with pytest.warns(LeakWarning, match="warned-worker") as record:
        result = run_case(case_class)
    assert result.wasSuccessful(), result.failures + result.errors
    (warning,) = record
    assert (warning.filename, warning.lineno) == (__file__, case_class.test_leaks.__code__.co_firstlineno)
