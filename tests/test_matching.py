"""Ignore matchers: ignore_name, ignore_top_function, ignore_any_function, callables, ignore_globally."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import socketserver
import threading
from pathlib import Path
from typing import Any, Callable, Iterator, List, Tuple

import pytest
from helpers import JOIN_TIMEOUT, parked_threads

from leakcheck import (
    BUILTIN_IGNORES,
    LeakError,
    Matcher,
    TaskInfo,
    ThreadInfo,
    ignore_any_function,
    ignore_created_by,
    ignore_globally,
    ignore_name,
    ignore_top_function,
    no_leaks,
    use_builtin_ignores,
)
from leakcheck.kinds.stack_top import WAITING_FUNCTIONS, WAITING_MODULES, WRAPPER_MODULES

GRACE = 0.05
HERE = __name__  # "test_matching" or "tests.test_matching", depending on how pytest imports it



def follow_logs(release: threading.Event) -> None:
    release.wait()  # innermost Python frame: threading.Condition.wait


def accept_connections(gate: threading.Lock) -> None:
    gate.acquire()  # blocks in C, so this function is the innermost Python frame
    gate.release()


async def stream_events(release: asyncio.Event) -> None:
    await release.wait()


class Worker(threading.Thread):
    def __init__(self, release: threading.Event) -> None:
        super().__init__(name="worker", daemon=True)
        self.release = release

    def run(self) -> None:
        self.release.wait()


class Acceptor(threading.Thread):
    def __init__(self, gate: threading.Lock) -> None:
        super().__init__(name="acceptor", daemon=True)
        self.gate = gate

    def run(self) -> None:
        self.gate.acquire()
        self.gate.release()


class Pool:
    class Worker(threading.Thread):
        def __init__(self, release: threading.Event) -> None:
            super().__init__(name="pool-worker", daemon=True)
            self.release = release

        def run(self) -> None:
            self.release.wait()


def logged(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def wrapper(*args: Any) -> Any:
        return method(*args)

    return wrapper


class LoggedWorker(threading.Thread):
    def __init__(self, release: threading.Event) -> None:
        super().__init__(name="logged-worker", daemon=True)
        self.release = release

    @logged
    def run(self) -> None:
        self.release.wait()


def start_nested_follower(threads: Any) -> threading.Thread:
    def follow(release: threading.Event) -> None:
        release.wait()

    return threads.start(follow, name="nested-follower")


@contextlib.contextmanager
def gated_thread(make_thread: Callable[[threading.Lock], threading.Thread]) -> Iterator[threading.Thread]:
    """A thread (not started yet) that blocks on a locked Lock; on exit the Lock is released and the thread joined."""
    gate = threading.Lock()
    gate.acquire()
    thread = make_thread(gate)
    try:
        yield thread
    finally:
        gate.release()
        if thread.ident is not None:
            thread.join(JOIN_TIMEOUT)
    assert not thread.is_alive()


@contextlib.contextmanager
def released(release: threading.Event, *threads: threading.Thread) -> Iterator[None]:
    try:
        yield
    finally:
        release.set()
        for thread in threads:
            if thread.ident is not None:
                thread.join(JOIN_TIMEOUT)
        assert not [thread.name for thread in threads if thread.is_alive()]


# --- ignore_name ---------------------------------------------------------------------------------------------------


def test_ignore_name_searches_anywhere_in_the_name():
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=[ignore_name("log")]):
            threads.start(follow_logs, name="worker-log-7")
        assert threads.threads[0].is_alive()


def test_ignore_name_accepts_a_compiled_pattern():
    matcher = ignore_name(re.compile(r"^worker-\d+$"))
    with parked_threads() as threads, no_leaks(timeout=GRACE, ignore=[matcher]):
        threads.start(follow_logs, name="worker-12")


def test_ignore_name_leaves_other_threads_reported():
    check = no_leaks(timeout=GRACE, ignore=[ignore_name("^log-")])
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        threads.start(follow_logs, name="log-follower")
        threads.start(follow_logs, name="metrics-log-follower")
    assert [info.name for info in excinfo.value.report.threads] == ["metrics-log-follower"]
    assert "follow_logs" in str(excinfo.value)


def test_ignore_name_applies_to_tasks():
    async def scenario() -> None:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            async with no_leaks(timeout=GRACE, ignore=[ignore_name("^event-stream$")]):
                tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE, ignore=[ignore_name("^event-stream$")]):
                    tasks.append(asyncio.create_task(stream_events(release), name="event-stream-2"))
            assert [info.name for info in excinfo.value.report.tasks] == ["event-stream-2"]
        finally:
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())


# --- ignore_top_function ---------------------------------------------------------------------------------------------


def test_ignore_top_function_matches_the_innermost_frame():
    def make_thread(gate: threading.Lock) -> threading.Thread:
        return threading.Thread(target=accept_connections, args=(gate,), name="acceptor", daemon=True)

    matcher = ignore_top_function(f"{HERE}.accept_connections")
    with gated_thread(make_thread) as thread, no_leaks(timeout=GRACE, ignore=[matcher]):
        thread.start()


def calls_follow_logs(release: threading.Event) -> None:
    follow_logs(release)


def test_ignore_top_function_does_not_match_outer_frames():
    check = no_leaks(timeout=GRACE, ignore=[ignore_top_function(f"{HERE}.calls_follow_logs")])
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        threads.start(calls_follow_logs, name="log-follower")
    assert "log-follower" in str(excinfo.value)
    assert f"in {HERE}.follow_logs (" in str(excinfo.value)  # the summary line names the function that waits


def test_ignore_top_function_skips_the_waiting_primitives_on_top():
    """follow_logs waits in Event.wait and Condition.wait: its top function is follow_logs."""
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=[ignore_top_function(f"{HERE}.follow_logs")]):
            threads.start(follow_logs, name="log-follower")
        assert threads.threads[0].is_alive()


def test_ignore_top_function_skips_the_waiting_primitives_of_a_task():
    async def scenario() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()

        async def consume() -> None:
            await queue.get()  # innermost frame: asyncio.queues.Queue.get

        task = None
        try:
            async with no_leaks(timeout=GRACE, ignore=[ignore_top_function(f"{HERE}.{consume.__qualname__}")]):
                task = asyncio.create_task(consume(), name="consumer")
                await asyncio.sleep(0)
        finally:
            assert task is not None and not task.done()  # ignored, not finished
            queue.put_nowait(1)
            await task

    asyncio.run(scenario())


def _wrapper_module() -> Any:
    """A stand-in for blockbuster, which wraps the waiting primitives with Python functions."""
    namespace: dict[str, Any] = {"__name__": "blockbuster.blockbuster"}
    exec(
        "def wrapper(function, *args):\n    return function(*args)\n",
        namespace,
    )
    return namespace["wrapper"]


def waits_through_a_wrapper(release: threading.Event) -> None:
    _wrapper_module()(release.wait)


def test_a_wrapper_around_a_waiting_primitive_is_skipped_like_the_primitive():
    with parked_threads() as threads:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            threads.start(waits_through_a_wrapper, name="wrapped-waiter")
        text = str(excinfo.value)
        assert "blockbuster.blockbuster.wrapper" in text  # in the stack
        assert f"in {HERE}.waits_through_a_wrapper (" in text  # but not blamed in the summary line
        with no_leaks(timeout=GRACE, ignore=[ignore_top_function(f"{HERE}.waits_through_a_wrapper")]):
            threads.start(waits_through_a_wrapper, name="wrapped-waiter-2")


def test_ignore_top_function_matches_a_stdlib_method():
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=[ignore_top_function("threading.Condition.wait")]):
            threads.start(follow_logs, name="log-follower")
        assert threads.threads[0].is_alive()


def test_ignore_top_function_matches_a_method():
    matcher = ignore_top_function(f"{HERE}.Acceptor.run")
    with gated_thread(Acceptor) as acceptor, no_leaks(timeout=GRACE, ignore=[matcher]):
        acceptor.start()


def test_ignore_top_function_reports_a_thread_whose_top_frame_differs():
    matcher = ignore_top_function(f"{HERE}.Acceptor.run")
    release = threading.Event()
    worker = Worker(release)
    with released(release, worker), pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, ignore=[matcher]):
        worker.start()
    assert f"{HERE}.Worker.run" in str(excinfo.value)


# --- ignore_any_function -------------------------------------------------------------------------------------------


def test_ignore_any_function_matches_a_frame_anywhere_in_the_stack():
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=[ignore_any_function(f"{HERE}.follow_logs")]):
            threads.start(follow_logs, name="log-follower")
        assert threads.threads[0].is_alive()


def test_ignore_any_function_matches_a_method_by_class_qualname():
    release = threading.Event()
    worker = Worker(release)
    with released(release, worker), no_leaks(timeout=GRACE, ignore=[ignore_any_function(f"{HERE}.Worker.run")]):
        worker.start()


def test_ignore_any_function_needs_the_right_module():
    release = threading.Event()
    worker = Worker(release)
    matcher = ignore_any_function("some_other_module.Worker.run")
    with released(release, worker), pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, ignore=[matcher]):
        worker.start()
    assert f"{HERE}.Worker.run" in str(excinfo.value)


def test_ignore_any_function_matches_a_nested_function():
    qualname = f"{HERE}.start_nested_follower.<locals>.follow"
    with parked_threads() as threads:
        with no_leaks(timeout=GRACE, ignore=[ignore_any_function(qualname)]):
            start_nested_follower(threads)
        assert threads.threads[0].is_alive()


def test_ignore_any_function_does_not_match_a_namesake_nested_in_another_function():
    check = no_leaks(timeout=GRACE, ignore=[ignore_any_function(f"{HERE}.some_other_function.<locals>.follow")])
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        start_nested_follower(threads)
    assert "nested-follower" in str(excinfo.value)


@pytest.mark.parametrize(
    "worker_class, qualname",
    [(Pool.Worker, "Pool.Worker.run"), (LoggedWorker, "LoggedWorker.run")],
    ids=["nested-class", "decorated-method"],
)
def test_ignore_any_function_matches_the_full_qualname_of_a_method(worker_class, qualname):
    release = threading.Event()
    worker = worker_class(release)
    with released(release, worker), no_leaks(timeout=GRACE, ignore=[ignore_any_function(f"{HERE}.{qualname}")]):
        worker.start()


def test_ignore_any_function_applies_to_task_await_chains():
    async def scenario() -> None:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            async with no_leaks(timeout=GRACE, ignore=[ignore_any_function("asyncio.locks.Event.wait")]):
                tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
            async with no_leaks(timeout=GRACE, ignore=[ignore_any_function(f"{HERE}.stream_events")]):
                tasks.append(asyncio.create_task(stream_events(release), name="event-stream-2"))
        finally:
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        pass


@contextlib.contextmanager
def tcp_server() -> Iterator[Tuple[socketserver.TCPServer, threading.Thread]]:
    server = socketserver.TCPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), name="tcp-server", daemon=True)
    try:
        yield server, thread
    finally:
        if thread.ident is not None:
            server.shutdown()
            thread.join(JOIN_TIMEOUT)
        server.server_close()
    assert not thread.is_alive()


def test_ignore_any_function_matches_socketserver_serve_forever():
    matcher = ignore_any_function("socketserver.BaseServer.serve_forever")
    with tcp_server() as (_server, thread), no_leaks(timeout=GRACE, ignore=[matcher]):
        thread.start()


def test_ignore_top_function_matches_socketserver_serve_forever_as_the_readme_says():
    """Its innermost frame is the selector's select(); the top function is serve_forever."""
    matcher = ignore_top_function("socketserver.BaseServer.serve_forever")
    with tcp_server() as (_server, thread), no_leaks(timeout=GRACE, ignore=[matcher]):
        thread.start()


