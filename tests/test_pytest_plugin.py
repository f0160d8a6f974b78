"""The pytest plugin, seen from outside: inner pytest sessions run with ``pytester``.

Most inner sessions run in this process (``pytester.runpytest``).  Threads an
inner test leaks on purpose come from :mod:`pytester_helpers`; they block on a
gate until ``release_all()``, which the autouse fixture below calls after every
test.  Threads that inner fixtures start are stopped by those fixtures.
"""

from __future__ import annotations

# pytester drops the modules an in-process session imported.  Were the inner
# sessions the first to import concurrent.futures.thread, a later session would
# run its pool workers with the dropped module's _worker while leakcheck sees a
# fresh module, and could no longer tell idle pool workers apart (see
# leakcheck.kinds.thread_pools.executor_of).  Importing it here keeps one module for all.
import concurrent.futures.thread  # noqa: F401
import fnmatch
import subprocess
import sys
import textwrap
from importlib.metadata import entry_points
from typing import List

import pytest
import pytester_helpers

pytest_plugins = ["pytester"]

PYTEST_MAJOR = int(pytest.__version__.split(".")[0])
# pytest 9.2 turns a bad value of a typed ini option into a UsageError of its own
GRACE = "--leakcheck-timeout=0.1"
# hypothesis' plugin is re-imported by every in-process session (pytester
# restores sys.modules after each), which costs a second a run; pytest-asyncio
# warns about an unset option.  Neither matters to these tests.
QUIET = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-o", "asyncio_default_fixture_loop_scope=function")

# An inner test module header: threads park on a gate until the outer test ends.
LEAKY = """
    import threading
    import time

    import pytest

    import leakcheck
    import pytester_helpers
    from leakcheck import Snapshot, ignore_name


    def follow_logs(gate):
        gate.acquire()


    def push_metrics(gate):
        gate.acquire()


    def leak(name="log-follower", target=follow_logs):
        pytester_helpers.park(target, name)
"""


@pytest.fixture(autouse=True)
def release_inner_threads():
    try:
        yield
    finally:
        pytester_helpers.release_all()


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args)


def write_tests(pytester: pytest.Pytester, *sources: str, name: str = "test_inner") -> None:
    """Write an inner test module: the LEAKY header, then ``sources``, each dedented."""
    text = "\n".join(textwrap.dedent(source) for source in (LEAKY, *sources))
    pytester.makepyfile(**{name: text})


def reports(result: pytest.RunResult) -> List[str]:
    """The first line of every leak report in the output."""
    return [line for line in result.outlines if line.startswith("leakcheck: ")]


def report_of(result: pytest.RunResult, label: str) -> str:
    """The whole report of the window ``label`` (a nodeid, ``module X`` or ``the test session``)."""
    lines = result.outlines
    head = f"leakcheck: {label}: "
    start = next((i for i, line in enumerate(lines) if line.startswith(head)), None)
    assert start is not None, f"no report for {label!r} in:\n{result.stdout}"
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("___", "==="))), len(lines))
    return "\n".join(lines[start:end])


def assert_clean(result: pytest.RunResult, passed: int) -> None:
    result.assert_outcomes(passed=passed)
    assert result.ret == pytest.ExitCode.OK
    assert "leakcheck:" not in str(result.stdout)
    assert "LeakWarning" not in str(result.stdout)


def assert_usage_error(result: pytest.RunResult, *fragments: str) -> None:
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = str(result.stderr)
    for fragment in fragments:
        assert fragment in errors


# -- registration


def test_registered_through_the_pytest11_entry_point():
    found = entry_points()
    group = found.select(group="pytest11") if hasattr(found, "select") else found.get("pytest11", ())
    assert ("leakcheck", "leakcheck.integrations.pytest_plugin") in {(ep.name, ep.value) for ep in group}


def test_help_lists_the_options(pytester):
    result = run(pytester, "--help")
    result.stdout.fnmatch_lines(
        [
            "*--leakcheck *fail tests that leave threads*",
            "*--leakcheck-timeout=SECONDS*",
            "*--leakcheck-kinds=KINDS*",
            "*--leakcheck-scope=SCOPE*",
            "*leakcheck (bool)*",
            "*leakcheck_timeout*",
            "*leakcheck_kinds*",
            "*leakcheck_scope*",
            "*leakcheck_ignore (linelist)*",
        ]
    )


def test_plugin_is_loaded_by_autoload(pytester, monkeypatch):
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    result = run(pytester, "--help")
    assert "--leakcheck" not in str(result.stdout)


def test_importing_leakcheck_does_not_import_pytest():
    code = "import sys, leakcheck; assert 'pytest' not in sys.modules and '_pytest' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_marker_and_fixture_are_registered(pytester):
    run(pytester, "--markers").stdout.fnmatch_lines(["@pytest.mark.leakcheck(enabled=True, **options)*"])
    run(pytester, "--fixtures").stdout.re_match_lines([r"^leakcheck\b.*"])


def test_p_no_leakcheck_disables_the_plugin(pytester):
    result = run(pytester, "-p", "no:leakcheck", "--leakcheck")
    assert_usage_error(result, "unrecognized arguments: --leakcheck")
    assert "@pytest.mark.leakcheck" not in str(run(pytester, "-p", "no:leakcheck", "--markers").stdout)
    fixtures = run(pytester, "-p", "no:leakcheck", "--fixtures")
    fixtures.stdout.no_re_match_line(r"^leakcheck\b.*")
    # --fixtures only lists what is there: make sure the listing itself worked
    fixtures.stdout.re_match_lines([r"^tmp_path\b.*"])


def test_p_no_leakcheck_leaves_leaks_unchecked(pytester):
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    result = run(pytester, "-p", "no:leakcheck")
    assert_clean(result, passed=1)


# -- the flag and the ini switch


