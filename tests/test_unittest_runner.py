"""``python -m leakcheck.unittest``: a unittest suite run with every test checked.

Each scenario writes test modules to a temporary directory and runs the
runner in a subprocess there.  Threads that inner tests leak are daemons
waiting on an Event that ``tearDownModule`` sets, so every run ends cleanly.
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

FAST = "--leakcheck-timeout=0.1"

SERVICE = """
import threading
import unittest

RELEASE = threading.Event()


def serve_forever():
    RELEASE.wait()


def tearDownModule():
    RELEASE.set()


class ServiceTests(unittest.TestCase):
    def test_clean(self):
        self.assertTrue(True)

    def test_leaks(self):
        threading.Thread(target=serve_forever, name="service-worker", daemon=True).start()
"""


def write(directory: Path, name: str, source: str) -> None:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))


def run_runner(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "leakcheck.unittest", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def output_of(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr


def assert_service_leak_reported(proc: subprocess.CompletedProcess, module: str = "test_service") -> None:
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "Ran 2 tests" in output
    assert "FAILED (failures=1)" in output
    assert re.search(r"^FAIL: test_leaks \(", output, re.MULTILINE), output
    assert f"thread 'service-worker' in {module}.serve_forever" in output


# -- the command line of python -m unittest


@pytest.mark.parametrize(
    "args",
    [["discover"], [], ["test_service"], ["test_service.ServiceTests"]],
    ids=["discover", "no-arguments", "module", "class"],
)
def test_runs_the_suite_like_unittest_and_reports_the_leak(tmp_path: Path, args: list) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    assert_service_leak_reported(run_runner(tmp_path, FAST, *args))


def test_discover_with_start_directory_and_pattern(tmp_path: Path) -> None:
    write(tmp_path, "suite/check_service.py", SERVICE)
    write(
        tmp_path,
        "test_elsewhere.py",
        "import unittest\n\nclass Other(unittest.TestCase):\n    def test_x(self): pass\n",
    )
    proc = run_runner(tmp_path, FAST, "discover", "-s", "suite", "-p", "check_*.py")
    assert_service_leak_reported(proc, module="check_service")


def test_single_test_method_by_name(tmp_path: Path) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, FAST, "test_service.ServiceTests.test_clean")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Ran 1 test" in output
    assert "leakcheck:" not in output


def test_verbose_lists_each_outcome(tmp_path: Path) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, FAST, "-v", "test_service")
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert re.search(r"^test_clean \(test_service\.ServiceTests.*\) \.\.\. ok$", output, re.MULTILINE), output
    assert re.search(r"^test_leaks \(test_service\.ServiceTests.*\) \.\.\. FAIL$", output, re.MULTILINE), output


def test_k_selects_tests(tmp_path: Path) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, FAST, "-k", "clean")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Ran 1 test" in output
    assert "leakcheck:" not in output


def test_help_shows_unittest_usage(tmp_path: Path) -> None:
    proc = run_runner(tmp_path, "--help")
    assert proc.returncode == 0, output_of(proc)
    assert proc.stdout.startswith("usage: python -m leakcheck.unittest")
    assert "-k TESTNAMEPATTERNS" in proc.stdout


# -- what is reported


def test_leak_is_a_failure_with_the_thread_stack(tmp_path: Path) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, FAST, "test_service")
    assert_service_leak_reported(proc)
    output = output_of(proc)
    assert "Thread 'service-worker'" in output
    assert re.search(
        r'File ".*test_service\.py", line \d+, in test_service\.serve_forever\n\s+RELEASE\.wait\(\)', output
    )


def test_clean_suite_passes(tmp_path: Path) -> None:
    write(
        tmp_path,
        "test_clean.py",
        """
        import threading
        import unittest

        class CleanTests(unittest.TestCase):
            def test_joins_its_thread(self):
                thread = threading.Thread(target=lambda: None, name="joined")
                thread.start()
                thread.join()

            def test_nothing(self):
                pass
        """,
    )
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Ran 2 tests" in output
    assert re.search(r"^OK$", output, re.MULTILINE)
    assert "leakcheck:" not in output


BROKEN = """
import threading
import unittest

RELEASE = threading.Event()

def poll_forever():
    RELEASE.wait()

def tearDownModule():
    RELEASE.set()

class BrokenTests(unittest.TestCase):
    def test_fails_and_leaks(self):
        threading.Thread(target=poll_forever, name="broken-poller", daemon=True).start()
        self.assertEqual("expected", "actual")
