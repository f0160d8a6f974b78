"""Reading another process's stacks: fetch_snapshot, source= on the keyword assertions, the agent."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys
import textwrap
import threading

import helpers
import pytest
from helpers import answering

from leakcheck import (
    LeakError,
    RemoteError,
    Snapshot,
    assert_no_stack_match,
    assert_stack_match,
    fetch_snapshot,
    find_stacks,
    serve_stacks,
    snapshot,
    start_agent,
)
from leakcheck.remote.agent import socket_path

# In this process the test's own thread is in the dump too: keywords are held in
# constants so that the calling source lines never contain them.
HANDLER = "follow_logs"
MISSING = "no-such-" + "handler"


def follow_logs(release: threading.Event) -> None:
    release.wait()


@pytest.fixture
def server():
    with serve_stacks() as running:
        yield running


@pytest.fixture
def follower():
    """A thread blocked in follow_logs until the test releases it."""
    with helpers.parked_threads() as parked:
        thread = parked.start(follow_logs, name="log-follower")
        yield parked.release_event, thread


# -- fetch_snapshot


def test_fetch_snapshot_returns_the_stacks_behind_the_url(server, follower):
    taken = fetch_snapshot(server.url)
    follower_info = next(info for info in taken.threads if info.name == "log-follower")
    assert any(frame.function.endswith("follow_logs") for frame in follower_info.frames)
    assert taken.pid == os.getpid()
    assert not any(info.name.startswith("leakcheck-stack") for info in taken.threads)


def test_fetch_snapshot_sends_the_token():
    with serve_stacks(token="s3cret") as guarded:
        assert fetch_snapshot(guarded.url, token="s3cret").threads
        with pytest.raises(RemoteError, match="401 Unauthorized"):
            fetch_snapshot(guarded.url)
        with pytest.raises(RemoteError, match="401"):
            fetch_snapshot(guarded.url, token="wrong")


def test_fetch_snapshot_from_a_closed_server_is_a_remote_error():
    closed = serve_stacks()
    closed.close()
    with pytest.raises(RemoteError, match="cannot reach"):
        fetch_snapshot(closed.url, timeout=2)
    assert issubclass(RemoteError, OSError)


@pytest.mark.parametrize(
    ("url", "kwargs", "error", "message"),
    [
        ("ftp://localhost/", {}, ValueError, "http:// or https:// URL"),
        ("localhost:8080", {}, ValueError, "http:// or https:// URL"),
        (8080, {}, TypeError, "as str"),
        ("http://127.0.0.1:1/", {"timeout": -1}, ValueError, "timeout"),
        ("http://127.0.0.1:1/", {"token": ""}, ValueError, "token"),
    ],
)
def test_fetch_snapshot_refuses_bad_arguments(url, kwargs, error, message):
    with pytest.raises(error, match=message):
        fetch_snapshot(url, **kwargs)


ANSWER = (
    '{"format":"leakcheck-snapshot","version":1,"pid":PID,"taken_at":TAKEN_AT,"tasks":[],'
    '"threads":[{"ident":IDENT,"native_id":null,"name":"MainThread","daemon":false,"stack":"",'
    '"frames":[{"filename":"app.py","lineno":LINENO,"function":"app.main","line":""}]}]}'
)


def snapshot_answer(**numbers: str) -> bytes:
    """A snapshot's JSON, with numbers written as given: as a crafted or broken endpoint may."""
    text = ANSWER
    fields = {"pid": "4242", "taken_at": "1764201301.25", "ident": "140207", "lineno": "12", **numbers}
    for field, value in fields.items():
        text = text.replace(field.upper(), value)
    return text.encode()