def test_socketserver_thread_is_reported_without_the_matcher():
    with tcp_server() as (_server, thread), pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        thread.start()
    assert "socketserver.BaseServer.serve_forever" in str(excinfo.value)
    assert "tcp-server" in str(excinfo.value)


# --- callables and ignore_globally ---------------------------------------------------------------------------------


def test_any_callable_is_a_matcher_and_sees_thread_and_task_infos():
    seen: List[Any] = []

    def ignore_everything(info: Any) -> bool:
        seen.append(info)
        return True

    async def scenario() -> None:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with parked_threads() as threads:
                async with no_leaks(timeout=GRACE, ignore=[ignore_everything]):
                    threads.start(follow_logs, name="log-follower")
                    tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
        finally:
            release.set()
            await asyncio.gather(*tasks)

    asyncio.run(scenario())
    threads_seen = [info for info in seen if isinstance(info, ThreadInfo)]
    tasks_seen = [info for info in seen if isinstance(info, TaskInfo)]
    assert "log-follower" in [info.name for info in threads_seen]
    assert "event-stream" in [info.name for info in tasks_seen]


def test_callable_returning_false_ignores_nothing():
    check = no_leaks(timeout=GRACE, ignore=[lambda info: False])
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, check:
        threads.start(follow_logs, name="log-follower")
    assert "follow_logs" in str(excinfo.value)


