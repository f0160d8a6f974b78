"""The examples run as scripts, and their pieces behave as the scripts claim."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, List, Tuple

import pytest

from leakcheck import LeakError, assert_no_stack_match, no_leaks

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


def run_example(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


@cache
def load_example(name: str) -> ModuleType:
    module_name = f"leakcheck_example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


# --- the scripts -------------------------------------------------------------


def test_log_follow_server_script_catches_the_leak_and_passes_the_fix() -> None:
    result = run_example("log_follow_server.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    # Caught by no_leaks, with the handler's stack down to the blocking get().
    assert "Caught by no_leaks (LeakError)" in out
    assert "1 leaked thread" in out
    assert "Thread 'log-handler'" in out
    assert "in __main__.LeakyLogHandler.follow_logs" in out
    assert "line = subscription.get()" in out
    # Caught by the keyword assertion.
    assert "Caught by assert_no_stack_match (LeakError)" in out
    assert "1 stack matching 'follow_logs'" in out
    # The fix passes both.
    assert "fixed handler passed no_leaks" in out
    assert 'fixed handler passed assert_no_stack_match("follow_logs")' in out
    assert "FixedLogHandler" not in out
    assert "UNEXPECTED" not in out
    assert result.stderr == ""


def test_asyncio_task_leak_script_catches_the_leak_and_passes_the_fix() -> None:
    result = run_example("asyncio_task_leak.py")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Caught by async with no_leaks() (LeakError)" in out
    assert "1 leaked task" in out
    assert "Task 'event-pump'" in out
    assert "coro=pump_events" in out
    # The whole await chain, down to where the task is suspended.
    assert "in __main__.pump_events" in out
    assert "in __main__.EventSource.next_event" in out
    assert "in asyncio.queues.Queue.get" in out
    assert "fixed subscription passed no_leaks" in out
    assert "UNEXPECTED" not in out
    assert result.stderr == ""


def test_log_follow_server_serve_mode_serves_the_log_until_terminated() -> None:
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "log_follow_server.py"), "--serve"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert first.startswith("serving http://127.0.0.1:"), first
        assert "leaky handler" in first
        port = int(first.split("http://127.0.0.1:")[1].split("/")[0])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
            connection.sendall(b"GET /logs HTTP/1.0\r\n\r\n")
            body = connection.makefile("rb").read().decode()
        assert body.startswith("HTTP/1.0 200")
        assert "INFO  service started" in body
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=30)
    if os.name == "posix":  # SIGTERM shuts the server down cleanly
        assert process.returncode == 0, stderr


# --- the log-follow server, in process -----------------------------------------


@pytest.fixture
def log_example() -> ModuleType:
    return load_example("log_follow_server")


def test_leaky_log_handler_is_reported_by_no_leaks(log_example: ModuleType) -> None:
    with log_example.LogServer(log_example.LeakyLogHandler) as server:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=0.1):
            lines = log_example.follow_then_disconnect(server)
        assert lines == ["INFO  service started"]
    report = excinfo.value.report
    assert [info.name for info in report.threads] == ["log-handler"]
    assert report.tasks == ()
    functions = [frame.function for frame in report.threads[0].frames]
    assert functions[-3:] == [
        "leakcheck_example_log_follow_server.LeakyLogHandler.follow_logs",
        "queue.Queue.get",
        "threading.Condition.wait",
    ]
    assert "follow_logs" in str(excinfo.value)


def test_leaky_log_handler_is_reported_by_assert_no_stack_match(log_example: ModuleType) -> None:
    with log_example.LogServer(log_example.LeakyLogHandler) as server:
        log_example.follow_then_disconnect(server)
        with pytest.raises(LeakError) as excinfo:
            assert_no_stack_match("follow_logs", timeout=0.1)
    assert [info.name for info in excinfo.value.report.forbidden] == ["log-handler"]
    assert "LeakyLogHandler.follow_logs" in str(excinfo.value)


def test_closing_the_server_releases_the_leaked_handler(log_example: ModuleType) -> None:
    server = log_example.LogServer(log_example.LeakyLogHandler).start()
    try:
        log_example.follow_then_disconnect(server)
        (handler,) = server.httpd.live_followers()
    finally:
        server.close()
    assert not handler.is_alive()
    assert server.httpd.live_followers() == []


def test_fixed_log_handler_passes_no_leaks(log_example: ModuleType) -> None:
    with log_example.LogServer(log_example.FixedLogHandler) as server:
        with no_leaks(timeout=5):
            lines = log_example.follow_then_disconnect(server, lines=2)
        assert lines == ["INFO  service started", "INFO  listening on :8080"]
        assert server.httpd.live_followers() == []


def test_fixed_log_handler_passes_assert_no_stack_match(log_example: ModuleType) -> None:
    with log_example.LogServer(log_example.FixedLogHandler) as server:
        log_example.follow_then_disconnect(server)
        assert_no_stack_match("follow_logs", timeout=5)
        assert server.httpd.live_followers() == []


def _follow_and_receive_published_line(example: ModuleType, server: Any) -> Tuple[List[str], str]:
    """Follow the log, read the backlog, publish a line and read it; then hang up."""
    with socket.create_connection(server.address, timeout=10) as connection:
        connection.sendall(b"GET /logs?follow=1 HTTP/1.1\r\nHost: test\r\n\r\n")
        with connection.makefile("rb") as reader:
            while reader.readline() not in (b"\r\n", b""):
                pass
            backlog = [reader.readline().decode().rstrip("\n") for _ in example.SAMPLE_LOG]
            assert server.httpd.follower_waiting.wait(10)
            server.broker.publish("ERROR disk full")
            published = reader.readline().decode()
    return backlog, published


def test_fixed_log_handler_streams_new_lines_to_a_connected_client(log_example: ModuleType) -> None:
    """The fix must not break following: a client that stays gets every new line."""
    with log_example.LogServer(log_example.FixedLogHandler) as server, no_leaks(timeout=5):
        backlog, published = _follow_and_receive_published_line(log_example, server)
    assert backlog == list(log_example.SAMPLE_LOG)
    assert published == "ERROR disk full\n"


def test_log_demo_main_returns_zero(log_example: ModuleType, capsys: pytest.CaptureFixture[str]) -> None:
    assert log_example.main([]) == 0
    out = capsys.readouterr().out
    assert "LeakyLogHandler.follow_logs" in out
    assert "fixed handler passed no_leaks" in out


# --- the asyncio example, in process -------------------------------------------


@pytest.fixture
def asyncio_example() -> ModuleType:
    return load_example("asyncio_task_leak")


def test_forgotten_pump_task_is_reported_with_its_await_chain(asyncio_example: ModuleType) -> None:
    error = asyncio.run(asyncio_example.check_leaky(timeout=0.1))
    assert isinstance(error, LeakError)
    (task,) = error.report.tasks
    assert task.name == "event-pump"
    assert task.coro == "pump_events"
    assert [frame.function for frame in task.frames] == [
        "leakcheck_example_asyncio_task_leak.pump_events",
        "leakcheck_example_asyncio_task_leak.EventSource.next_event",
        "asyncio.queues.Queue.get",
    ]
    assert error.report.threads == ()


def test_fixed_subscription_passes_no_leaks(asyncio_example: ModuleType) -> None:
    assert asyncio.run(asyncio_example.check_fixed(timeout=5)) is None


def test_fixed_subscription_delivers_events_and_ends_its_pump(asyncio_example: ModuleType) -> None:
    async def scenario() -> List[str]:
        bus = asyncio_example.EventBus()
        received: List[str] = []
        delivered = asyncio.Event()

        def handler(event: str) -> None:
            received.append(event)
            if len(received) == 2:
                delivered.set()

        async with asyncio_example.subscription(bus, handler):
            (pump,) = [task for task in asyncio.all_tasks() if task.get_name() == "event-pump"]
            bus.publish("a")
            bus.publish("b")
            await asyncio.wait_for(delivered.wait(), timeout=10)
        assert pump.cancelled()
        return received

    assert asyncio.run(scenario()) == ["a", "b"]
