"""python -m leakcheck stacks|check: the shell-level view of another process's stacks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading

import helpers
import pytest
from helpers import answering

import leakcheck
from leakcheck import serve_stacks

# The CLI runs in a child process and reads this process's endpoint: the thread under test lives
# here, and so does the test's own thread, so keywords are held in constants that its source
# lines never spell out.
HANDLER = "follow_logs"
MISSING = "no_such_" + "handler"


def follow_logs(release: threading.Event) -> None:
    release.wait()


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "leakcheck", *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.fixture
def server():
    with serve_stacks() as running:
        yield running


@pytest.fixture
def follower():
    with helpers.parked_threads() as parked:
        yield parked.start(follow_logs, name="log-follower"), parked


def test_stacks_prints_the_dump(server, follower):
    result = cli("stacks", server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"leakcheck snapshot of pid {os.getpid()}")
    assert "Thread 'log-follower'" in result.stdout and "follow_logs" in result.stdout


def test_stacks_keeps_only_the_matching_stacks_and_prints_json(server, follower):
    result = cli("stacks", server.url, "--match", HANDLER, "--json")
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert [thread["name"] for thread in document["threads"]] == ["log-follower"]


@pytest.mark.parametrize(
    ("count", "args", "grouped"),
    [(21, (), True), (20, (), False), (21, ("--no-group",), False), (2, ("--group",), True)],
)
def test_stacks_groups_when_more_than_20_share_a_stack_unless_told(server, count, args, grouped):
    with helpers.parked_threads() as parked:
        gathered = helpers.Gathered(parked, count, "gathered")
        try:
            result = cli("stacks", server.url, "--match", "Gathered" + ".work", *args)
        finally:
            gathered.release()
    assert result.returncode == 0, result.stderr
    assert (f"{count} threads with this stack:\n" in result.stdout) is grouped
    assert result.stdout.count("in helpers.Gathered.work") == (1 if grouped else count)
    parsed = leakcheck.parse_dump(result.stdout)
    assert sorted(info.name for info in parsed.threads) == sorted(f"gathered-{number}" for number in range(count))


def test_check_absent_fails_with_the_handler_stack_then_passes_once_it_ends(server, follower):
    _, parked = follower
    result = cli("check", server.url, "--absent", HANDLER)
    assert result.returncode == 1
    assert "log-follower" in result.stdout and "follow_logs" in result.stdout
    parked.release()
    result = cli("check", server.url, "--absent", HANDLER, "--timeout", "5")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_check_present(server, follower):
    assert cli("check", server.url, "--present", HANDLER).returncode == 0
    result = cli("check", server.url, "--present", MISSING, "--timeout", "0.05")
    assert result.returncode == 1
    assert "no stack matches 'no_such_handler'" in result.stdout


def test_check_by_pid_through_the_agent():
    child_code = (
        "import sys, threading, leakcheck\n"
        "def follow_logs(release):\n    release.wait()\n"
        "leakcheck.start_agent()\n"
        "threading.Thread(target=follow_logs, args=(threading.Event(),), name='agent-follower', daemon=True).start()\n"
        "print('ready', flush=True)\nsys.stdin.readline()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", child_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout.readline().strip() == "ready"
        result = cli("check", str(child.pid), "--absent", "follow_logs")
        assert result.returncode == 1 and "agent-follower" in result.stdout
        assert cli("stacks", str(child.pid), "--match", "agent-follower").stdout.count("Thread 'agent-follower'") == 1
    finally:
        child.stdin.write("\n")
        child.stdin.flush()
        child.wait(10)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "the following arguments are required: COMMAND"),
        (("check", "http://127.0.0.1:1/"), "check needs at least one --absent or --present keyword"),
        (("check", "nowhere", "--absent", "x"), "the target must be a PID or an http:// or https:// URL"),
        (("stacks", "notapid"), "the target must be a PID or an http:// or https:// URL, not 'notapid'"),
        (("stacks", "localhost:6060"), "the target must be a PID or an http:// or https:// URL"),
        (("stacks", "ftp://localhost/"), "the target must be an http:// or https:// URL"),
        (("stacks", "http://localhost:99999/"), "bad port in 'http://localhost:99999/'"),
        (("check", "0", "--absent", "x"), "the target must be a positive PID, not 0"),
        (("stacks", "-5"), "the target must be a positive PID, not -5"),
        (("check", "http://127.0.0.1:1/", "--absent", "x", "--timeout", "-1"), "--timeout must be"),
        (("stacks", "123", "--token", "t"), "--token goes with a URL target"),
        (("stacks", "http://127.0.0.1:1/", "--group", "--no-group"), "not allowed with argument --group"),
        (("stacks", "http://127.0.0.1:1/", "--json", "--group"), "--group is for the text dump"),
        (("frobnicate",), "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_with_a_one_line_message(args, message):
    result = cli(*args)
    assert result.returncode == 2
    assert message in result.stderr.strip().splitlines()[-1]
    assert result.stdout == ""


def test_an_unreachable_target_exits_2():
    closed = serve_stacks()
    closed.close()
    result = cli("check", closed.url, "--absent", "follow_logs")
    assert result.returncode == 2
    assert "cannot reach" in result.stderr


SNAPSHOT_TAKEN_AT = '{"format":"leakcheck-snapshot","version":1,"pid":4242,"taken_at":TAKEN_AT,"threads":[],"tasks":[]}'


@pytest.mark.parametrize("taken_at", ["1" + "0" * 309, "NaN"])
def test_an_answer_with_a_time_no_float_holds_exits_2_without_a_traceback(taken_at):
    # 1 and 309 zeros once escaped as an OverflowError, with a traceback and exit status 1.
    with answering(SNAPSHOT_TAKEN_AT.replace("TAKEN_AT", "1764201301.25").encode()) as url:
        fitting = cli("check", url, "--absent", MISSING)
        assert (fitting.returncode, fitting.stdout, fitting.stderr) == (0, "", "")
    with answering(SNAPSHOT_TAKEN_AT.replace("TAKEN_AT", taken_at).encode()) as url:
        for args in (("check", url, "--absent", MISSING), ("stacks", url)):
            result = cli(*args)
            assert result.returncode == 2, result.stderr
            assert result.stdout == ""
            assert "Traceback" not in result.stderr
            (line,) = result.stderr.splitlines()
            assert line.startswith(f"python -m leakcheck: error: {url} did not answer with a leakcheck snapshot")
            assert "snapshot.taken_at is out of range" in line


def test_version():
    result = cli("--version")
    assert (result.returncode, result.stdout, result.stderr) == (0, f"leakcheck {leakcheck.__version__}\n", "")
    assert leakcheck.__version__.count(".") == 2


def test_help_lists_both_commands():
    result = cli("--help")
    assert result.returncode == 0
    assert "stacks" in result.stdout and "check" in result.stdout
