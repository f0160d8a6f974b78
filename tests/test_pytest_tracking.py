"""Creation tracking in the pytest plugin and the unittest runner (issue 12), seen from outside.

Inner pytest sessions about settings run in this process (``pytester.runpytest``):
their leaked threads wait on gates from :mod:`pytester_helpers`, opened and
joined after every test, and each test checks that the run turned tracking
off again.  Sessions whose threads cannot be stopped from outside (servers,
their stuck handlers, a module-level executor) run in subprocesses
(``pytester.runpytest_subprocess``), with daemon threads that die with them.
The unittest runner runs in subprocesses, as in ``test_unittest_runner.py``.
"""

from __future__ import annotations

import _thread
import asyncio
import os
import subprocess
import sys
import textwrap
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, Optional, Sequence

import pytest
import pytester_helpers
from test_pytest_plugin import assert_clean, report_of, reports

import leakcheck
from leakcheck.kinds import ownership

pytest_plugins = ["pytester"]

GRACE = "--leakcheck-timeout=0.1"
QUIET = (
    "-p",
    "no:cacheprovider",
    "-p",
    "no:hypothesispytest",
    "-p",
    "no:benchmark",
    "-o",
    "asyncio_default_fixture_loop_scope=function",
)
CREATED_AT = "Created at (most recent call last):"
ENV = "LEAKCHECK_TRACK"

_ORIGINAL_START = threading.Thread.start
_ORIGINAL_START_NEW_THREAD = _thread.start_new_thread
_ORIGINAL_SUBMIT = ThreadPoolExecutor.submit
_ORIGINAL_CREATE_TASK = asyncio.BaseEventLoop.create_task


INNER_THREADS = "inner-"
"""The names of the threads in-process inner sessions leak start with this."""