def test_ignore_globally_applies_to_every_check_until_unregistered():
    unregister = ignore_globally(ignore_name("^globally-ignored$"))
    try:
        with parked_threads() as threads:
            with no_leaks(timeout=GRACE):
                threads.start(follow_logs, name="globally-ignored")
            assert threads.threads[0].is_alive()
    finally:
        unregister()
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        threads.start(follow_logs, name="globally-ignored")
    assert "globally-ignored" in str(excinfo.value)


def test_ignore_globally_unregister_is_idempotent_and_keeps_other_registrations():
    first = ignore_globally(ignore_name("^first-ignored$"))
    second = ignore_globally(ignore_name("^second-ignored$"))
    try:
        first()
        first()
        with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            threads.start(follow_logs, name="first-ignored")
            threads.start(follow_logs, name="second-ignored")
        assert [info.name for info in excinfo.value.report.threads] == ["first-ignored"]
    finally:
        first()
        second()


# --- bad arguments -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "factory, argument, error",
    [
        (ignore_name, 42, TypeError),
        (ignore_name, None, TypeError),
        (ignore_name, b"worker", TypeError),
        (ignore_name, re.compile(b"worker"), TypeError),
        (ignore_name, "(unclosed", re.error),
        (ignore_top_function, 42, TypeError),
        (ignore_top_function, None, TypeError),
        (ignore_top_function, "", ValueError),
        (ignore_top_function, "serve_forever", ValueError),
        (ignore_top_function, " socketserver.BaseServer.serve_forever", ValueError),
        (ignore_any_function, 42, TypeError),
        (ignore_any_function, "", ValueError),
        (ignore_any_function, "follow_logs", ValueError),
        (ignore_any_function, "socketserver.BaseServer.serve_forever\n", ValueError),
        # names that can never match a module-qualified function
        (ignore_top_function, "socketserver.", ValueError),
        (ignore_any_function, ".serve_forever", ValueError),
        (ignore_top_function, "socketserver..serve_forever", ValueError),
        (ignore_created_by, "test_x.", ValueError),
        (ignore_created_by, 42, TypeError),
        (ignore_created_by, "start_helper", ValueError),
    ],
)
def test_matcher_factories_reject_bad_arguments(factory, argument, error):
    with pytest.raises(error):
        factory(argument)