@pytest.mark.parametrize(
    ("numbers", "message"),
    [
        ({"taken_at": "1" + "0" * 309}, "snapshot.taken_at is out of range: 1000"),  # once an OverflowError
        ({"taken_at": "1e999"}, "snapshot.taken_at is out of range: 1e999"),
        ({"taken_at": "NaN"}, "snapshot.taken_at is out of range: NaN"),
        ({"pid": "9" * 5000}, "snapshot.pid is out of range: 999"),
        ({"ident": "-1"}, "threads[0].ident is out of range: -1"),
        ({"lineno": "18446744073709551616"}, "threads[0].frames[0].lineno is out of range: 18446744073709551616"),
    ],
)
def test_an_answer_with_a_number_no_snapshot_holds_is_a_remote_error(numbers, message):
    with answering(snapshot_answer()) as url:
        assert [info.name for info in fetch_snapshot(url).threads] == ["MainThread"]  # the same, but fitting
    with answering(snapshot_answer(**numbers)) as url:
        with pytest.raises(RemoteError, match="did not answer with a leakcheck snapshot") as raised:
            fetch_snapshot(url)
        assert message in str(raised.value)
        for assertion in (find_stacks, assert_stack_match):
            with pytest.raises(RemoteError) as raised:
                assertion("MainThread", source=url)
            assert message in str(raised.value)
        with pytest.raises(RemoteError) as raised:
            assert_no_stack_match(MISSING, source=url)
        assert message in str(raised.value)


# -- source= on the keyword assertions


def test_find_stacks_in_another_process_by_url(server, follower):
    found = find_stacks(HANDLER, source=server.url)
    assert [info.name for info in found] == ["log-follower"]


def test_assert_no_stack_match_fails_with_the_handler_stack_it_last_saw(server, follower):
    with pytest.raises(LeakError) as raised:
        assert_no_stack_match(HANDLER, source=server.url, timeout=0.1)
    text = str(raised.value)
    assert "log-follower" in text and "follow_logs" in text


def test_assert_no_stack_match_fetches_again_until_the_handler_is_gone(server):
    with helpers.parked_threads() as parked:
        parked.start(follow_logs, name="log-follower")
        assert_stack_match(HANDLER, source=server.url)
        releaser = threading.Timer(0.05, parked.release_event.set)  # ends the handler while the assertion polls
        releaser.start()
        try:
            assert_no_stack_match(HANDLER, source=server.url, timeout=5)
        finally:
            releaser.join()


def test_assert_stack_match_fails_with_the_stacks_it_last_saw(server):
    with pytest.raises(AssertionError, match="no stack matches 'no-such-handler'") as raised:
        assert_stack_match(MISSING, source=server.url, timeout=0.05)
    assert "MainThread" in str(raised.value)


def test_polling_survives_an_endpoint_that_comes_up_late():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    servers = []
    starter = threading.Timer(0.2, lambda: servers.append(serve_stacks(port=port)))
    starter.start()
    try:
        found = assert_stack_match("MainThread", source=f"http://127.0.0.1:{port}/", timeout=10)
        assert [info.name for info in found] == ["MainThread"]
    finally:
        starter.join()
        for server in servers:
            server.close()


def test_an_endpoint_that_never_answers_fails_with_the_reason_within_the_timeout():
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]
    with pytest.raises(RemoteError, match="cannot reach"):
        assert_stack_match("MainThread", source=f"http://127.0.0.1:{port}/", timeout=0.2)


def test_a_snapshot_as_source_is_searched_once(follower):
    taken = snapshot()
    release, thread = follower
    release.set()
    thread.join(5)
    assert [info.name for info in find_stacks("follow_logs", source=taken)] == ["log-follower"]
    with pytest.raises(LeakError, match="log-follower"):
        assert_no_stack_match("follow_logs", source=taken, timeout=5)


def test_a_token_protected_source(follower):
    with serve_stacks(token="s3cret") as guarded:
        assert find_stacks("follow_logs", source=guarded.url, token="s3cret")
        with pytest.raises(RemoteError, match="401"):
            find_stacks("follow_logs", source=guarded.url)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"source": True}, TypeError, "URL, a pid or a Snapshot"),
        ({"source": 1.5}, TypeError, "URL, a pid or a Snapshot"),
        ({"source": 0}, ValueError, "positive pid"),
        ({"source": "file:///etc/passwd"}, ValueError, "http:// or https://"),
        ({"token": "s3cret"}, TypeError, "token= goes with a URL source="),
    ],
)
def test_bad_sources_are_refused_where_they_are_given(kwargs, error, message):
    for assertion in (find_stacks, assert_stack_match, assert_no_stack_match):
        with pytest.raises(error, match=message):
            assertion("follow_logs", **kwargs)