def test_flag_checks_every_test(pytester):
    write_tests(
        pytester,
        """
        def test_clean():
            pass

        def test_leaks():
            leak()
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(reports(result)) == 1
    assert fnmatch.fnmatch(
        reports(result)[0], "leakcheck: test_inner.py::test_leaks: 1 leaked thread (waited *s of a 0.10s grace period)"
    )
    report = report_of(result, "test_inner.py::test_leaks")
    assert "thread 'log-follower' in test_inner.follow_logs (" in report
    assert "Thread 'log-follower'" in report  # the stack block follows
    assert "in test_inner.follow_logs\n" in report
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*"])


def test_without_flag_or_ini_nothing_is_checked(pytester):
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    assert_clean(run(pytester), passed=1)


@pytest.mark.parametrize("config", ["ini", "pyproject"])
def test_ini_switch_checks_every_test(pytester, config):
    if config == "ini":
        pytester.makeini("[pytest]\nleakcheck = true\nleakcheck_timeout = 0.1\n")
    else:
        pytester.makepyprojecttoml("[tool.pytest.ini_options]\nleakcheck = true\nleakcheck_timeout = 0.1\n")
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "thread 'log-follower' in test_inner.follow_logs" in report_of(result, "test_inner.py::test_leaks")


def test_ini_switch_set_to_false_checks_nothing(pytester):
    pytester.makeini("[pytest]\nleakcheck = false\n")
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    assert_clean(run(pytester), passed=1)


@pytest.mark.parametrize("value", ["maybe", "2", "yes please"])
def test_bad_ini_switch_is_a_usage_error_naming_the_key(pytester, value):
    pytester.makeini(f"[pytest]\nleakcheck = {value}\n")
    assert_usage_error(run(pytester), "leakcheck: ini leakcheck must be true or false", repr(value))


# -- settings that would do nothing

NOTHING_CHECKED_WARNING = "*PytestConfigWarning: leakcheck: {} does nothing in this run: no test is checked*"


@pytest.mark.parametrize(
    "args, ini, named",
    [
        (["--leakcheck-timeout=0.5"], None, "--leakcheck-timeout"),
        (["--leakcheck-kinds=threads"], None, "--leakcheck-kinds"),
        (["--leakcheck-scope=module"], None, "--leakcheck-scope"),
        ([], "leakcheck_timeout = 0.5", "ini leakcheck_timeout"),
        ([], "leakcheck_kinds = tasks", "ini leakcheck_kinds"),
        ([], "leakcheck_ignore =\n    name:^pool-", "ini leakcheck_ignore"),
        ([], "leakcheck = false\nleakcheck_scope = session", "ini leakcheck_scope"),
    ],
)
def test_setting_in_a_run_that_checks_no_test_warns_naming_it(pytester, args, ini, named):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    result = run(pytester, *args)
    result.assert_outcomes(passed=1, warnings=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines([NOTHING_CHECKED_WARNING.format(named) + "--leakcheck*mark.leakcheck*fixture*"])
    assert "leakcheck: test_inner.py" not in str(result.stdout)  # and indeed nothing was checked


def test_settings_in_a_run_that_checks_no_test_are_named_together(pytester):
    write_tests(pytester, "def test_clean():\n    pass\n")
    result = run(pytester, "--leakcheck-timeout=0.5", "--leakcheck-kinds=threads")
    result.assert_outcomes(passed=1, warnings=1)
    result.stdout.fnmatch_lines(["*leakcheck: --leakcheck-timeout and --leakcheck-kinds do nothing in this run*"])


def test_unused_setting_is_a_usage_error_when_warnings_are_errors(pytester):
    write_tests(pytester, "def test_clean():\n    pass\n")
    result = run(pytester, "--leakcheck-timeout=0.5", "-W", "error::pytest.PytestConfigWarning")
    assert_usage_error(result, "leakcheck: --leakcheck-timeout does nothing in this run")


@pytest.mark.parametrize(
    "source",
    [
        "@pytest.mark.leakcheck\ndef test_marked():\n    pass\n",
        "pytestmark = pytest.mark.leakcheck\n\ndef test_in_marked_module():\n    pass\n",
        "def test_with_fixture(leakcheck):\n    pass\n",
    ],
    ids=["marker", "module-marker", "fixture"],
)
@pytest.mark.parametrize("args, ini", [(["--leakcheck-timeout=0.5"], None), ([], "leakcheck_timeout = 0.5")])
def test_setting_used_by_a_marker_or_the_fixture_does_not_warn(pytester, source, args, ini):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    write_tests(pytester, source, "def test_also_here():\n    pass\n")
    assert_clean(run(pytester, *args), passed=2)


def test_setting_used_by_a_marker_is_checked_with_it(pytester):
    write_tests(pytester, "@pytest.mark.leakcheck\ndef test_marked():\n    leak('marked-worker')\n")
    result = run(pytester, "--leakcheck-timeout=0")
    result.assert_outcomes(passed=1, errors=1)
    assert "of a 0.00s grace period" in report_of(result, "test_inner.py::test_marked")
    assert "does nothing" not in str(result.stdout)


@pytest.mark.parametrize("narrowing", [["test_inner.py"], ["-k", "unmarked"], ["-m", "not slow"]])
def test_ini_setting_in_a_narrowed_run_does_not_warn(pytester, narrowing):
    # The marked tests the ini setting serves may simply not be part of a narrowed run.
    pytester.makeini("[pytest]\nleakcheck_timeout = 0.5\nmarkers = slow\n")
    write_tests(pytester, "def test_unmarked():\n    pass\n")
    marked = "@pytest.mark.slow\n@pytest.mark.leakcheck\ndef test_marked():\n    pass\n"
    write_tests(pytester, marked, name="test_other")
    assert_clean(run(pytester, *narrowing), passed=1)


@pytest.mark.parametrize("option", ["--leakcheck-timeout", "--leakcheck-kinds", "--leakcheck-scope"])
def test_empty_command_line_setting_is_a_usage_error(pytester, option):
    assert_usage_error(run(pytester, "--leakcheck", f"{option}="), f"leakcheck: {option} is empty")
    assert_usage_error(run(pytester, "--leakcheck", option, " "), f"leakcheck: {option} is empty")


@pytest.mark.skipif(PYTEST_MAJOR < 8, reason="before pytest 8 an empty ini value cannot be told from an absent one")
@pytest.mark.parametrize("key", ["leakcheck_kinds", "leakcheck_scope"])
def test_empty_ini_setting_is_a_usage_error(pytester, key):
    pytester.makeini(f"[pytest]\nleakcheck = true\n{key} =\n")
    assert_usage_error(run(pytester), f"leakcheck: ini {key} is empty")


# -- the grace period

FLUSHER = """
    def finish_flushing():
        time.sleep(0.2)  # ends shortly after the test

    def test_flushes_in_background():
        pytester_helpers.start(finish_flushing, "log-flusher")
"""


@pytest.mark.parametrize(
    "ini, args",
    [
        (None, ["--leakcheck-timeout=1"]),
        ("leakcheck_timeout = 1", []),
        ("leakcheck_timeout = 0", ["--leakcheck-timeout=1"]),  # the command line wins
    ],
)
def test_thread_ending_within_the_grace_period_passes(pytester, ini, args):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    write_tests(pytester, FLUSHER)
    assert_clean(run(pytester, "--leakcheck", *args), passed=1)


@pytest.mark.parametrize(
    "ini, args",
    [
        (None, ["--leakcheck-timeout=0"]),
        ("leakcheck_timeout = 0", []),
        ("leakcheck_timeout = 1", ["--leakcheck-timeout=0"]),  # the command line wins
    ],
)
def test_thread_outliving_the_grace_period_is_reported(pytester, ini, args):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    write_tests(pytester, FLUSHER)
    result = run(pytester, "--leakcheck", *args)
    result.assert_outcomes(passed=1, errors=1)
    report = report_of(result, "test_inner.py::test_flushes_in_background")
    assert "of a 0.00s grace period" in report
    assert "thread 'log-flusher'" in report


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "abc", "1e400"])
def test_bad_timeout_is_a_usage_error(pytester, value):
    result = run(pytester, "--leakcheck", f"--leakcheck-timeout={value}")
    assert_usage_error(result, "leakcheck: --leakcheck-timeout (ini leakcheck_timeout) must be")


def test_bad_ini_timeout_is_a_usage_error(pytester):
    pytester.makeini("[pytest]\nleakcheck_timeout = soon\n")
    assert_usage_error(run(pytester), "'soon'")


def test_bad_ini_timeout_message_names_the_setting(pytester):
    pytester.makeini("[pytest]\nleakcheck_timeout = soon\n")
    assert_usage_error(run(pytester), "--leakcheck-timeout (ini leakcheck_timeout)", "number of seconds", "'soon'")


@pytest.mark.skipif(PYTEST_MAJOR < 9, reason="no native [tool.pytest] table before pytest 9")
def test_native_toml_number_timeout_is_accepted(pytester):
    pytester.makepyprojecttoml("[tool.pytest]\nleakcheck = true\nleakcheck_timeout = 0.1\n")
    write_tests(pytester, "def test_leaks():\n    leak()\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)


# -- ignore lines


@pytest.mark.parametrize(
    "line",
    ["name:^log-foll", "top:test_inner.follow_logs", "any:test_inner.tail_logs", "any:test_inner.follow_logs"],
)
def test_ini_ignore_line_ignores_the_leak(pytester, line):
    pytester.makeini(f"[pytest]\nleakcheck = true\nleakcheck_timeout = 0.1\nleakcheck_ignore =\n    {line}\n")
    write_tests(
        pytester,
        """
        def tail_logs(gate):
            follow_logs(gate)

        def test_ignored():
            leak("log-follower", tail_logs)

        def test_not_ignored():
            leak("metrics-pusher", push_metrics)
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert len(reports(result)) == 1
    report = report_of(result, "test_inner.py::test_not_ignored")
    assert "metrics-pusher" in report
    assert "log-follower" not in str(result.stdout)


def test_ini_top_line_does_not_match_lower_frames(pytester):
    pytester.makeini("[pytest]\nleakcheck_ignore =\n    top:test_inner.tail_logs\n")
    write_tests(
        pytester,
        """
        def tail_logs(gate):
            follow_logs(gate)

        def test_leaks():
            leak("log-follower", tail_logs)
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=1, errors=1)
    assert "log-follower" in report_of(result, "test_inner.py::test_leaks")


@pytest.mark.parametrize("line", ["foo:bar", "name:(", "top:nodots", "any:", "nocolon"])
def test_bad_ignore_line_is_a_usage_error(pytester, line):
    pytester.makeini(f"[pytest]\nleakcheck_ignore =\n    name:fine\n    {line}\n")
    assert_usage_error(run(pytester), "leakcheck_ignore", repr(line))


# -- kinds

KINDS_TESTS = """
    import asyncio

    TASKS = []

    async def heartbeat():
        await asyncio.Event().wait()

    def test_thread_leak():
        leak()

    @pytest.mark.asyncio
    async def test_task_leak():
        TASKS.append(asyncio.get_running_loop().create_task(heartbeat(), name="heartbeat-task"))
"""


BOTH_KINDS = {"test_thread_leak": "thread 'log-follower'", "test_task_leak": "task 'heartbeat-task'"}
THREADS_ONLY = {"test_thread_leak": "thread 'log-follower'"}
TASKS_ONLY = {"test_task_leak": "task 'heartbeat-task'"}


@pytest.mark.parametrize(
    "ini, args, reported, unreported",
    [
        (None, [], BOTH_KINDS, None),
        (None, ["--leakcheck-kinds=threads"], THREADS_ONLY, "heartbeat"),
        (None, ["--leakcheck-kinds=tasks"], TASKS_ONLY, "log-follower"),
        (None, ["--leakcheck-kinds= tasks , threads "], BOTH_KINDS, None),
        ("leakcheck_kinds = threads", [], THREADS_ONLY, "heartbeat"),
        ("leakcheck_kinds = tasks", [], TASKS_ONLY, "log-follower"),
        ("leakcheck_kinds = tasks", ["--leakcheck-kinds=threads"], THREADS_ONLY, "heartbeat"),  # the flag wins
    ],
)
def test_kinds_select_what_is_checked(pytester, ini, args, reported, unreported):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    write_tests(pytester, KINDS_TESTS)
    result = run(pytester, "--leakcheck", GRACE, *args)
    result.assert_outcomes(passed=2, errors=len(reported))
    assert len(reports(result)) == len(reported)
    for test, culprit in reported.items():
        assert culprit in report_of(result, f"test_inner.py::{test}")
    if unreported:
        assert unreported not in str(result.stdout)


@pytest.mark.parametrize("kinds", ["threads,sockets", ",", "Threads"])
def test_bad_kinds_are_a_usage_error(pytester, kinds):
    assert_usage_error(run(pytester, f"--leakcheck-kinds={kinds}"), "--leakcheck-kinds", repr(kinds))


def test_bad_ini_kinds_are_a_usage_error(pytester):
    pytester.makeini("[pytest]\nleakcheck_kinds = greenlets\n")
    assert_usage_error(run(pytester), "ini leakcheck_kinds", "'greenlets'")


# -- scope option validation


@pytest.mark.parametrize("ini, args", [(None, ["--leakcheck-scope=function"]), ("leakcheck_scope = function", [])])
def test_bad_scope_is_a_usage_error(pytester, ini, args):
    if ini:
        pytester.makeini(f"[pytest]\n{ini}\n")
    assert_usage_error(run(pytester, *args), "--leakcheck-scope", "test, module, session", "'function'")


# -- the marker


def test_marker_checks_one_test_without_the_flag(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1)
        def test_marked():
            leak("marked-worker")

        def test_unmarked():
            leak("unmarked-worker")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert len(reports(result)) == 1
    assert "marked-worker" in report_of(result, "test_inner.py::test_marked")
    assert "unmarked-worker" not in str(result.stdout)


def test_marker_on_a_class_checks_its_tests(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1)
        class TestMarked:
            def test_leaks(self):
                leak("marked-worker")

        def test_outside():
            leak("unmarked-worker")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert "marked-worker" in report_of(result, "test_inner.py::TestMarked::test_leaks")
    assert "unmarked-worker" not in str(result.stdout)


def test_marker_on_a_module_checks_its_tests(pytester):
    write_tests(pytester, "pytestmark = pytest.mark.leakcheck(timeout=0.1)\n\ndef test_leaks():\n    leak('marked')\n")
    write_tests(pytester, "def test_leaks():\n    leak('unmarked')\n", name="test_other")
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert "thread 'marked'" in report_of(result, "test_inner.py::test_leaks")
    assert "unmarked" not in str(result.stdout)


def test_marker_enabled_false_opts_out_of_the_flag(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(enabled=False)
        def test_opted_out():
            leak("opted-out-worker")

        def test_checked():
            leak("checked-worker")
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    assert "checked-worker" in report_of(result, "test_inner.py::test_checked")
    assert "opted-out-worker" not in str(result.stdout)


@pytest.mark.parametrize(
    "outer, inner, checked",
    [
        ("pytestmark = pytest.mark.leakcheck(enabled=False)", "@pytest.mark.leakcheck(timeout=0.1)", True),
        ("pytestmark = pytest.mark.leakcheck(timeout=0.1)", "@pytest.mark.leakcheck(enabled=False)", False),
    ],
)
def test_function_marker_beats_module_marker(pytester, outer, inner, checked):
    write_tests(pytester, f"{outer}\n\n{inner}\ndef test_leaks():\n    leak()\n")
    result = run(pytester)
    if checked:
        result.assert_outcomes(passed=1, errors=1)
        assert "log-follower" in report_of(result, "test_inner.py::test_leaks")
    else:
        assert_clean(result, passed=1)


def test_closest_marker_options_win(pytester):
    write_tests(
        pytester,
        """
        pytestmark = pytest.mark.leakcheck(timeout=5)

        @pytest.mark.leakcheck(timeout=0.1)
        class TestIt:
            @pytest.mark.leakcheck(timeout=0)
            def test_leaks(self):
                leak()
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "of a 0.00s grace period" in report_of(result, "test_inner.py::TestIt::test_leaks")


@pytest.mark.parametrize(
    "on_class, on_method, checked",
    [
        ("@pytest.mark.leakcheck(enabled=False)", "@pytest.mark.leakcheck(timeout=0.1)", True),
        ("@pytest.mark.leakcheck(timeout=0.1)", "@pytest.mark.leakcheck(enabled=False)", False),
    ],
)
def test_function_marker_beats_class_marker(pytester, on_class, on_method, checked):
    write_tests(
        pytester,
        f"""
        {on_class}
        class TestIt:
            {on_method}
            def test_leaks(self):
                leak()
        """,
    )
    result = run(pytester)
    if checked:
        result.assert_outcomes(passed=1, errors=1)
        assert "log-follower" in report_of(result, "test_inner.py::TestIt::test_leaks")
    else:
        assert_clean(result, passed=1)


@pytest.mark.parametrize(
    "on_module, on_class, checked",
    [
        ("pytestmark = pytest.mark.leakcheck(enabled=False)", "@pytest.mark.leakcheck(timeout=0.1)", True),
        ("pytestmark = pytest.mark.leakcheck(timeout=0.1)", "@pytest.mark.leakcheck(enabled=False)", False),
    ],
)
def test_class_marker_beats_module_marker(pytester, on_module, on_class, checked):
    write_tests(
        pytester,
        f"""
        {on_module}

        {on_class}
        class TestIt:
            def test_leaks(self):
                leak()
        """,
    )
    result = run(pytester)
    if checked:
        result.assert_outcomes(passed=1, errors=1)
        assert "log-follower" in report_of(result, "test_inner.py::TestIt::test_leaks")
    else:
        assert_clean(result, passed=1)


def test_marker_timeout_option(pytester):
    write_tests(pytester, "@pytest.mark.leakcheck(timeout=0)\ndef test_leaks():\n    leak()\n")
    result = run(pytester, "--leakcheck-timeout=5")
    result.assert_outcomes(passed=1, errors=1)
    report = report_of(result, "test_inner.py::test_leaks")
    assert "of a 0.00s grace period" in report
    assert "log-follower" in report


def test_marker_ignore_option_ignores_only_what_it_matches(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1, ignore=[leakcheck.ignore_name("^log-follower$")])
        def test_leaks():
            leak("log-follower")
            leak("metrics-pusher", push_metrics)
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "metrics-pusher" in report_of(result, "test_inner.py::test_leaks")
    assert "log-follower" not in str(result.stdout)


def test_marker_ignore_option_takes_a_single_matcher_like_no_leaks(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1, ignore=ignore_name("^log-follower$"))
        def test_leaks():
            leak("log-follower")
            leak("metrics-pusher", push_metrics)
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "metrics-pusher" in report_of(result, "test_inner.py::test_leaks")
    assert "log-follower" not in str(result.stdout)


def test_marker_ignore_adds_to_the_ini_ignore_lines(pytester):
    pytester.makeini("[pytest]\nleakcheck_ignore =\n    name:^log-follower$\n")
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1, ignore=[leakcheck.ignore_name("^metrics-pusher$")])
        def test_leaks():
            leak("log-follower")
            leak("metrics-pusher", push_metrics)
            leak("cache-warmer")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "cache-warmer" in report_of(result, "test_inner.py::test_leaks")
    assert "log-follower" not in str(result.stdout)
    assert "metrics-pusher" not in str(result.stdout)


def test_marker_threads_false_skips_threads(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1, threads=False)
        def test_threads_unchecked():
            leak("unchecked-worker")

        @pytest.mark.leakcheck(timeout=0.1)
        def test_threads_checked():
            leak("checked-worker")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=2, errors=1)
    assert "checked-worker" in report_of(result, "test_inner.py::test_threads_checked")
    assert "unchecked-worker" not in str(result.stdout)


