"""The pytest plugin with async test runners: pytest-asyncio (strict and auto) and anyio.

Those runners cancel the tasks a test leaves on their loops, silently; with
``--leakcheck`` such tasks are reported, and what a fixture stops in time is not.
Inner suites leave tasks only on loops that their runner closes (and so
cancels) at teardown, keeping them referenced until then (a pending task can
be garbage-collected, which would hide it), and release every thread they
leak before they end.
"""

from __future__ import annotations

import textwrap
from importlib.metadata import version
from typing import Iterator, List

import pytest

pytest_plugins = ["pytester"]

# hypothesis's plugin imports hypothesis afresh in every inner run: seconds, for nothing here
FAST = ("--leakcheck", "--leakcheck-timeout=0.1", "-p", "no:hypothesispytest", "-p", "no:benchmark")
ASYNCIO_INI = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"


def _version(name: str) -> tuple:
    return tuple(int(part) for part in version(name).split(".")[:2] if part.isdigit())


needs_loop_scope = pytest.mark.skipif(
    _version("pytest-asyncio") < (0, 24), reason="loop_scope needs pytest-asyncio >= 0.24"
)


KEEP_TASKS = """
# A pending task is a collectable reference cycle: keep each one until its loop cancels it.
KEEP = []


def keep(task):
    KEEP.append(task)
    return task

"""


def write_asyncio_suite(pytester: pytest.Pytester, mode: str, source: str) -> None:
    """Write ``source`` for pytest-asyncio in ``mode``.

    ``@async_test`` becomes ``@pytest.mark.asyncio`` in strict mode and
    nothing in auto mode; ``@async_fixture`` becomes ``@pytest_asyncio.fixture``
    in strict mode and ``@pytest.fixture`` in auto mode.
    """
    strict = mode == "strict"
    source = textwrap.dedent(source)
    source = source.replace("@async_test\n", "@pytest.mark.asyncio\n" if strict else "")
    source = source.replace("@async_fixture", "@pytest_asyncio.fixture" if strict else "@pytest.fixture")
    header = "import asyncio\nimport threading\n\nimport pytest\nimport pytest_asyncio\n\n" + KEEP_TASKS
    pytester.makeini(ASYNCIO_INI + f"asyncio_mode = {mode}\n")
    pytester.makepyfile(test_suite=header + source)


def output_of(result: pytest.RunResult) -> str:
    return "\n".join(result.outlines + result.errlines)


def assert_clean(result: pytest.RunResult, passed: int) -> None:
    output = output_of(result)
    assert "leakcheck:" not in output, output
    result.assert_outcomes(passed=passed)


# -- pytest-asyncio, function-scoped loops

modes = pytest.mark.parametrize("mode", ["strict", "auto"])


@modes
def test_asyncio_pending_task_left_by_the_test_is_reported(pytester: pytest.Pytester, mode: str) -> None:
    write_asyncio_suite(
        pytester,
        mode,
        """
        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="forgotten-watcher"))
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_leaves_a_task: 1 leaked task" in output
    assert "'forgotten-watcher'" in output


@modes
def test_asyncio_leaked_task_reports_its_coroutine(pytester: pytest.Pytester, mode: str) -> None:
    write_asyncio_suite(
        pytester,
        mode,
        """
        async def poll_forever():
            await asyncio.Event().wait()

        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(poll_forever()))
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, errors=1)
    assert "coro=poll_forever" in output_of(result)


@modes
def test_asyncio_task_finishing_within_the_grace_period_is_clean(pytester: pytest.Pytester, mode: str) -> None:
    write_asyncio_suite(
        pytester,
        mode,
        """
        DONE = []

        async def finish_soon():
            await asyncio.sleep(0.01)
            DONE.append(True)

        @async_test
        async def test_starts_a_short_task():
            keep(asyncio.create_task(finish_soon(), name="short-lived"))

        def test_the_task_ran_to_its_end():
            assert DONE == [True]
        """,
    )
    assert_clean(pytester.runpytest(*FAST), passed=2)


