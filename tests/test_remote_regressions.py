"""Regressions found by a review of the cross-process checks, one test each."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading

import pytest

from leakcheck import RemoteError, assert_stack_match, fetch_snapshot, find_stacks, serve_stacks, snapshot
from leakcheck.remote.agent import socket_path


class _Fake:
    """A TCP server on loopback answering every connection with fixed bytes, in a thread joined on close."""

    def __init__(self, answer: bytes) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/"
        self.received: list = []
        self._answer = answer
        self._closing = False
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            if self._closing:
                connection.close()
                return
            with connection:
                self.received.append(connection.recv(65536))
                connection.sendall(self._answer)

    def close(self) -> None:
        self._closing = True
        socket.create_connection(self.listener.getsockname()).close()  # wakes the accept()
        self._thread.join(5)
        self.listener.close()


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"])
def test_an_answer_that_is_not_http_is_a_remote_error(answer):
    fake = _Fake(answer)
    try:
        with pytest.raises(RemoteError, match="did not answer"):
            fetch_snapshot(fake.url, timeout=5)
        result = subprocess.run(
            [sys.executable, "-m", "leakcheck", "check", fake.url, "--absent", "x"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 2 and "did not answer" in result.stderr
    finally:
        fake.close()


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else():
    elsewhere = _Fake(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    redirecting = _Fake(f"HTTP/1.1 302 Found\r\nLocation: {elsewhere.url}\r\nContent-Length: 0\r\n\r\n".encode())
    try:
        with pytest.raises(RemoteError, match="302"):
            fetch_snapshot(redirecting.url, token="s3cret")
        assert elsewhere.received == []
    finally:
        redirecting.close()
        elsewhere.close()


def test_a_token_with_a_pid_or_snapshot_source_is_refused():
    for source in (os.getpid(), snapshot()):
        with pytest.raises(TypeError, match="token= goes with a URL source="):
            find_stacks("MainThread", source=source, token="s3cret")


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


def test_closing_at_once_after_starting_never_races_the_server_thread():
    # The server thread may see the close before its first wait: close() must not then write to a closed socket.
    for _ in range(200):
        serve_stacks().close()