def test_a_token_with_a_pid_or_snapshot_source_is_refused():
    for source in (os.getpid(), snapshot()):
        with pytest.raises(TypeError, match="token= goes with a URL source="):
            find_stacks("MainThread", source=source, token="s3cret")


# -- the agent


AGENT_CHILD = textwrap.dedent(
    """
    import sys, threading
    import leakcheck

    def follow_logs(release):
        release.wait()

    path = leakcheck.start_agent()
    assert leakcheck.start_agent() == path
    release = threading.Event()
    threading.Thread(target=follow_logs, args=(release,), name="agent-follower", daemon=True).start()
    print(path, flush=True)
    sys.stdin.readline()  # the test's go to exit
    """
)


@pytest.fixture
def agent_child():
    child = subprocess.Popen(
        [sys.executable, "-c", AGENT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        path = child.stdout.readline().strip()
        yield child, path
    finally:
        if child.poll() is None:
            child.stdin.write("\n")
            child.stdin.flush()
        child.wait(10)


def test_the_agent_serves_another_process_by_pid(agent_child):
    child, path = agent_child
    assert path == socket_path(child.pid)
    found = find_stacks("follow_logs", source=child.pid)
    assert [info.name for info in found] == ["agent-follower"]
    with pytest.raises(LeakError, match="agent-follower"):
        assert_no_stack_match("follow_logs", source=child.pid, timeout=0.05)


def test_the_agent_socket_is_private_and_removed_at_exit(agent_child):
    child, path = agent_child
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(os.path.dirname(path)).st_mode) == 0o700
    assert os.stat(os.path.dirname(path)).st_uid == os.getuid()
    child.stdin.write("\n")
    child.stdin.flush()
    assert child.wait(10) == 0
    assert not os.path.exists(path)


FORKING_CHILD = textwrap.dedent(
    """
    import os, sys, leakcheck
    path = leakcheck.start_agent()
    child = os.fork()
    if child == 0:
        sys.exit(0)  # a normal exit runs atexit, which must leave the parent's agent alone
    os.waitpid(child, 0)
    print(path, flush=True)
    sys.stdin.readline()
    """
)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
def test_a_forked_child_leaves_the_parents_agent_serving():
    parent = subprocess.Popen(
        [sys.executable, "-c", FORKING_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        path = parent.stdout.readline().strip()
        assert os.path.exists(path)
        assert find_stacks("MainThread", source=parent.pid)
    finally:
        parent.communicate("\n", timeout=30)
    assert parent.returncode == 0
    assert not os.path.exists(path)


def test_run_fail_removes_the_agent_socket(tmp_path):
    script = tmp_path / "agent_stuck.py"
    script.write_text(
        "import os, threading, leakcheck\n"
        "leakcheck.start_agent()\n"
        "print(os.getpid(), flush=True)\n"
        "threading.Thread(target=threading.Event().wait, name='stuck').start()\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "run", "--fail", "--timeout", "0.05", str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1 and "Thread 'stuck'" in result.stderr
    assert not os.path.exists(socket_path(int(result.stdout.split()[0])))


@pytest.mark.skipif(hasattr(sys, "remote_exec"), reason="3.14+ attaches to it: see test_attach.py")
def test_a_pid_without_an_agent_is_a_remote_error_naming_the_agent():
    with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE) as child:
        try:
            with pytest.raises(RemoteError, match=f"pid {child.pid} needs Python 3.14 or later here") as raised:
                find_stacks("follow_logs", source=child.pid)
            assert "call leakcheck.start_agent() there" in str(raised.value)
        finally:
            child.stdin.close()


def test_start_agent_in_this_process_is_idempotent_and_serves_it():
    path = start_agent()
    assert start_agent() == path
    assert Snapshot is type(snapshot())
    assert find_stacks("MainThread", source=os.getpid())


def test_the_agent_refuses_a_directory_others_can_enter(tmp_path, monkeypatch):
    loose = tmp_path / "agents"
    monkeypatch.setenv("LEAKCHECK_AGENT_DIR", str(loose))
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    from leakcheck.remote import agent as _agent

    with pytest.raises(PermissionError, match="mode 0700"):
        _agent._private_directory()