@modes
def test_asyncio_task_stopped_by_fixture_teardown_is_clean(pytester: pytest.Pytester, mode: str) -> None:
    write_asyncio_suite(
        pytester,
        mode,
        """
        @async_fixture
        async def tasks():
            started = []
            yield started
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

        @async_test
        async def test_starts_a_task(tasks):
            tasks.append(asyncio.create_task(asyncio.Event().wait(), name="stopped-by-fixture"))
            await asyncio.sleep(0)
            assert not tasks[0].done()
        """,
    )
    assert_clean(pytester.runpytest(*FAST), passed=1)


@modes
def test_asyncio_task_left_by_async_fixture_is_reported(pytester: pytest.Pytester, mode: str) -> None:
    write_asyncio_suite(
        pytester,
        mode,
        """
        @async_fixture
        async def watcher():
            yield keep(asyncio.create_task(asyncio.Event().wait(), name="fixture-watcher"))

        @async_test
        async def test_uses_the_fixture(watcher):
            assert not watcher.done()
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_uses_the_fixture: 1 leaked task" in output
    assert "'fixture-watcher'" in output


# -- pytest-asyncio, module-scoped loops


@needs_loop_scope
def test_asyncio_module_loop_task_is_reported_for_the_test_that_left_it_only(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        pytestmark = pytest.mark.asyncio(loop_scope="module")

        LEFT = []

        async def test_leaves_a_task():
            LEFT.append(keep(asyncio.create_task(asyncio.Event().wait(), name="module-loop-straggler")))

        async def test_runs_next_on_the_same_loop():
            assert not LEFT[0].done()
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=2, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_leaves_a_task: 1 leaked task" in output
    assert output.count("- task 'module-loop-straggler'") == 1
    assert "test_runs_next_on_the_same_loop: " not in output


@needs_loop_scope
def test_asyncio_task_of_module_scoped_fixture_is_not_blamed_on_first_test(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        pytestmark = pytest.mark.asyncio(loop_scope="module")

        @pytest_asyncio.fixture(scope="module", loop_scope="module")
        async def server():
            yield keep(asyncio.create_task(asyncio.Event().wait(), name="module-server"))

        async def test_first(server):
            assert not server.done()

        async def test_second(server):
            assert not server.done()
        """,
    )
    assert_clean(pytester.runpytest(*FAST), passed=2)


# -- anyio

ANYIO_HEADER = (
    """
import asyncio

import pytest

"""
    + KEEP_TASKS
    + """

@pytest.fixture
def anyio_backend():
    return "asyncio"

"""
)


def write_anyio_suite(pytester: pytest.Pytester, source: str) -> None:
    pytester.makeini(ASYNCIO_INI)
    pytester.makepyfile(test_suite=ANYIO_HEADER + textwrap.dedent(source))


