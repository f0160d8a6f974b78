"""The original scenario end to end: a log-follow server in another process, checked through its endpoint.

The test opens ``/logs?follow=1``, hangs up, and asserts through the server's
``/debug/stacks`` that no ``follow_logs`` stack remains: the fixed server
passes, the leaky one fails with the handler's stack.  The same check is made
once with ``python -m leakcheck check``.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from leakcheck import LeakError, assert_no_stack_match, assert_stack_match

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "log_follow_server.py"
HANDLER = "follow_logs"
FIXED_GRACE = 5.0  # the fixed handler notices the hang-up at its next poll, well within this


@pytest.fixture(params=["leaky", "fixed"])
def log_server(request):
    """The example server as a separate process: (kind, logs URL, stacks URL)."""
    args = [sys.executable, str(EXAMPLE), "--serve"] + (["--fixed"] if request.param == "fixed" else [])
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = process.stdout.readline()
        assert first.startswith("serving http://127.0.0.1:"), first
        logs_url = first.split()[1]
        stacks_url = first.rsplit("stacks at ", 1)[1].strip()
        yield request.param, logs_url, stacks_url
    finally:
        process.terminate()
        process.communicate(timeout=30)


def follow_then_hang_up(logs_url: str, stacks_url: str) -> None:
    """Open /logs?follow=1, read the first line, wait until the handler follows, and hang up."""
    parts = urlsplit(logs_url)
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as connection:
        connection.sendall(f"GET {parts.path}?{parts.query} HTTP/1.0\r\n\r\n".encode())
        stream = connection.makefile("rb")
        assert stream.readline().startswith(b"HTTP/1.0 200")
        # The handler is waiting for new lines once its stack shows follow_logs.
        found = assert_stack_match(HANDLER, source=stacks_url, timeout=10)
        assert [info.name for info in found] == ["log-handler"]


def test_no_follow_logs_stack_remains_after_the_client_hangs_up(log_server):
    kind, logs_url, stacks_url = log_server
    follow_then_hang_up(logs_url, stacks_url)
    if kind == "fixed":
        assert_no_stack_match(HANDLER, source=stacks_url, timeout=FIXED_GRACE)
        return
    with pytest.raises(LeakError) as raised:
        assert_no_stack_match(HANDLER, source=stacks_url, timeout=0.5)
    report = str(raised.value)
    assert "Thread 'log-handler'" in report
    assert "LeakyLogHandler.follow_logs" in report
    assert "subscription.get()" in report


def test_the_same_check_from_the_shell(log_server):
    kind, logs_url, stacks_url = log_server
    follow_then_hang_up(logs_url, stacks_url)
    grace = str(FIXED_GRACE) if kind == "fixed" else "0.5"
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "check", stacks_url, "--absent", HANDLER, "--timeout", grace],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if kind == "fixed":
        assert (result.returncode, result.stdout) == (0, "")
    else:
        assert result.returncode == 1
        assert "LeakyLogHandler.follow_logs" in result.stdout