def test_marker_on_leak_warn_warns_and_passes(pytester):
    write_tests(pytester, "@pytest.mark.leakcheck(timeout=0.1, on_leak='warn')\ndef test_leaks():\n    leak()\n")
    result = run(pytester)
    result.assert_outcomes(passed=1, warnings=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["*warnings summary*", "*test_inner.py::test_leaks*", "*LeakWarning: leakcheck: 1 leaked thread*"]
    )
    assert "thread 'log-follower' in test_inner.follow_logs" in str(result.stdout)


def line_of(pytester: pytest.Pytester, text: str, name: str = "test_inner") -> int:
    """The line number of the first line of an inner test module that holds ``text``."""
    lines = (pytester.path / f"{name}.py").read_text().splitlines()
    return next(number for number, line in enumerate(lines, 1) if text in line)


def test_on_leak_warn_points_at_the_test_not_at_pytest(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1, on_leak="warn")
        def test_marked():
            leak("marked-follower")

        @leakcheck.no_leaks(timeout=0.1, on_leak="warn")
        def test_decorated():
            leak("decorated-follower")
        """,
    )
    write_tests(
        pytester,
        """
        pytestmark = pytest.mark.leakcheck(timeout=0.1, on_leak="warn")

        def test_in_module():
            leak("module-follower")
        """,
        name="test_module_warn",
    )
    result = run(pytester, "--leakcheck-scope=module", "-W", "always::leakcheck.LeakWarning")
    result.assert_outcomes(passed=3, warnings=3)
    assert result.ret == pytest.ExitCode.OK
    marked, decorated = line_of(pytester, "mark.leakcheck(timeout"), line_of(pytester, "no_leaks(timeout")
    result.stdout.fnmatch_lines(
        [
            "test_inner.py::test_marked",
            f"  *{pytester.path.name}/test_inner.py:{marked}: LeakWarning: leakcheck: 1 leaked thread*",
            "test_inner.py::test_decorated",
            f"  *{pytester.path.name}/test_inner.py:{decorated}: LeakWarning: leakcheck: 1 leaked thread*",
            "test_module_warn.py::test_in_module",
            f"  *{pytester.path.name}/test_module_warn.py:1: LeakWarning: leakcheck: 1 leaked thread*",
        ]
    )
    for culprit in ("marked-follower", "decorated-follower", "module-follower"):
        assert f"thread '{culprit}' in " in str(result.stdout)
    assert "_callers.py" not in str(result.stdout)  # pluggy's frame, which the warning used to name


@pytest.mark.parametrize(
    "marker, message",
    [
        ("@pytest.mark.leakcheck(timout=1)", "unknown option 'timout'"),
        ("@pytest.mark.leakcheck(timeout='x')", "timeout must be a number of seconds"),
        ("@pytest.mark.leakcheck(timeout=-1)", "timeout must be a finite number of seconds >= 0"),
        ("@pytest.mark.leakcheck(0.1)", "positional arguments"),
        ("@pytest.mark.leakcheck(enabled='no')", "enabled must be True or False"),
        ("@pytest.mark.leakcheck(threads=1)", "threads must be True or False"),
        ("@pytest.mark.leakcheck(on_leak='explode')", "on_leak must be"),
        ("@pytest.mark.leakcheck(ignore='log-follower')", "use ignore_name()"),
        ("@pytest.mark.leakcheck(threads=False, tasks=False)", "threads=False and tasks=False leave nothing to check"),
    ],
)
def test_bad_marker_is_a_usage_error_naming_the_test(pytester, marker, message):
    write_tests(pytester, f"{marker}\ndef test_marked():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, "test_inner.py::test_marked: @pytest.mark.leakcheck: ", message)
    result.assert_outcomes()  # nothing ran


def test_marker_turning_off_the_only_kind_the_command_line_leaves_is_a_usage_error(pytester):
    write_tests(pytester, "@pytest.mark.leakcheck(threads=False)\ndef test_marked():\n    pass\n")
    result = run(pytester, "--leakcheck-kinds=threads")
    assert_usage_error(
        result,
        "test_inner.py::test_marked: @pytest.mark.leakcheck: threads=False and tasks=False (with --leakcheck-kinds",
        "enabled=False",
    )


def test_marker_with_both_kinds_off_and_forbid_checks_the_stacks(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(threads=False, tasks=False, forbid="follow_logs", timeout=0.1)
        def test_forbids():
            leak("forbidden-follower")
        """,
    )
    result = run(pytester)
    result.assert_outcomes(passed=1, errors=1)
    assert "forbidden: thread 'forbidden-follower'" in report_of(result, "test_inner.py::test_forbids")