@pytest.fixture(autouse=True)
def no_tracking_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(ENV, raising=False)
    try:
        yield
    finally:
        pytester_helpers.release_all()
        leaked = [thread for thread in threading.enumerate() if thread.name.startswith(INNER_THREADS)]
        for thread in leaked:
            thread.join(pytester_helpers.JOIN_TIMEOUT)
        assert not [thread.name for thread in leaked if thread.is_alive()]
    assert not leakcheck.is_tracking_creation(), "the test left creation tracking on in this process"
    assert threading.Thread.start is _ORIGINAL_START
    assert _thread.start_new_thread is _ORIGINAL_START_NEW_THREAD
    assert ThreadPoolExecutor.submit is _ORIGINAL_SUBMIT
    assert asyncio.BaseEventLoop.create_task is _ORIGINAL_CREATE_TASK
    assert ownership._default_owner is None


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An inner session in this process."""
    return pytester.runpytest(*QUIET, *args)


def run_apart(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    """An inner session in a subprocess: for threads nothing can stop from outside."""
    return pytester.runpytest_subprocess(*QUIET, *args, timeout=120)


# An inner test module: helper() starts a thread that waits on a gate until the outer test ends.
LEAKS = textwrap.dedent(
    """
    import threading

    import pytester_helpers


    def serve(gate):
        gate.acquire()


    def helper(name="inner-helper-thread"):
        threading.Thread(target=serve, args=(pytester_helpers.gate(),), name=name, daemon=True).start()


    def test_leaks():
        helper()
    """
)


def assert_leak_reported(result: pytest.RunResult, test: str = "test_x.py::test_leaks") -> str:
    result.assert_outcomes(passed=1, errors=1)
    report = report_of(result, test)
    assert "thread 'inner-helper-thread' in test_x.serve (" in report
    return report


def assert_tracked(result: pytest.RunResult) -> None:
    report = assert_leak_reported(result)
    assert "created at test_x.helper (" in report
    assert CREATED_AT in report
    assert "  > File " in report and ", in test_x.helper" in report


def assert_untracked(result: pytest.RunResult) -> None:
    report = assert_leak_reported(result)
    assert "created at" not in report
    assert CREATED_AT not in str(result.stdout)


# -- on by default, and its settings


def test_tracking_is_on_by_default_under_leakcheck(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=LEAKS)
    assert_tracked(run(pytester, "--leakcheck", GRACE))


@pytest.mark.parametrize(
    ("args", "ini", "env", "on"),
    [
        (["--leakcheck-track=no"], None, None, False),
        (["--leakcheck-track=off"], None, None, False),
        ([], "no", None, False),
        ([], None, "0", False),
        ([], None, "no", False),
        ([], None, "1", True),
        (["--leakcheck-track=yes"], None, None, True),
        (["--leakcheck-track"], None, None, True),  # bare: yes
        # command line over ini over environment over default
        (["--leakcheck-track=yes"], "no", None, True),
        (["--leakcheck-track=no"], "yes", None, False),
        (["--leakcheck-track"], "no", "0", True),
        (["--leakcheck-track=no"], None, "1", False),
        (["--leakcheck-track=yes"], None, "0", True),
        ([], "yes", "0", True),
        ([], "no", "1", False),
        # a setting that wins makes a bad environment value irrelevant
        (["--leakcheck-track=no"], None, "maybe", False),
        ([], "yes", "maybe", True),
    ],
)
def test_settings_and_their_precedence(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: Sequence[str],
    ini: Optional[str],
    env: Optional[str],
    on: bool,
) -> None:
    pytester.makepyfile(test_x=LEAKS)
    if ini is not None:
        pytester.makeini(f"[pytest]\nleakcheck_track = {ini}\n")
    if env is not None:
        monkeypatch.setenv(ENV, env)
    # The bare flag last: an argument after it would be taken for its value.
    result = run(pytester, "--leakcheck", GRACE, *args)
    if on:
        assert_tracked(result)
    else:
        assert_untracked(result)


@pytest.mark.parametrize(
    ("args", "ini", "env", "names"),
    [
        (["--leakcheck-track=maybe"], None, None, ("--leakcheck-track", "'maybe'")),
        ([], "maybe", None, ("leakcheck_track", "'maybe'")),
        ([], None, "maybe", ("LEAKCHECK_TRACK", "'maybe'")),
        (["--leakcheck-track="], None, None, ("--leakcheck-track",)),
    ],
    ids=["command-line", "ini", "environment", "empty"],
)
def test_a_bad_value_is_a_usage_error_naming_the_setting(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    args: Sequence[str],
    ini: Optional[str],
    env: Optional[str],
    names: Sequence[str],
) -> None:
    pytester.makepyfile(test_x=LEAKS)
    if ini is not None:
        pytester.makeini(f"[pytest]\nleakcheck_track = {ini}\n")
    if env is not None:
        monkeypatch.setenv(ENV, env)
    result = run(pytester, "--leakcheck", GRACE, *args)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, str(result.stdout) + str(result.stderr)
    errors = str(result.stderr)
    for name in names:
        assert name in errors


def test_the_marker_turns_tracking_off_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x=LEAKS
        + textwrap.dedent(
            """
            import pytest


            @pytest.mark.leakcheck(track_creation=False)
            def test_untracked():
                helper()
            """
        )
    )
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=2, errors=2)
    tracked, untracked = report_of(result, "test_x.py::test_leaks"), report_of(result, "test_x.py::test_untracked")
    assert CREATED_AT in tracked and "created at test_x.helper (" in tracked
    assert "thread 'inner-helper-thread' in test_x.serve (" in untracked
    assert CREATED_AT not in untracked and "created at" not in untracked


def test_the_marker_turns_tracking_on_for_one_test(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_x=LEAKS
        + textwrap.dedent(
            """
            import pytest


            @pytest.mark.leakcheck(track_creation=True)
            def test_tracked():
                helper()
            """
        )
    )
    result = run(pytester, "--leakcheck", GRACE, "--leakcheck-track=no")
    result.assert_outcomes(passed=2, errors=2)
    tracked, untracked = report_of(result, "test_x.py::test_tracked"), report_of(result, "test_x.py::test_leaks")
    assert CREATED_AT in tracked and "created at test_x.helper (" in tracked
    assert CREATED_AT not in untracked and "created at" not in untracked


# -- whose is it: a test's own server, a session fixture's, and one started at import

WEBAPP = """
    import http.server
    import socket
    import threading
    import urllib.request

    _lock = threading.Lock()
    _entered = {}
    CLIENTS = []


    def entered(path):
        with _lock:
            return _entered.setdefault(path, threading.Event())


    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path.startswith("/stuck"):
                self.stuck_in_handler()
                return
            body = b"hello"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def stuck_in_handler(self):
            entered(self.path).set()
            threading.Event().wait()  # forever: a daemon thread, gone with the run

        def log_message(self, format, *args):
            pass


    def serve(name):
        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, name=name, daemon=True).start()
        return httpd


    def get(server):
        host, port = server.server_address[:2]
        with urllib.request.urlopen(f"http://{host}:{port}/", timeout=5) as response:
            return response.read()


    def leave_stuck(server, path):
        client = socket.create_connection(server.server_address[:2], timeout=5)
        CLIENTS.append(client)
        client.sendall(f"GET {path} HTTP/1.0\\r\\n\\r\\n".encode())
        assert entered(path).wait(5)
