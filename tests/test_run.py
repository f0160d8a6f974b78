"""python -m leakcheck run: what keeps a program alive after its main code has finished."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest


def run(tmp_path, source: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(source))
    return subprocess.run(
        [sys.executable, "-m", "leakcheck", "run", *args, str(script), "first-arg"],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


STUCK = """
    import sys, threading

    def follow_logs(never):
        never.wait()

    threading.Thread(target=follow_logs, args=(threading.Event(),), name="stuck-follower").start()
    print("main done", sys.argv[1:], flush=True)
"""

STUCK_UNTIL_STDIN = """
    import sys, threading

    def follow_logs():
        sys.stdin.readline()  # ends when the test writes a line

    threading.Thread(target=follow_logs, name="stuck-follower").start()
"""


def test_fail_reports_the_stuck_thread_and_exits_at_once(tmp_path):
    result = run(tmp_path, STUCK, "--fail", "--timeout", "0.1")
    assert result.returncode == 1
    assert "main done ['first-arg']" in result.stdout
    assert "1 non-daemon thread keeps the process alive; exiting now (--fail)" in result.stderr
    assert "Thread 'stuck-follower'" in result.stderr
    assert "follow_logs" in result.stderr and "never.wait()" in result.stderr


def test_without_fail_it_reports_then_waits_as_python_does(tmp_path):
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(STUCK_UNTIL_STDIN))
    process = subprocess.Popen(
        [sys.executable, "-m", "leakcheck", "run", "--timeout", "0.1", str(script)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        report = [process.stderr.readline() for _ in range(3)]  # the summary, a blank line, the thread's header
        assert "waiting for them, as Python does" in report[0]
        assert report[2].startswith("Thread 'stuck-follower'")
        assert process.poll() is None  # still waiting for the thread
    finally:
        process.communicate("\n", timeout=30)
    assert process.returncode == 0


def test_a_thread_that_ends_within_the_grace_period_is_not_reported(tmp_path):
    result = run(
        tmp_path,
        """
        import threading
        finished = threading.Event()
        threading.Thread(target=finished.wait, name="finishing-worker").start()
        finished.set()
        """,
        "--fail",
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_daemon_threads_do_not_keep_a_program_alive_and_are_not_reported(tmp_path):
    result = run(
        tmp_path,
        """
        import threading
        threading.Thread(target=threading.Event().wait, name="daemon-helper", daemon=True).start()
        """,
        "--fail",
        "--timeout",
        "0.05",
    )
    assert (result.returncode, result.stderr) == (0, "")


def test_a_pending_task_on_a_loop_in_a_non_daemon_thread_is_listed(tmp_path):
    result = run(
        tmp_path,
        """
        import asyncio, threading

        KEEP = []  # a pending task nobody references is garbage, not a blocker

        async def follow_logs():
            await asyncio.Event().wait()

        def loop_thread():
            loop = asyncio.new_event_loop()
            KEEP.append(loop.create_task(follow_logs(), name="follow-task"))
            loop.run_forever()

        threading.Thread(target=loop_thread, name="loop-runner").start()
        """,
        "--fail",
        "--timeout",
        "0.1",
    )
    assert result.returncode == 1
    assert "1 non-daemon thread and 1 pending task keep the process alive" in result.stderr
    assert "Thread 'loop-runner'" in result.stderr
    assert "Task 'follow-task'" in result.stderr and "follow_logs" in result.stderr


def test_the_program_exit_status_and_errors_pass_through(tmp_path):
    assert run(tmp_path, "import sys; sys.exit(3)").returncode == 3
    failed = run(tmp_path, "raise RuntimeError('program failed')")
    assert failed.returncode == 1
    assert "RuntimeError: program failed" in failed.stderr


def test_run_a_module(tmp_path):
    (tmp_path / "stuck_module.py").write_text(textwrap.dedent(STUCK))
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "run", "--fail", "--timeout", "0.1", "-m", "stuck_module", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        check=False,
    )
    assert result.returncode == 1
    assert "main done ['x']" in result.stdout
    assert "Thread 'stuck-follower'" in result.stderr


def run_module(tmp_path, *args: str) -> subprocess.CompletedProcess:
    """``python -m leakcheck run --fail ARGS`` in ``tmp_path``, which is on the path of modules."""
    return subprocess.run(
        [sys.executable, "-m", "leakcheck", "run", "--fail", "--timeout", "0.1", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": ""},
        check=False,
    )


def write_modules(tmp_path, files: dict) -> None:
    for name, source in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))


@pytest.mark.parametrize(
    ("module", "message"),
    [
        ("no_such_module", "No module named no_such_module"),
        ("no_such_package.follower", "No module named 'no_such_package'"),
        ("library", "No module named library.__main__; 'library' is a package and cannot be directly executed"),
        ("library.no_such_module", "No module named library.no_such_module"),
        ("plain.py", "Try using 'plain' instead of 'plain.py' as the module name"),
        (".plain", "Relative module names not supported"),
        ("", "run -m needs a module name"),
    ],
)
def test_a_module_that_cannot_be_found_is_a_usage_error(tmp_path, module, message):
    write_modules(tmp_path, {"library/__init__.py": "", "plain.py": "print('plain ran')\n"})
    result = run_module(tmp_path, "-m", module)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("python -m leakcheck run: error: ") and message in last
    assert result.stdout == ("plain ran\n" if module == "plain.py" else "")  # python -m imports the parent too


@pytest.mark.parametrize(
    ("files", "module"),
    [
        ({"importing.py": "import no_such_dependency\n"}, "importing"),
        ({"app/__init__.py": "import no_such_dependency\n", "app/__main__.py": ""}, "app"),
        ({"app/__init__.py": "import no_such_dependency\n", "app/server.py": ""}, "app.server"),
    ],
    ids=["module", "package", "parent-package"],
)
def test_an_import_error_of_the_program_itself_is_shown_as_python_shows_it(tmp_path, files, module):
    write_modules(tmp_path, files)
    result = run_module(tmp_path, "-m", module)
    python = subprocess.run(
        [sys.executable, "-m", module], capture_output=True, text=True, timeout=60, cwd=tmp_path, check=False
    )
    error = "ModuleNotFoundError: No module named 'no_such_dependency'"
    assert (python.returncode, python.stderr.splitlines()[-1]) == (1, error)
    assert result.returncode == python.returncode
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert result.stderr.splitlines()[-1] == python.stderr.splitlines()[-1]
    assert "usage:" not in result.stderr


def test_a_package_runs_its_main_module(tmp_path):
    write_modules(tmp_path, {"service/__init__.py": "", "service/__main__.py": STUCK})
    result = run_module(tmp_path, "-m", "service", "x")
    assert result.returncode == 1
    assert "main done ['x']" in result.stdout
    assert "Thread 'stuck-follower'" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("run",), "run needs a script"),
        (("run", "/no/such/script.py"), "can't open file '/no/such/script.py'"),
        (("run", "--timeout", "-1", "x.py"), "--timeout must be"),
    ],
)
def test_usage_errors_exit_2(args, message):
    result = subprocess.run([sys.executable, "-m", "leakcheck", *args], capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]


def test_idle_workers_of_a_kept_thread_pool_are_not_reported(tmp_path):
    # At exit, concurrent.futures tells idle workers to stop: they keep nothing alive.
    result = run(
        tmp_path,
        """
        import concurrent.futures
        POOL = concurrent.futures.ThreadPoolExecutor(3, thread_name_prefix="idle-pool")
        print(sum(POOL.map(abs, [-1, -2, -3])), flush=True)
        """,
        "--fail",
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "6\n", "")


def test_a_pool_worker_still_running_a_job_is_reported_with_the_job(tmp_path):
    result = run(
        tmp_path,
        """
        import concurrent.futures, threading

        def follow_logs(never):
            never.wait()

        POOL = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="busy-pool")
        POOL.submit(follow_logs, threading.Event())
        POOL.submit(abs, -1).result()  # the other worker falls idle, and is not reported
        """,
        "--fail",
        "--timeout",
        "0.1",
    )
    assert result.returncode == 1
    assert "1 non-daemon thread keeps the process alive" in result.stderr
    assert "Thread 'busy-pool_" in result.stderr
    assert "in __main__.follow_logs" in result.stderr and "never.wait()" in result.stderr