"""


def test_failing_test_that_leaks_shows_both(tmp_path: Path) -> None:
    write(tmp_path, "test_broken.py", BROKEN)
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "AssertionError: 'expected' != 'actual'" in output
    assert "thread 'broken-poller' in test_broken.poll_forever" in output


def test_isolated_asyncio_test_pending_task_is_reported(tmp_path: Path) -> None:
    """Reported instead of cancelled silently, after a grace period that runs the test's loop."""
    write(
        tmp_path,
        "test_async.py",
        """
        import asyncio
        import unittest

        # A pending task is a collectable reference cycle: keep it until its loop cancels it.
        KEEP = []

        class AsyncTests(unittest.IsolatedAsyncioTestCase):
            async def test_leaves_a_task(self):
                KEEP.append(asyncio.create_task(asyncio.Event().wait(), name="async-case-straggler"))

            async def test_awaits_its_task(self):
                await asyncio.create_task(asyncio.sleep(0.01), name="awaited")

            async def test_task_ends_in_the_grace_period(self):
                asyncio.create_task(asyncio.sleep(0.01), name="ends-in-grace")
        """,
    )
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "FAILED (failures=1)" in output
    assert re.search(r"^FAIL: test_leaves_a_task \(", output, re.MULTILINE), output
    assert "task 'async-case-straggler'" in output
    assert "ends-in-grace" not in output


# -- windows: fixtures


def test_threads_of_fixtures_stopped_in_their_teardown_are_not_leaks(tmp_path: Path) -> None:
    write(
        tmp_path,
        "test_fixtures.py",
        """
        import threading
        import unittest

        def start(name):
            release = threading.Event()
            thread = threading.Thread(target=release.wait, name=name, daemon=True)
            thread.start()
            return release, thread

        def stop(release, thread):
            release.set()
            thread.join(5)

        def setUpModule():
            global MODULE
            MODULE = start("module-fixture-thread")

        def tearDownModule():
            stop(*MODULE)

        class ClassFixtureTests(unittest.TestCase):
            @classmethod
            def setUpClass(cls):
                cls.shared = start("class-fixture-thread")

            @classmethod
            def tearDownClass(cls):
                stop(*cls.shared)

            def setUp(self):
                self.own = start("setup-thread")

            def tearDown(self):
                stop(*self.own)

            def test_fixture_threads_run_during_the_test(self):
                self.assertTrue(MODULE[1].is_alive())
                self.assertTrue(self.shared[1].is_alive())
                self.assertTrue(self.own[1].is_alive())

        class CleanupTests(unittest.TestCase):
            def setUp(self):
                self.own = start("setup-cleanup-thread")
                self.addCleanup(stop, *self.own)

            def test_thread_stopped_by_cleanup(self):
                started = start("test-cleanup-thread")
                self.addCleanup(stop, *started)
                self.assertTrue(started[1].is_alive())
                self.assertTrue(self.own[1].is_alive())
        """,
    )
    proc = run_runner(tmp_path, FAST, "-v")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Ran 2 tests" in output
    assert "leakcheck:" not in output


# -- tests that check themselves

SELF_CHECKED = """
import threading
import unittest

from leakcheck import LeakCheckTestCase, ignore_name, no_leaks

RELEASE = threading.Event()


def linger():
    RELEASE.wait()


def tearDownModule():
    RELEASE.set()


def start(name):
    threading.Thread(target=linger, name=name, daemon=True).start()
"""


def test_self_checked_tests_report_their_leak_once(tmp_path: Path) -> None:
    write(
        tmp_path,
        "test_self_checked.py",
        SELF_CHECKED
        + """
@no_leaks(timeout=0.1)
class DecoratedTests(unittest.TestCase):
    def test_leaks(self):
        start("decorated-leak")


class BaseClassTests(LeakCheckTestCase):
    leakcheck_options = {"timeout": 0.1}

    def test_leaks(self):
        start("base-class-leak")


class MethodTests(unittest.TestCase):
    @no_leaks(timeout=0.1)
    def test_leaks(self):
        start("method-leak")
""",
    )
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "FAILED (failures=3)" in output
    for name in ("decorated-leak", "base-class-leak", "method-leak"):
        assert output.count(f"  - thread '{name}'") == 1, output


def test_self_checked_classes_keep_their_own_options(tmp_path: Path) -> None:
    """The runner does not check them a second time, with its own options."""
    write(
        tmp_path,
        "test_self_checked.py",
        SELF_CHECKED
        + """
@no_leaks(timeout=0.1, ignore=[ignore_name("tolerated-.*")])
class DecoratedTests(unittest.TestCase):
    def test_leaks_a_tolerated_thread(self):
        start("tolerated-by-decorator")


class BaseClassTests(LeakCheckTestCase):
    leakcheck_options = {"threads": False}

    def test_leaks_an_unchecked_thread(self):
        start("unchecked-by-base-class")
""",
    )
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "Ran 2 tests" in output
    assert "leakcheck:" not in output