"""

SERVERS_CONFTEST = """
    import pytest

    import webapp


    @pytest.fixture(scope="session")
    def session_server():
        return webapp.serve("session-server")
"""

SERVERS_TESTS = """
    import pytest

    import leakcheck
    import webapp

    MODULE_SERVER = webapp.serve("module-server")  # at import: the run's
    SERVERS = {}


    def test_home(session_server):
        assert webapp.get(session_server) == b"hello"
        assert webapp.get(MODULE_SERVER) == b"hello"


    @pytest.mark.leakcheck(ignore=[leakcheck.ignore_name("^a-server$")])
    def test_a_starts_its_own_server():
        SERVERS["a"] = webapp.serve("a-server")
        assert webapp.get(SERVERS["a"]) == b"hello"


    def test_b_leaves_a_request_stuck_on_a_server():
        webapp.leave_stuck(SERVERS["a"], "/stuck-on-a")


    def test_c_leaves_a_request_stuck_on_the_session_server(session_server):
        webapp.leave_stuck(session_server, "/stuck-on-session")


    def test_d_leaves_a_request_stuck_on_the_module_server():
        webapp.leave_stuck(MODULE_SERVER, "/stuck-on-module")


    def test_e_clean(session_server):
        assert webapp.get(session_server) == b"hello"
        assert webapp.get(MODULE_SERVER) == b"hello"
"""

STUCK = "thread 'Thread-"  # handler threads have default names
IN_HANDLER = "in webapp.Handler.stuck_in_handler ("


def _write_servers(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(webapp=WEBAPP)
    pytester.makeconftest(SERVERS_CONFTEST)
    pytester.makepyfile(test_servers=SERVERS_TESTS)


def test_ownership_of_handler_threads_with_tracking(pytester: pytest.Pytester) -> None:
    """A's server's handler is A's; the session fixture's and the module's are the run's: shared."""
    _write_servers(pytester)
    result = run_apart(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=6, errors=2)
    assert len(reports(result)) == 2, reports(result)
    for test in (
        "test_c_leaves_a_request_stuck_on_the_session_server",
        "test_d_leaves_a_request_stuck_on_the_module_server",
    ):
        report = report_of(result, f"test_servers.py::{test}")
        assert IN_HANDLER in report and STUCK in report
    assert "test_b_leaves_a_request_stuck_on_a_server: " not in str(result.stdout)
    for server in ("a-server", "session-server", "module-server"):
        assert server not in str(result.stdout)


def test_ownership_of_handler_threads_without_tracking(pytester: pytest.Pytester) -> None:
    """The contrast: without tracking, B is blamed for the handler that A's server started."""
    _write_servers(pytester)
    result = run_apart(pytester, "--leakcheck", GRACE, "--leakcheck-track=no")
    result.assert_outcomes(passed=6, errors=3)
    assert len(reports(result)) == 3, reports(result)
    for test in (
        "test_b_leaves_a_request_stuck_on_a_server",
        "test_c_leaves_a_request_stuck_on_the_session_server",
        "test_d_leaves_a_request_stuck_on_the_module_server",
    ):
        assert IN_HANDLER in report_of(result, f"test_servers.py::{test}")
    assert CREATED_AT not in str(result.stdout)


def test_a_thread_started_at_import_starts_threads_for_the_running_test(pytester: pytest.Pytester) -> None:
    """Module-level code is the run's: what its thread starts during a test is that test's to answer for."""
    pytester.makepyfile(
        test_x="""
        import queue
        import threading

        REQUESTS = queue.Queue()
        STOP = threading.Event()


        def handle(done):
            done.set()
            STOP.wait()


        def dispatch():
            while True:
                done = REQUESTS.get()
                threading.Thread(target=handle, args=(done,), name="dispatched", daemon=True).start()


        threading.Thread(target=dispatch, name="dispatcher", daemon=True).start()


        def test_clean():
            pass


        def test_asks_for_a_handler():
            done = threading.Event()
            REQUESTS.put(done)
            assert done.wait(5)
        """
    )
    result = run_apart(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=2, errors=1)
    report = report_of(result, "test_x.py::test_asks_for_a_handler")
    assert "thread 'dispatched' in test_x.handle (" in report
    assert "created at test_x.dispatch (" in report
    assert "thread 'dispatcher'" not in str(result.stdout)