def test_bad_module_marker_is_a_usage_error_naming_the_module(pytester):
    write_tests(pytester, "pytestmark = pytest.mark.leakcheck(timout=1)\n\ndef test_it():\n    pass\n")
    assert_usage_error(run(pytester), "test_inner.py: @pytest.mark.leakcheck: unknown option 'timout'")


def test_marker_works_under_strict_markers(pytester):
    write_tests(pytester, "@pytest.mark.leakcheck(timeout=0.1)\ndef test_marked():\n    pass\n")
    assert_clean(run(pytester, "--strict-markers"), passed=1)


def test_marker_is_not_named_no_leaks(pytester):
    write_tests(pytester, "@pytest.mark.no_leaks\ndef test_marked():\n    pass\n")
    result = run(pytester, "--strict-markers")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*'no_leaks' not found in `markers` configuration option*"])
    assert "@pytest.mark.no_leaks" not in str(run(pytester, "--markers").stdout)


# -- the fixture


def test_fixture_turns_checking_on(pytester):
    write_tests(
        pytester,
        """
        def test_with_fixture(leakcheck):
            leak("fixture-user")

        def test_without_fixture():
            leak("plain-user")
        """,
    )
    result = run(pytester, GRACE)
    result.assert_outcomes(passed=2, errors=1)
    assert "fixture-user" in report_of(result, "test_inner.py::test_with_fixture")
    assert "plain-user" not in str(result.stdout)