def test_anyio_pending_task_left_by_the_test_is_reported(pytester: pytest.Pytester) -> None:
    write_anyio_suite(
        pytester,
        """
        @pytest.mark.anyio
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="anyio-straggler"))
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_leaves_a_task: 1 leaked task" in output
    assert "'anyio-straggler'" in output


def test_anyio_clean_test_is_clean(pytester: pytest.Pytester) -> None:
    write_anyio_suite(
        pytester,
        """
        @pytest.mark.anyio
        async def test_awaits_its_task():
            await asyncio.create_task(asyncio.sleep(0.01), name="awaited")
        """,
    )
    assert_clean(pytester.runpytest(*FAST), passed=1)


def test_anyio_runner_kept_open_for_the_task_check_leaves_no_descriptor_or_process_behind(
    pytester: pytest.Pytester,
) -> None:
    """leakcheck keeps anyio's runner open for its task check only: its loop's descriptors are not the test's."""
    write_anyio_suite(
        pytester,
        """
        @pytest.mark.anyio
        async def test_awaits_its_task():
            await asyncio.create_task(asyncio.sleep(0.01), name="awaited")

        @pytest.mark.anyio
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="anyio-straggler"))
        """,
    )
    result = pytester.runpytest(*FAST, "--leakcheck-kinds=threads,tasks,processes,fds")
    result.assert_outcomes(passed=2, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_leaves_a_task: 1 leaked task (" in output
    assert "'anyio-straggler'" in output
    assert "file descriptor" not in output and "test_awaits_its_task: " not in output


def test_anyio_task_stopped_by_fixture_teardown_is_clean(pytester: pytest.Pytester) -> None:
    write_anyio_suite(
        pytester,
        """
        @pytest.fixture
        async def tasks():
            started = []
            yield started
            for task in started:
                task.cancel()
            await asyncio.gather(*started, return_exceptions=True)

        @pytest.mark.anyio
        async def test_starts_a_task(tasks):
            tasks.append(asyncio.create_task(asyncio.Event().wait(), name="stopped-by-fixture"))
            await asyncio.sleep(0)
            assert not tasks[0].done()
        """,
    )
    assert_clean(pytester.runpytest(*FAST), passed=1)


def test_anyio_task_left_by_async_fixture_is_reported(pytester: pytest.Pytester) -> None:
    write_anyio_suite(
        pytester,
        """
        @pytest.fixture
        async def watcher():
            yield keep(asyncio.create_task(asyncio.Event().wait(), name="anyio-fixture-watcher"))

        @pytest.mark.anyio
        async def test_uses_the_fixture(watcher):
            assert not watcher.done()
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=1, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_uses_the_fixture: 1 leaked task" in output
    assert "'anyio-fixture-watcher'" in output


@pytest.mark.parametrize("scope", ["test", "module", "session"])
def test_anyio_runner_task_is_never_a_leak(pytester: pytest.Pytester, scope: str) -> None:
    """anyio's runner keeps a task of its own on its loop; it belongs to no test."""
    write_anyio_suite(
        pytester,
        """
        @pytest.fixture
        async def resource():
            await asyncio.sleep(0)
            yield "resource"

        @pytest.mark.anyio
        async def test_with_an_async_fixture(resource):
            assert resource == "resource"

        @pytest.mark.anyio
        async def test_without_fixtures():
            await asyncio.sleep(0)

        def test_sync():
            pass
        """,
    )
    result = pytester.runpytest(*FAST, f"--leakcheck-scope={scope}")
    assert "TestRunner" not in output_of(result)
    assert_clean(result, passed=3)


# -- kinds, threads, scopes


def test_task_leak_is_not_reported_when_only_threads_are_checked(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="unchecked-task"))
        """,
    )
    assert_clean(pytester.runpytest(*FAST, "--leakcheck-kinds=threads"), passed=1)


def test_thread_leaked_by_async_test_is_reported(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        RELEASE = threading.Event()
        STARTED = []

        def consume_forever():
            RELEASE.wait()

        @async_test
        async def test_starts_a_thread():
            thread = threading.Thread(target=consume_forever, name="async-test-consumer", daemon=True)
            STARTED.append(thread)
            thread.start()

        def test_release_the_thread():
            RELEASE.set()
            for thread in STARTED:
                thread.join(5)
                assert not thread.is_alive()
        """,
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(passed=2, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_starts_a_thread: 1 leaked thread" in output
    assert "thread 'async-test-consumer' in test_suite.consume_forever" in output


@pytest.mark.parametrize(("scope", "label"), [("module", "module test_suite.py"), ("session", "the test session")])
def test_pending_task_is_reported_by_module_and_session_checks(
    pytester: pytest.Pytester, scope: str, label: str
) -> None:
    """The function-scoped loop is gone long before the module's or the run's check."""
    write_asyncio_suite(
        pytester,
        "strict",
        """
        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="cancelled-at-loop-close"))

        def test_last():
            pass
        """,
    )
    result = pytester.runpytest(*FAST, f"--leakcheck-scope={scope}")
    result.assert_outcomes(passed=2, errors=1)
    output = output_of(result)
    assert f"leakcheck: {label}: 1 leaked task" in output
    assert "'cancelled-at-loop-close'" in output
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_last*"])


# -- unittest's IsolatedAsyncioTestCase


@pytest.mark.parametrize("base", ["unittest.IsolatedAsyncioTestCase", "leakcheck.AsyncLeakCheckTestCase"])
def test_task_leak_of_an_isolated_asyncio_testcase_shows_no_frame_of_asyncio_or_leakcheck(
    pytester: pytest.Pytester, base: str
) -> None:
    pytester.makeini(ASYNCIO_INI)
    pytester.makepyfile(
        test_suite=textwrap.dedent(
            f"""
            import asyncio
            import unittest

            import leakcheck

            KEEP = []

            class Tests({base}):
                leakcheck_options = {{"timeout": 0.1}}

                async def test_leaves_a_task(self):
                    KEEP.append(asyncio.create_task(asyncio.Event().wait(), name="case-straggler"))
            """
        )
    )
    result = pytester.runpytest(*FAST)
    result.assert_outcomes(failed=1)
    output = output_of(result)
    assert "'case-straggler'" in output
    assert "leakcheck.LeakError: leakcheck: 1 leaked task" in output
    for internal in ("runners.py", "base_events.py", "async_case.py", "_unittest.py", "_check.py", "_report."):
        assert internal not in output, internal


# -- the run goes on normally


def test_run_completes_normally_after_a_task_leak(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        import gc

        CANCELLED = []

        async def park():
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                CANCELLED.append(True)
                raise

        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(park(), name="parked-task"))

        @async_test
        async def test_next_async_test_runs():
            await asyncio.sleep(0)

        def test_the_runner_cancelled_the_leaked_task():
            gc.collect()
            assert CANCELLED == [True]
        """,
    )
    result = pytester.runpytest_subprocess(*FAST)
    result.assert_outcomes(passed=3, errors=1)
    output = output_of(result)
    assert "'parked-task'" in output
    assert "Task was destroyed but it is pending" not in output
    assert "Event loop is closed" not in output
    assert "Traceback" not in output
    assert "Exception ignored" not in output


def test_xdist_workers_report_task_leaks(pytester: pytest.Pytester) -> None:
    write_asyncio_suite(
        pytester,
        "strict",
        """
        @async_test
        async def test_leaves_a_task():
            keep(asyncio.create_task(asyncio.Event().wait(), name="worker-straggler"))

        @async_test
        async def test_clean():
            await asyncio.sleep(0)

        def test_sync():
            pass
        """,
    )
    result = pytester.runpytest_subprocess("-n", "2", *FAST)
    result.assert_outcomes(passed=3, errors=1)
    output = output_of(result)
    assert "leakcheck: test_suite.py::test_leaves_a_task: 1 leaked task" in output
    assert "'worker-straggler'" in output
    lines: List[str] = [line for line in result.outlines if line.startswith("ERROR ")]
    assert len(lines) == 1 and "test_leaves_a_task" in lines[0]


def test_anyio_lease_of_a_runner_without_an_asyncio_loop_leases_no_loop_and_breaks_nothing() -> None:
    """anyio's get_runner() hands out the runner already open, whatever its backend (trio's, say)."""
    import contextlib

    from leakcheck.integrations.pytest_loops import _lease

    class TrioLikeRunner:  # anyio's trio TestRunner has no get_loop()
        pass

    @contextlib.contextmanager
    def get_runner(backend: str, options: object) -> Iterator[TrioLikeRunner]:
        yield TrioLikeRunner()

    with _lease(get_runner, {}) as loop:
        assert loop is None