SHARED_POOL = """
    import threading
    from concurrent.futures import ThreadPoolExecutor

    POOL = ThreadPoolExecutor(1)
    STOP = threading.Event()


    def noop():
        pass


    def park():
        STOP.wait()


    def start_leaky_thread():
        threading.Thread(target=park, name="leaky", daemon=True).start()


    def test_first_use_starts_the_worker():
        POOL.submit(noop).result()


    def test_job_leaks_a_thread():
        POOL.submit(start_leaky_thread).result()
"""


@pytest.mark.parametrize("track", ["yes", "no"])
def test_a_thread_leaked_by_a_job_on_a_shared_pool_is_blamed(pytester: pytest.Pytester, track: str) -> None:
    """A module-level pool's worker is started by the first test that uses it; a later test's job is that test's."""
    pytester.makepyfile(test_x=SHARED_POOL)
    result = run_apart(pytester, "--leakcheck", GRACE, f"--leakcheck-track={track}")
    result.assert_outcomes(passed=2, errors=1)
    assert len(reports(result)) == 1, reports(result)
    report = report_of(result, "test_x.py::test_job_leaks_a_thread")
    assert "thread 'leaky' in test_x.park (" in report
    assert ("created at test_x.start_leaky_thread (" in report) == (track == "yes")


# -- leakcheck_ignore = created:...

IGNORED = """
    import threading

    import pytester_helpers


    def serve(gate):
        gate.acquire()


    def start_helper(name):
        threading.Thread(target=serve, args=(pytester_helpers.gate(),), name=name, daemon=True).start()


    def start_other(name):
        threading.Thread(target=serve, args=(pytester_helpers.gate(),), name=name, daemon=True).start()


    def outer_setup():
        start_other("inner-under-outer")


    def test_ignored():
        start_helper("inner-by-start-helper")


    def test_ignored_by_an_outer_frame():
        outer_setup()


    def test_reported():
        start_other("inner-by-start-other")
"""


def test_ini_created_rule_ignores_what_that_code_started(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=IGNORED)
    pytester.makeini("[pytest]\nleakcheck_ignore =\n    created:test_x.start_helper\n    created:test_x.outer_setup\n")
    result = run(pytester, "--leakcheck", GRACE)
    result.assert_outcomes(passed=3, errors=1)
    assert len(reports(result)) == 1, reports(result)
    report = report_of(result, "test_x.py::test_reported")
    assert "thread 'inner-by-start-other' in test_x.serve (" in report
    assert "created at test_x.start_other (" in report
    assert "inner-by-start-helper" not in str(result.stdout)
    assert "inner-under-outer" not in str(result.stdout)


def test_ini_created_rule_cannot_match_without_tracking(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_x=IGNORED)
    pytester.makeini("[pytest]\nleakcheck_ignore =\n    created:test_x.start_helper\n")
    result = run(pytester, "--leakcheck", GRACE, "--leakcheck-track=no")
    result.assert_outcomes(passed=3, errors=3)
    assert "thread 'inner-by-start-helper' in test_x.serve (" in report_of(result, "test_x.py::test_ignored")


@pytest.mark.parametrize("line", ["created:start_helper", "created:", "create:test_x.start_helper"])
def test_a_bad_created_line_is_a_usage_error(pytester: pytest.Pytester, line: str) -> None:
    pytester.makepyfile(test_x=IGNORED)
    pytester.makeini(f"[pytest]\nleakcheck_ignore =\n    {line}\n")
    result = run(pytester, "--leakcheck", GRACE)
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    errors = str(result.stderr)
    assert "leakcheck_ignore" in errors and repr(line.strip()) in errors


# -- the unittest runner

SERVICE = """
import queue
import threading
import unittest

RELEASE = threading.Event()
REQUESTS = queue.Queue()


def serve_forever():
    RELEASE.wait()


def start_service():
    threading.Thread(target=serve_forever, name="service-worker", daemon=True).start()


def dispatch():
    while not RELEASE.is_set():
        done = REQUESTS.get()
        if done is None:
            return
        threading.Thread(target=handle, args=(done,), name="handler", daemon=True).start()


def handle(done):
    done.set()
    RELEASE.wait()


def setUpModule():
    threading.Thread(target=dispatch, name="dispatcher", daemon=True).start()


def tearDownModule():
    RELEASE.set()
    REQUESTS.put(None)


class ServiceTests(unittest.TestCase):
    def test_clean(self):
        pass

    def test_leaks(self):
        start_service()

    def test_request_leaves_a_handler(self):
        done = threading.Event()
        REQUESTS.put(done)
        self.assertTrue(done.wait(5))
"""