def test_fixture_methods(pytester):
    write_tests(
        pytester,
        """
        def tail(stop):
            stop.wait()

        def test_methods(leakcheck):
            stop = threading.Event()
            thread = threading.Thread(target=tail, args=(stop,), name="log-tailer", daemon=True)
            thread.start()
            try:
                snapshot = leakcheck.snapshot()
                assert isinstance(snapshot, Snapshot)
                assert "log-tailer" in [info.name for info in snapshot.threads]
                assert [info.name for info in leakcheck.find_stacks("test_inner.tail")] == ["log-tailer"]
                assert leakcheck.find_stacks("no_such_function") == []
                assert [info.name for info in leakcheck.assert_stack_match("tail")] == ["log-tailer"]
                with pytest.raises(AssertionError, match="no_such_function"):
                    leakcheck.assert_stack_match("no_such_function")
                leakcheck.assert_no_stack_match("no_such_function")
                with pytest.raises(AssertionError, match="log-tailer"):
                    leakcheck.assert_no_stack_match("test_inner.tail", timeout=0.05)
            finally:
                stop.set()
            leakcheck.assert_no_stack_match("test_inner.tail", timeout=5)
            assert not thread.is_alive()
        """,
    )
    assert_clean(run(pytester), passed=1)


def test_fixture_offers_what_a_test_calls_on_the_module_it_hides(pytester):
    # The fixture's name hides the module inside the test: what the README calls as leakcheck.X works.
    write_tests(
        pytester,
        """
        def tail_logs(gate):
            follow_logs(gate)

        def start_auditor():  # calls the function that starts the thread: in its creation stack
            pytester_helpers.start(follow_logs, "log-auditor", pytester_helpers.gate())

        def test_matchers(leakcheck: leakcheck.LeakCheckFixture):
            leakcheck.ignore(
                leakcheck.ignore_name("^log-follower$"),
                leakcheck.ignore_top_function("test_inner.push_metrics"),
                leakcheck.ignore_any_function("test_inner.tail_logs"),
                leakcheck.ignore_created_by("test_inner.start_auditor"),
            )
            leak("log-follower")
            leak("metrics-pusher", push_metrics)
            leak("log-tailer", tail_logs)
            start_auditor()
            leak("log-reporter")
            taken = leakcheck.snapshot()
            assert [info.name for info in leakcheck.find_stacks("tail_logs", source=taken)] == ["log-tailer"]
            leakcheck.assert_stack_match("push_metrics", source=taken)
            leakcheck.assert_no_stack_match("no_such_function", source=taken)
        """,
    )
    result = run(pytester, GRACE)
    result.assert_outcomes(passed=1, errors=1)
    report = report_of(result, "test_inner.py::test_matchers")
    assert "thread 'log-reporter' in test_inner.follow_logs" in report
    for ignored in ("log-follower", "metrics-pusher", "log-tailer", "log-auditor"):
        assert ignored not in report


def test_fixture_ignore_applies_to_its_own_test_only(pytester):
    write_tests(
        pytester,
        """
        def test_ignores(leakcheck):
            leakcheck.ignore(ignore_name("^log-follower$"))
            with pytest.raises(TypeError):
                leakcheck.ignore("log-follower")
            leak("log-follower")
            leak("metrics-pusher", push_metrics)

        def test_does_not_ignore(leakcheck):
            leak("log-follower")
        """,
    )
    result = run(pytester, GRACE)
    result.assert_outcomes(passed=2, errors=2)
    first = report_of(result, "test_inner.py::test_ignores")
    assert "metrics-pusher" in first
    assert "log-follower" not in first
    assert "log-follower" in report_of(result, "test_inner.py::test_does_not_ignore")


# -- how a failing no_leaks block reads


def test_failing_no_leaks_block_shows_the_report_and_no_frame_of_leakcheck(pytester):
    write_tests(
        pytester,
        """
        import asyncio

        from leakcheck import no_leaks

        def test_with_block():
            with no_leaks(timeout=0.1):
                leak("block-follower")

        @no_leaks(timeout=0.1)
        def test_decorated():
            leak("decorated-follower")

        def test_async_block():
            async def body():
                async with no_leaks(timeout=0.1):
                    leak("async-follower")

            asyncio.run(body())
        """,
    )
    result = run(pytester)
    result.assert_outcomes(failed=3)
    output = str(result.stdout)
    for culprit in ("block-follower", "decorated-follower", "async-follower"):
        assert f"thread '{culprit}' in test_inner.follow_logs" in output
    assert len(fnmatch.filter(result.outlines, "E * leakcheck.LeakError: leakcheck: 1 leaked thread *")) == 3
    internals = ("_check.py", "act_on_report", "def finish", "report = LeakReport", "options = Options", "_report.")
    for internal in internals:
        assert internal not in output, internal


# -- what a test is blamed for

POLLER = """
    def poll_metrics(stop):
        stop.wait()

    def start_poller(stop):
        thread = threading.Thread(target=poll_metrics, args=(stop,), name="metrics-poller", daemon=True)
        thread.start()
        return thread
"""


def test_thread_a_function_fixture_starts_and_stops_is_clean(pytester):
    write_tests(
        pytester,
        POLLER,
        """
        @pytest.fixture
        def poller():
            stop = threading.Event()
            thread = start_poller(stop)
            yield thread
            stop.set()
            thread.join(5)

        def test_uses_poller(poller):
            assert poller.is_alive()
        """,
    )
    assert_clean(run(pytester, "--leakcheck", GRACE), passed=1)


def test_thread_the_test_starts_and_a_fixture_teardown_stops_is_clean(pytester):
    write_tests(
        pytester,
        POLLER,
        """
        @pytest.fixture
        def stopper():
            stop = threading.Event()
            threads = []
            yield stop, threads
            stop.set()
            for thread in threads:
                thread.join(5)

        def test_starts_poller(stopper):
            stop, threads = stopper
            threads.append(start_poller(stop))
        """,
    )
    assert_clean(run(pytester, "--leakcheck", GRACE), passed=1)