def test_self_checked_method_keeps_its_own_options(tmp_path: Path) -> None:
    write(
        tmp_path,
        "test_self_checked.py",
        SELF_CHECKED
        + """
class MethodTests(unittest.TestCase):
    @no_leaks(timeout=0.1, ignore=[ignore_name("tolerated-.*")])
    def test_leaks_a_tolerated_thread(self):
        start("tolerated-by-method")
""",
    )
    proc = run_runner(tmp_path, FAST)
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "leakcheck:" not in output


# -- leakcheck's own options

LINGERING = """
import threading
import time
import unittest


def finish_shortly():
    time.sleep(0.2)


class LingeringTests(unittest.TestCase):
    def test_thread_ends_shortly_after(self):
        threading.Thread(target=finish_shortly, name="lingering-thread", daemon=True).start()
"""


def test_timeout_gives_a_thread_time_to_end(tmp_path: Path) -> None:
    write(tmp_path, "test_lingering.py", LINGERING)
    proc = run_runner(tmp_path, "--leakcheck-timeout=5")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "leakcheck:" not in output


def test_timeout_zero_reports_without_waiting(tmp_path: Path) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, "--leakcheck-timeout=0")
    assert_service_leak_reported(proc)
    assert "of a 0.00s grace period" in output_of(proc)


MIXED = """
import asyncio
import threading
import unittest

RELEASE = threading.Event()
KEEP = []


def serve_forever():
    RELEASE.wait()


def tearDownModule():
    RELEASE.set()


class ThreadTests(unittest.TestCase):
    def test_leaks_a_thread(self):
        threading.Thread(target=serve_forever, name="mixed-thread", daemon=True).start()


class TaskTests(unittest.IsolatedAsyncioTestCase):
    async def test_leaks_a_task(self):
        KEEP.append(asyncio.create_task(asyncio.Event().wait(), name="mixed-task"))
"""


@pytest.mark.parametrize(
    ("kinds", "reported", "unreported"),
    [("threads", "mixed-thread", "mixed-task"), ("tasks", "mixed-task", "mixed-thread")],
)
def test_kinds_selects_what_is_checked(tmp_path: Path, kinds: str, reported: str, unreported: str) -> None:
    write(tmp_path, "test_mixed.py", MIXED)
    proc = run_runner(tmp_path, FAST, f"--leakcheck-kinds={kinds}")
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "FAILED (failures=1)" in output
    assert f"'{reported}'" in output
    assert f"'{unreported}'" not in output


@pytest.mark.parametrize(
    ("argument", "option"),
    [
        ("--leakcheck-timeout=-1", "--leakcheck-timeout"),
        ("--leakcheck-timeout=abc", "--leakcheck-timeout"),
        ("--leakcheck-timeout=nan", "--leakcheck-timeout"),
        ("--leakcheck-kinds=sockets", "--leakcheck-kinds"),
        ("--leakcheck-kinds=", "--leakcheck-kinds"),
    ],
)
def test_bad_option_values_are_usage_errors(tmp_path: Path, argument: str, option: str) -> None:
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, argument)
    assert proc.returncode == 2, output_of(proc)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith(f"python -m leakcheck.unittest: error: {option}")
    assert "Traceback" not in proc.stderr
    assert "Ran " not in proc.stderr


# -- the command itself


def test_version(tmp_path: Path) -> None:
    import leakcheck

    proc = run_runner(tmp_path, "--version")
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"leakcheck {leakcheck.__version__}\n", "")


def test_an_abbreviation_is_left_to_unittest(tmp_path: Path) -> None:
    # --ver is unittest's --verbose, not --version
    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, FAST, "--ver", "test_service.ServiceTests.test_clean")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert re.search(r"^test_clean \(test_service\.ServiceTests.*\) \.\.\. ok$", output, re.MULTILINE), output


def test_the_public_names_import_as_before() -> None:
    import unittest

    from leakcheck.unittest import LeakCheckResult, main

    assert issubclass(LeakCheckResult, unittest.TextTestResult)
    assert callable(main)


SPAWNING = """
import multiprocessing
import sys
import unittest


def report_imports(connection):
    connection.send(sorted(name for name in ("asyncio", "leakcheck") if name in sys.modules))
    connection.close()


class SpawningTests(unittest.TestCase):
    def test_spawns_a_child(self):
        context = multiprocessing.get_context("START_METHOD")
        receiving, sending = context.Pipe(duplex=False)
        child = context.Process(target=report_imports, args=(sending,), name="spawned-child")
        child.start()
        sending.close()
        imported = receiving.recv()
        receiving.close()
        child.join()
        print(f"the spawned child imported {imported}", flush=True)
        self.assertEqual(child.exitcode, 0)
"""


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_child_spawned_by_a_test_does_not_import_leakcheck(tmp_path: Path, start_method: str) -> None:
    """multiprocessing runs the main module again in a spawned child, unless it is named ``*.__main__``."""
    if start_method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {start_method} start method here")
    write(tmp_path, "test_spawning.py", SPAWNING.replace("START_METHOD", start_method))
    proc = run_runner(tmp_path, FAST, "-v")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "the spawned child imported []" in output
    assert "leakcheck:" not in output