@pytest.mark.parametrize("argument", ["worker", re.compile("worker"), 42, None])
def test_ignore_globally_rejects_non_matchers(argument):
    with pytest.raises(TypeError):
        ignore_globally(argument)


def test_builtin_matchers_are_matchers():
    for matcher in (ignore_name("x"), ignore_top_function("m.f"), ignore_any_function("m.f")):
        assert isinstance(matcher, Matcher)
        assert callable(matcher)


# --- built-in ignores: library infrastructure that lives as long as its loop ----------------------------------------


def _coroutine_function_in(module_name: str) -> Any:
    namespace: dict[str, Any] = {"__name__": module_name, "asyncio": asyncio}
    exec(
        "async def _shutdown_process_pool_on_exit(release):\n    await release.wait()\n",
        namespace,
    )
    return namespace["_shutdown_process_pool_on_exit"]


@pytest.mark.parametrize(
    ("module_name", "ignored"),
    [("anyio._backends._asyncio", True), ("myapp.pools", False)],
    ids=["anyio's", "a namesake elsewhere"],
)
def test_builtin_ignores_match_library_infrastructure_by_its_exact_qualname(module_name, ignored):
    shutdown_pool_on_exit = _coroutine_function_in(module_name)

    async def scenario() -> None:
        release = asyncio.Event()
        task = None
        try:
            if ignored:
                async with no_leaks(timeout=GRACE):
                    task = asyncio.create_task(shutdown_pool_on_exit(release))
                    await asyncio.sleep(0)
            else:
                with pytest.raises(LeakError) as excinfo:
                    async with no_leaks(timeout=GRACE):
                        task = asyncio.create_task(shutdown_pool_on_exit(release))
                        await asyncio.sleep(0)
                assert f"{module_name}._shutdown_process_pool_on_exit" in str(excinfo.value)
        finally:
            release.set()
            if task is not None:
                await task

    asyncio.run(scenario())


def test_builtin_ignores_can_be_turned_off():
    shutdown_pool_on_exit = _coroutine_function_in("anyio._backends._asyncio")

    async def scenario() -> None:
        release = asyncio.Event()
        task = None
        use_builtin_ignores(False)
        try:
            with pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    task = asyncio.create_task(shutdown_pool_on_exit(release))
                    await asyncio.sleep(0)
            assert "anyio._backends._asyncio._shutdown_process_pool_on_exit" in str(excinfo.value)
        finally:
            use_builtin_ignores(True)
            release.set()
            if task is not None:
                await task

    asyncio.run(scenario())
    assert [repr(matcher) for matcher in BUILTIN_IGNORES] == [
        "<task running anyio._backends._asyncio._shutdown_process_pool_on_exit>"
    ]
    with pytest.raises(TypeError, match="True or False"):
        use_builtin_ignores("no")  # type: ignore[arg-type]


def test_the_readme_lists_exactly_the_waiting_primitives_that_are_skipped():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme.split("**The top function.**", 1)[1].split("So a `serve_forever` thread", 1)[0]
    listed = set()
    for module, functions in re.findall(r"^- `([\w.]+)`: (.*);$", section, re.MULTILINE):
        listed.update(f"{module}.{function}" for function in re.findall(r"`([\w.]+)`", functions))
    assert listed == set(WAITING_FUNCTIONS)
    assert [f"{name}." for name in re.findall(r"every function of `(\w+)`", section)] == [
        *WAITING_MODULES,
        *WRAPPER_MODULES,
    ]