def test_thread_a_function_fixture_leaks_is_blamed_on_the_test(pytester):
    write_tests(
        pytester,
        """
        @pytest.fixture
        def follower():
            leak("fixture-follower")

        def test_uses_follower(follower):
            pass
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=1, errors=1)
    report = report_of(result, "test_inner.py::test_uses_follower")
    assert "thread 'fixture-follower' in test_inner.follow_logs" in report


BROAD_FIXTURE = """
    import threading

    import pytest

    def serve(stop):
        stop.wait()

    @pytest.fixture(scope="{scope}")
    def service():
        stop = threading.Event()
        thread = threading.Thread(target=serve, args=(stop,), name="shared-service", daemon=True)
        thread.start()
        yield thread
        stop.set()
        thread.join(5)
"""

USES_SERVICE = """
    class TestService:
        def test_first(self, service):
            assert service.is_alive()

        def test_second(self, service):
            assert service.is_alive()
"""


@pytest.mark.parametrize("scope", ["class", "module", "session"])
def test_thread_a_broader_fixture_starts_is_not_blamed(pytester, scope):
    pytester.makepyfile(test_inner=BROAD_FIXTURE.format(scope=scope) + USES_SERVICE)
    assert_clean(run(pytester, "--leakcheck", GRACE), passed=2)


def test_thread_a_package_fixture_starts_is_not_blamed(pytester):
    package = pytester.mkpydir("pkg")
    (package / "conftest.py").write_text(textwrap.dedent(BROAD_FIXTURE.format(scope="package")))
    (package / "test_one.py").write_text(textwrap.dedent(USES_SERVICE))
    (package / "test_two.py").write_text("def test_third(service):\n    assert service.is_alive()\n")
    assert_clean(run(pytester, "--leakcheck", GRACE), passed=3)


def test_unittest_class_and_test_fixtures_are_not_blamed_but_a_test_leak_is(pytester):
    write_tests(
        pytester,
        """
        import unittest

        def serve(stop):
            stop.wait()

        def start(name):
            stop = threading.Event()
            thread = threading.Thread(target=serve, args=(stop,), name=name, daemon=True)
            thread.start()
            return stop, thread

        class TestService(unittest.TestCase):
            @classmethod
            def setUpClass(cls):
                cls.service = start("class-service")

            @classmethod
            def tearDownClass(cls):
                cls.service[0].set()
                cls.service[1].join(5)

            def setUp(self):
                self.helper = start("test-helper")

            def tearDown(self):
                self.helper[0].set()
                self.helper[1].join(5)

            def test_first(self):
                assert self.service[1].is_alive()

            def test_second(self):
                assert self.service[1].is_alive()

            def test_leaks(self):
                leak("unittest-leak")
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=3, errors=1)
    assert len(reports(result)) == 1
    assert "thread 'unittest-leak' in test_inner.follow_logs" in report_of(
        result, "test_inner.py::TestService::test_leaks"
    )


@pytest.mark.parametrize("scope", ["test", "module", "session"])
def test_thread_started_when_the_test_module_is_imported_is_not_blamed(pytester, scope):
    write_tests(
        pytester,
        """
        leak("started-on-import")

        def test_first():
            pass

        def test_second():
            pass
        """,
    )
    assert_clean(run(pytester, "--leakcheck", f"--leakcheck-scope={scope}", GRACE), passed=2)


# -- the report


def test_leak_is_reported_once(pytester):
    write_tests(
        pytester,
        """
        def test_1():
            leak()

        def test_2():
            pass

        def test_3():
            pass
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=3, errors=1)
    assert len(reports(result)) == 1
    assert "log-follower" in report_of(result, "test_inner.py::test_1")
    assert str(result.stdout).count("Thread 'log-follower'") == 1


def test_leak_reported_by_a_test_is_not_reported_again_by_its_module(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(timeout=0.1)
        def test_marked():
            leak("marked-worker")

        def test_unmarked():
            leak("unmarked-worker")
        """,
    )
    result = run(pytester, "--leakcheck", "--leakcheck-scope=module", GRACE)
    result.assert_outcomes(passed=2, errors=2)
    assert "marked-worker" in report_of(result, "test_inner.py::test_marked")
    module_report = report_of(result, "module test_inner.py")
    assert "unmarked-worker" in module_report
    assert "'marked-worker'" not in module_report


# -- scope

TWO_LEAKY_MODULES = {
    "test_alpha": """
        def test_a1():
            leak("alpha-worker")

        def test_a2():
            pass
    """,
    "test_beta": """
        def test_b1():
            leak("beta-worker")

        def test_b2():
            pass
    """,
}


def test_session_scope_reports_once_for_the_whole_run(pytester):
    for name, source in TWO_LEAKY_MODULES.items():
        write_tests(pytester, source, name=name)
    result = run(pytester, "--leakcheck", "--leakcheck-scope=session", GRACE)
    result.assert_outcomes(passed=4, errors=1)
    assert len(reports(result)) == 1
    assert fnmatch.fnmatch(reports(result)[0], "leakcheck: the test session: 2 leaked threads (waited *s of a 0.10s*")
    report = report_of(result, "the test session")
    assert "thread 'alpha-worker' in test_alpha.follow_logs" in report
    assert "thread 'beta-worker' in test_beta.follow_logs" in report
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_b2*"])


@pytest.mark.parametrize("scope, clean", [("session", True), ("test", False)])
def test_thread_started_in_one_test_and_stopped_in_another(pytester, scope, clean):
    write_tests(
        pytester,
        """
        STOP = threading.Event()
        THREADS = []

        def relay(stop):
            stop.wait()

        def test_starts():
            thread = threading.Thread(target=relay, args=(STOP,), name="relay", daemon=True)
            thread.start()
            THREADS.append(thread)

        def test_stops():
            STOP.set()
            THREADS[0].join(5)
        """,
    )
    result = run(pytester, "--leakcheck", f"--leakcheck-scope={scope}", GRACE)
    if clean:
        assert_clean(result, passed=2)
    else:
        result.assert_outcomes(passed=2, errors=1)
        assert "relay" in report_of(result, "test_inner.py::test_starts")


@pytest.mark.parametrize("how", ["flag", "ini"])
def test_module_scope_reports_once_per_leaking_module(pytester, how):
    write_tests(
        pytester, "def test_a1():\n    leak('alpha-1')\n\ndef test_a2():\n    leak('alpha-2')\n", name="test_alpha"
    )
    write_tests(pytester, "def test_b1():\n    pass\n", name="test_beta")
    write_tests(pytester, "def test_c1():\n    leak('gamma-1')\n\ndef test_c2():\n    pass\n", name="test_gamma")
    if how == "ini":
        pytester.makeini("[pytest]\nleakcheck = true\nleakcheck_scope = module\nleakcheck_timeout = 0.1\n")
        result = run(pytester)
    else:
        result = run(pytester, "--leakcheck", "--leakcheck-scope=module", GRACE)
    result.assert_outcomes(passed=5, errors=2)
    assert [line.split(": ")[1] for line in reports(result)] == ["module test_alpha.py", "module test_gamma.py"]
    alpha = report_of(result, "module test_alpha.py")
    assert "'alpha-1'" in alpha
    assert "'alpha-2'" in alpha
    assert "'gamma-1'" in report_of(result, "module test_gamma.py")
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_a2*", "*ERROR at teardown of test_c2*"])


def test_module_marker_under_module_scope_checks_the_module_once(pytester):
    write_tests(
        pytester,
        """
        pytestmark = pytest.mark.leakcheck(timeout=0.1)

        def test_1():
            leak("marked-1")

        def test_2():
            leak("marked-2")
        """,
    )
    write_tests(pytester, "def test_3():\n    leak('unmarked')\n", name="test_other")
    result = run(pytester, "--leakcheck-scope=module")
    result.assert_outcomes(passed=3, errors=1)
    assert len(reports(result)) == 1
    module_report = report_of(result, "module test_inner.py")
    assert "'marked-1'" in module_report
    assert "'marked-2'" in module_report
    assert "unmarked" not in str(result.stdout)


OPTED_OUT = """
    @pytest.mark.leakcheck(enabled=False)
    def test_opted_out():
        leak("opted-out-worker")
"""

BLAMED = """
    def test_blamed():
        leak("blamed-worker")
"""