def run_runner(cwd: Path, *args: str, env: Optional[str] = None) -> subprocess.CompletedProcess[str]:
    environ: Dict[str, str] = {key: value for key, value in os.environ.items() if key != ENV}
    if env is not None:
        environ[ENV] = env
    return subprocess.run(
        [sys.executable, "-m", "leakcheck.unittest", "--leakcheck-timeout=0.1", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env=environ,
    )


@pytest.fixture
def service(tmp_path: Path) -> Path:
    (tmp_path / "test_service.py").write_text(textwrap.dedent(SERVICE))
    return tmp_path


def assert_runner_reported(proc: subprocess.CompletedProcess[str]) -> str:
    output: str = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    assert "Ran 3 tests" in output and "FAILED (failures=2)" in output, output
    assert "thread 'service-worker' in test_service.serve_forever (" in output
    assert "thread 'handler' in test_service.handle (" in output  # the module's dispatcher is the run's
    return output


@pytest.mark.parametrize(
    ("args", "env"),
    [
        (["--leakcheck-track"], None),
        (["--leakcheck-track", "discover"], None),
        (["--leakcheck-track=yes"], "0"),
        ([], "1"),
        ([], "on"),
    ],
    ids=["flag", "bare-flag-before-discover", "flag-over-environment", "environment", "environment-on"],
)
def test_unittest_runner_tracks_when_asked(service: Path, args: Sequence[str], env: Optional[str]) -> None:
    output = assert_runner_reported(run_runner(service, *args, env=env))
    assert CREATED_AT in output
    assert "created at test_service.start_service (" in output
    assert "created at test_service.dispatch (" in output


@pytest.mark.parametrize(
    ("args", "env"),
    [([], None), (["--leakcheck-track=no"], None), (["--leakcheck-track=no"], "1"), ([], "0")],
    ids=["default", "flag-no", "flag-over-environment", "environment-off"],
)
def test_unittest_runner_does_not_track_otherwise(service: Path, args: Sequence[str], env: Optional[str]) -> None:
    output = assert_runner_reported(run_runner(service, *args, env=env))
    assert CREATED_AT not in output
    assert "created at" not in output


@pytest.mark.parametrize(
    ("args", "env", "name"),
    [(["--leakcheck-track=maybe"], None, "--leakcheck-track"), ([], "maybe", "LEAKCHECK_TRACK")],
    ids=["flag", "environment"],
)
def test_unittest_runner_bad_value_is_a_usage_error(
    service: Path, args: Sequence[str], env: Optional[str], name: str
) -> None:
    proc = run_runner(service, *args, env=env)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert name in proc.stderr and "'maybe'" in proc.stderr
    assert "Ran " not in proc.stdout + proc.stderr


# -- an in-process run turns tracking off again


INNER = """
    import pytester_helpers


    def follow_logs(gate):
        gate.acquire()


    def test_clean():
        pass


    def test_leaks():
        pytester_helpers.park(follow_logs, "inner-log-follower")


    def test_fails():
        assert False
"""


@pytest.mark.parametrize("stop_early", [False, True], ids=["whole-run", "stopped-by-x"])
def test_an_in_process_run_turns_tracking_off_again(pytester: pytest.Pytester, stop_early: bool) -> None:
    assert not leakcheck.is_tracking_creation()
    pytester.makepyfile(test_inner=INNER)
    extra = ["-x"] if stop_early else []
    result = pytester.runpytest(*QUIET, "--leakcheck", GRACE, *extra)
    if stop_early:  # stopped by the leak, before test_fails
        result.assert_outcomes(passed=2, errors=1)
    else:
        result.assert_outcomes(passed=2, failed=1, errors=1)
    report = report_of(result, "test_inner.py::test_leaks")
    assert "thread 'inner-log-follower' in test_inner.follow_logs (" in report and CREATED_AT in report
    assert not leakcheck.is_tracking_creation()
    assert threading.Thread.start is _ORIGINAL_START
    assert ownership._default_owner is None


def test_an_in_process_clean_run_turns_tracking_off_again(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner="def test_clean():\n    pass\n")
    assert_clean(pytester.runpytest(*QUIET, "--leakcheck"), passed=1)
    assert not leakcheck.is_tracking_creation()
    assert ownership._default_owner is None