def test_verbose_prints_one_status_for_a_test_that_fails_and_leaks(tmp_path: Path) -> None:
    write(tmp_path, "test_broken.py", BROKEN)
    proc = run_runner(tmp_path, FAST, "-v", "test_broken")
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert len(re.findall(r"\.\.\. FAIL$", output, re.MULTILINE)) == 1, output
    assert output.count("FAIL: test_fails_and_leaks") == 2, output  # both failures are listed at the end
    assert "thread 'broken-poller' in test_broken.poll_forever" in output


# -- kinds beyond threads and tasks: --kinds (alias of --leakcheck-kinds)

FILES = """
import os
import unittest

KEPT = []


class FileTests(unittest.TestCase):
    def test_closes_its_file(self):
        with open(os.path.join(os.getcwd(), "closed.log"), "w") as f:
            f.write("x")

    def test_leaves_a_file_open(self):
        KEPT.append(open(os.path.join(os.getcwd(), "leaked.log"), "w"))
"""


@pytest.mark.parametrize("spelling", [["--kinds", "fds"], ["--kinds=threads,fds"], ["--leakcheck-kinds=fds"]])
def test_kinds_with_fds_reports_a_leaked_file_by_its_path(tmp_path: Path, spelling: list) -> None:
    write(tmp_path, "test_files.py", FILES)
    proc = run_runner(tmp_path, FAST, *spelling, "-v", "test_files")
    output = output_of(proc)
    assert proc.returncode == 1, output
    assert "Ran 2 tests" in output
    assert "FAILED (failures=1)" in output
    assert re.search(r"^test_closes_its_file \(test_files\.FileTests.*\) \.\.\. ok$", output, re.MULTILINE), output
    assert re.search(r"^FAIL: test_leaves_a_file_open \(", output, re.MULTILINE), output
    assert str(tmp_path / "leaked.log") in output
    assert "closed.log" not in output


def test_files_are_not_checked_unless_asked_for(tmp_path: Path) -> None:
    write(tmp_path, "test_files.py", FILES)
    proc = run_runner(tmp_path, FAST, "test_files")
    output = output_of(proc)
    assert proc.returncode == 0, output
    assert "leakcheck:" not in output


CHILDREN = """
import subprocess
import sys
import unittest

KEPT = []


def tearDownModule():
    for child in KEPT:
        child.stdin.close()
        child.wait()


class ChildTests(unittest.TestCase):
    def test_leaves_a_child_running(self):
        command = [sys.executable, "-c", "import sys; sys.stdin.read()", "runner-child"]
        KEPT.append(subprocess.Popen(command, stdin=subprocess.PIPE))
        print(f"child pid {KEPT[-1].pid}", flush=True)
"""


def test_kinds_with_processes_reports_a_leaked_child(tmp_path: Path) -> None:
    write(tmp_path, "test_children.py", CHILDREN)
    proc = run_runner(tmp_path, FAST, "--kinds", "processes", "test_children")
    output = output_of(proc)
    assert proc.returncode == 1, output
    pid = re.search(r"^child pid (\d+)$", output, re.MULTILINE)
    assert pid is not None, output
    assert f"(pid={pid[1]})" in output
    assert "runner-child" in output


@pytest.mark.parametrize("argument", [["--kinds", "sockets"], ["--kinds=threads,sockets"], ["--kinds", "probes"]])
def test_kinds_naming_no_flag_kind_is_a_usage_error_naming_the_kinds(tmp_path: Path, argument: list) -> None:
    from leakcheck.kinds.registry import flag_kinds

    write(tmp_path, "test_service.py", SERVICE)
    proc = run_runner(tmp_path, *argument)
    assert proc.returncode == 2, output_of(proc)
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("python -m leakcheck.unittest: error: --leakcheck-kinds (--kinds): unknown kind")
    assert ", ".join(flag_kinds()) in errors[0]
    assert "Traceback" not in proc.stderr
    assert "Ran " not in proc.stderr


def test_help_lists_every_flag_kind(tmp_path: Path) -> None:
    from leakcheck.kinds.registry import flag_kinds

    proc = run_runner(tmp_path, "--help")
    text = " ".join(output_of(proc).split())
    assert proc.returncode == 0, output_of(proc)
    assert re.search(r"--kinds( KINDS)?, --leakcheck-kinds KINDS", text), text  # 3.13 names the metavar once
    assert f"what to check, comma-separated: {','.join(flag_kinds())} (default: threads,tasks)" in text