@pytest.mark.parametrize("scope", ["module", "session"])
@pytest.mark.parametrize("last", [False, True], ids=["opted-out-first", "opted-out-last"])
def test_opted_out_test_is_not_blamed_under_broader_scopes(pytester, scope, last):
    write_tests(pytester, *((BLAMED, OPTED_OUT) if last else (OPTED_OUT, BLAMED)))
    result = run(pytester, "--leakcheck", f"--leakcheck-scope={scope}", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    label = "module test_inner.py" if scope == "module" else "the test session"
    assert "blamed-worker" in report_of(result, label)
    assert "opted-out-worker" not in str(result.stdout)


@pytest.mark.parametrize("stops", [True, False])
def test_session_fixture_thread_under_session_scope(pytester, stops):
    """What a session fixture stops at session end is clean; what it leaves running is the run's leak."""
    pytester.makeconftest(
        f"""
        import threading

        import pytest

        import pytester_helpers

        def serve(gate):
            gate.acquire()

        @pytest.fixture(scope="session")
        def service():
            if {stops}:
                gate = threading.Lock()
                gate.acquire()
                thread = threading.Thread(target=serve, args=(gate,), name="session-service", daemon=True)
                thread.start()
                yield thread
                gate.release()
                thread.join(5)
            else:
                yield pytester_helpers.park(serve, "session-service")
        """
    )
    write_tests(pytester, "def test_1(service):\n    pass\n\ndef test_2(service):\n    pass\n")
    result = run(pytester, "--leakcheck", "--leakcheck-scope=session", GRACE)
    if stops:
        assert_clean(result, passed=2)
    else:
        result.assert_outcomes(passed=2, errors=1)
        assert "thread 'session-service' in conftest.serve" in report_of(result, "the test session")


TEARDOWN_STARTS = """
    import pytest

    import pytester_helpers

    def serve(gate):
        gate.acquire()

    @pytest.fixture(scope="session")
    def service():
        yield
        pytester_helpers.park(serve, "started-by-session-teardown")

    @pytest.fixture(scope="module")
    def resource():
        yield
        pytester_helpers.park(serve, "started-by-module-teardown")
"""


@pytest.mark.parametrize("track", ["yes", "no"])
def test_what_a_broader_fixtures_teardown_starts_is_not_the_last_tests(pytester, track):
    # The module's and the session's fixtures are torn down in the teardown of their last test.
    pytester.makeconftest(TEARDOWN_STARTS)
    write_tests(pytester, "def test_1(service, resource):\n    pass\n\ndef test_2(service, resource):\n    pass\n")
    write_tests(pytester, "def test_3(service):\n    pass\n", name="test_other")
    result = run(pytester, "--leakcheck", f"--leakcheck-track={track}", GRACE)
    assert_clean(result, passed=3)


def test_what_a_module_fixtures_teardown_starts_is_the_modules_leak_under_module_scope(pytester):
    pytester.makeconftest(TEARDOWN_STARTS)
    write_tests(pytester, "def test_1(resource):\n    pass\n\ndef test_2(resource):\n    pass\n")
    result = run(pytester, "--leakcheck", "--leakcheck-scope=module", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    assert "thread 'started-by-module-teardown' in conftest.serve" in report_of(result, "module test_inner.py")


# -- parallel runs


def test_xdist_workers_check_their_own_tests(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", pytester_helpers.TESTS_DIR)
    write_tests(
        pytester,
        """
        def test_clean_1():
            pass

        def test_leaks():
            leak()

        def test_clean_2():
            pass

        def test_clean_3():
            pass
        """,
    )
    result = pytester.runpytest_subprocess(*QUIET, "-n", "2", "--leakcheck", GRACE, timeout=120)
    result.assert_outcomes(passed=4, errors=1)
    result.stdout.fnmatch_lines(["*created: 2/2 workers*"])
    assert "thread 'log-follower' in test_inner.follow_logs" in report_of(result, "test_inner.py::test_leaks")
    assert len(reports(result)) == 1


# -- scenarios

JOBS = """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="jobs")

    def square(x):
        return x * x

    def pool_threads():
        return [thread for thread in threading.enumerate() if thread.name.startswith("jobs")]
"""

# Released and shut down when the inner session ends, before pytester drops the module.
JOBS_CONFTEST = """
    import sys

    import pytester_helpers

    def pytest_unconfigure():
        pytester_helpers.release_all()
        jobs = sys.modules.get("jobs")
        if jobs is not None:
            jobs.POOL.shutdown(wait=True)
"""


def test_scenario_lazy_module_level_executor_is_clean(pytester):
    pytester.makepyfile(jobs=JOBS)
    pytester.makeconftest(JOBS_CONFTEST)
    write_tests(
        pytester,
        """
        import jobs

        def test_first_job_starts_the_first_worker():
            assert jobs.pool_threads() == []
            assert jobs.POOL.submit(jobs.square, 3).result() == 9
            assert len(jobs.pool_threads()) == 1

        def test_more_jobs():
            assert list(jobs.POOL.map(jobs.square, range(8))) == [x * x for x in range(8)]

        def test_concurrent_jobs_start_more_workers():
            barrier = threading.Barrier(3)
            futures = [jobs.POOL.submit(barrier.wait, 5) for _ in range(2)]
            barrier.wait(5)
            for future in futures:
                future.result()
            assert len(jobs.pool_threads()) >= 2
        """,
    )
    assert_clean(run(pytester, "--leakcheck"), passed=3)


def test_scenario_executor_job_blocking_past_the_test_is_reported(pytester):
    pytester.makepyfile(jobs=JOBS)
    pytester.makeconftest(JOBS_CONFTEST)
    write_tests(
        pytester,
        """
        import jobs

        FUTURES = []

        def wait_for_upstream(gate):
            gate.acquire()

        def test_job_outlives_the_test():
            assert jobs.pool_threads() == []
            FUTURES.append(jobs.POOL.submit(wait_for_upstream, pytester_helpers.gate()))

        def test_later_jobs():
            assert jobs.POOL.submit(jobs.square, 4).result() == 16
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    assert len(reports(result)) == 1
    report = report_of(result, "test_inner.py::test_job_outlives_the_test")
    assert "in test_inner.wait_for_upstream (" in report


WEBAPP = """
    import http.server
    import threading
    import urllib.request

    ENTERED = threading.Event()
    RELEASE = threading.Event()
    HANDLERS = []
    CLIENTS = []

    class AppHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/block":
                HANDLERS.append(threading.current_thread())
                ENTERED.set()
                RELEASE.wait()
                return
            body = b"hello"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format, *args):
            pass

    def get(server, path="/"):
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5) as response:
            return response.read()
"""

WEBAPP_CONFTEST = """
    import http.server
    import threading

    import pytest

    import webapp

    @pytest.fixture(scope="session")
    def server():
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), webapp.AppHandler)
        thread = threading.Thread(target=httpd.serve_forever, name="http-server", daemon=True)
        thread.start()
        try:
            yield httpd
        finally:
            webapp.RELEASE.set()
            httpd.shutdown()
            httpd.server_close()
            thread.join(5)
            for handler in webapp.HANDLERS:
                handler.join(5)
            for client in webapp.CLIENTS:
                client.close()
"""


def test_scenario_session_server_fixture_is_clean(pytester):
    pytester.makepyfile(webapp=WEBAPP)
    pytester.makeconftest(WEBAPP_CONFTEST)
    pytester.makepyfile(
        test_inner="""
        import webapp

        def test_home(server):
            assert webapp.get(server) == b"hello"

        def test_again(server):
            assert webapp.get(server) == b"hello"

        def test_many(server):
            for _ in range(5):
                assert webapp.get(server) == b"hello"
        """
    )
    assert_clean(run(pytester, "--leakcheck"), passed=3)


def test_scenario_request_handler_left_blocked_is_reported(pytester):
    pytester.makepyfile(webapp=WEBAPP)
    pytester.makeconftest(WEBAPP_CONFTEST)
    pytester.makepyfile(
        test_inner="""
        import socket

        import webapp

        def test_home(server):
            assert webapp.get(server) == b"hello"

        def test_leaves_a_request_hanging(server):
            client = socket.create_connection(server.server_address[:2], timeout=5)
            webapp.CLIENTS.append(client)
            client.sendall(b"GET /block HTTP/1.0\\r\\n\\r\\n")
            assert webapp.ENTERED.wait(5)

        def test_after(server):
            assert webapp.get(server) == b"hello"
        """
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=3, errors=1)
    assert len(reports(result)) == 1
    report = report_of(result, "test_inner.py::test_leaves_a_request_hanging")
    assert "in webapp.AppHandler.do_GET (" in report
    assert "http-server" not in str(result.stdout)


def test_scenario_failing_test_that_also_leaks(pytester):
    write_tests(
        pytester,
        """
        def test_fails_and_leaks():
            leak()
            answer = 41
            assert answer == 42
        """,
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(failed=1, errors=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(
        [
            "*ERROR at teardown of test_fails_and_leaks*",
            "leakcheck: test_inner.py::test_fails_and_leaks: 1 leaked thread*",
            "*FAILURES*",
            "*assert 41 == 42*",
        ]
    )
    assert "thread 'log-follower' in test_inner.follow_logs" in report_of(result, "test_inner.py::test_fails_and_leaks")
    result.stdout.fnmatch_lines(
        ["FAILED test_inner.py::test_fails_and_leaks*", "ERROR test_inner.py::test_fails_and_leaks*"]
    )


# -- kinds beyond threads and tasks: --leakcheck-kinds, ini leakcheck_kinds and the marker


class _Kept:
    """A plugin for an inner session: its ``kept`` fixture holds what inner tests leak on purpose.

    The outer test closes or waits for it: an in-process session's leaks are this process's.
    """

    def __init__(self) -> None:
        self.objects: list = []

    @pytest.fixture
    def kept(self) -> list:
        return self.objects


def run_keeping(pytester: pytest.Pytester, kept: _Kept, *args: str) -> pytest.RunResult:
    return pytester.runpytest(*QUIET, *args, plugins=[kept])


FILES = """
    def test_leaves_a_file_open(kept, tmp_path):
        kept.append(open(tmp_path / "leaked.log", "w"))

    def test_closes_its_file(tmp_path):
        with open(tmp_path / "closed.log", "w") as f:
            f.write("x")
"""


def test_kinds_option_with_fds_reports_a_leaked_file_by_its_path(pytester):
    write_tests(pytester, FILES)
    kept = _Kept()
    try:
        result = run_keeping(pytester, kept, "--leakcheck", GRACE, "--leakcheck-kinds=threads,fds")
        result.assert_outcomes(passed=2, errors=1)
        assert len(reports(result)) == 1
        (leaked,) = kept.objects
        report = report_of(result, "test_inner.py::test_leaves_a_file_open")
        assert f"FD {leaked.fileno()} (type=file) [open]:" in report
        assert leaked.name in report
        assert "closed.log" not in str(result.stdout)
    finally:
        for f in kept.objects:
            f.close()


@pytest.mark.parametrize("capture", ["--capture=fd", "--capture=sys", "--capture=no", "--capture=tee-sys"])
def test_fds_finds_nothing_in_clean_tests_whatever_the_capture(pytester, capture):
    # The fd capture dup2()s its files onto descriptors 1 and 2, and back, around every test: nobody's leak.
    write_tests(
        pytester,
        """
        import sys

        def test_prints():
            print("out")
            print("err", file=sys.stderr)

        def test_clean(tmp_path):
            (tmp_path / "x.log").write_text("x")
        """,
    )
    assert_clean(run(pytester, capture, "--leakcheck", GRACE, "--leakcheck-kinds=threads,fds"), passed=2)


def test_files_are_not_checked_unless_asked_for(pytester):
    write_tests(pytester, FILES)
    kept = _Kept()
    try:
        assert_clean(run_keeping(pytester, kept, "--leakcheck", GRACE), passed=2)
    finally:
        for f in kept.objects:
            f.close()


CHILDREN = """
    import subprocess
    import sys

    def test_leaves_a_child_running(kept):
        command = [sys.executable, "-c", "import sys; sys.stdin.read()", "inner-child"]
        kept.append(subprocess.Popen(command, stdin=subprocess.PIPE))

    def test_waits_for_its_child():
        with subprocess.Popen([sys.executable, "-c", "pass"]):
            pass
"""


def test_ini_kinds_with_processes_reports_a_leaked_child(pytester):
    pytester.makeini("[pytest]\nleakcheck_kinds = processes\n")
    write_tests(pytester, CHILDREN)
    kept = _Kept()
    try:
        result = run_keeping(pytester, kept, "--leakcheck", GRACE)
        result.assert_outcomes(passed=2, errors=1)
        assert len(reports(result)) == 1
        (child,) = kept.objects
        report = report_of(result, "test_inner.py::test_leaves_a_child_running")
        assert f"(pid={child.pid})" in report
        assert "inner-child" in report
        assert "leaked process" in report
    finally:
        for child in kept.objects:
            child.stdin.close()
            child.wait(JOIN_TIMEOUT)


JOIN_TIMEOUT = 10.0


def test_marker_turns_on_fds_for_its_test(pytester):
    write_tests(
        pytester,
        """
        @pytest.mark.leakcheck(fds=True)
        def test_marked(kept, tmp_path):
            kept.append(open(tmp_path / "marked.log", "w"))

        def test_unmarked(kept, tmp_path):
            kept.append(open(tmp_path / "unmarked.log", "w"))
        """,
    )
    kept = _Kept()
    try:
        result = run_keeping(pytester, kept, GRACE)
        result.assert_outcomes(passed=2, errors=1)
        assert len(reports(result)) == 1
        marked = next(f for f in kept.objects if f.name.endswith("marked.log") and "unmarked" not in f.name)
        assert marked.name in report_of(result, "test_inner.py::test_marked")
        assert "unmarked.log" not in str(result.stdout)
    finally:
        for f in kept.objects:
            f.close()


@pytest.mark.parametrize(
    ("marker", "fragment"),
    [
        ("fds='yes'", "fds must be True or False, not 'yes'"),
        ("processes=1", "processes must be True or False, not 1"),
        ("os_threads=None", "os_threads must be True or False, not None"),
        ("sockets=True", "unknown option 'sockets'"),
    ],
)
def test_marker_with_a_bad_kind_is_a_usage_error(pytester, marker, fragment):
    write_tests(pytester, f"@pytest.mark.leakcheck({marker})\ndef test_marked():\n    pass\n")
    result = run(pytester)
    assert_usage_error(result, "test_inner.py::test_marked: @pytest.mark.leakcheck: ", fragment)
    if "unknown option" in fragment:
        from leakcheck.kinds.registry import KIND_NAMES

        assert all(name in str(result.stderr) for name in KIND_NAMES), str(result.stderr)


@pytest.mark.parametrize("kinds", ["threads,sockets", "probes", "threads,fd"])
def test_bad_kinds_are_a_usage_error_naming_every_valid_kind(pytester, kinds):
    from leakcheck.kinds.registry import flag_kinds

    result = run(pytester, f"--leakcheck-kinds={kinds}")
    assert_usage_error(result, "--leakcheck-kinds", repr(kinds))
    assert ", ".join(flag_kinds()) in str(result.stderr)


def test_help_lists_every_flag_kind(pytester):
    from leakcheck.kinds.registry import KIND_NAMES, flag_kinds

    assert set(flag_kinds()) == set(KIND_NAMES) - {"probes"}
    text = " ".join(str(run(pytester, "--help").stdout).split())
    listed = ",".join(flag_kinds())
    assert f"--leakcheck-kinds=KINDS comma-separated kinds to check: {listed} (default: threads,tasks)" in text
    assert f"kinds to check: {listed}" in text.split("leakcheck_kinds", 1)[1]
