"""Small helpers shared by the core API tests: parked threads and a loop in a thread.

Everything started here is released and joined (or cancelled and awaited) when
its context manager exits, whatever happened inside, so no test spills threads
or tasks into the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import subprocess
import sys
import threading
from typing import Any, Callable, Iterator, List, Optional, Set

JOIN_TIMEOUT = 5.0

# The event loop holds only weak references to its tasks, and a task parked on a
# future is a collectable reference cycle: keep the tasks made here alive until done.
_running_tasks: Set[asyncio.Task[Any]] = set()


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script: str) -> subprocess.CompletedProcess[str]:
    """Run ``script`` in a child Python that imports this leakcheck and has no ``LEAKCHECK_*`` setting."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEAKCHECK")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-c", script]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def park(release: threading.Event) -> None:
    release.wait()


class ParkedThreads:
    """Starts threads that stay alive until :meth:`release`.

    Each target is called as ``target(release_event, *args)`` and is expected
    to return once the event is set.
    """

    def __init__(self) -> None:
        self.release_event = threading.Event()
        self.threads: List[threading.Thread] = []

    def start(
        self,
        target: Callable[..., Any] = park,
        *args: Any,
        name: Optional[str] = None,
        daemon: bool = True,
    ) -> threading.Thread:
        thread = threading.Thread(target=target, args=(self.release_event, *args), name=name, daemon=daemon)
        self.threads.append(thread)
        thread.start()
        return thread

    def release(self) -> None:
        self.release_event.set()
        for thread in self.threads:
            thread.join(JOIN_TIMEOUT)
        alive = [thread.name for thread in self.threads if thread.is_alive()]
        assert not alive, f"threads still alive after release: {alive}"


class Gathered:
    """Threads that each block in the same place, and are all known to be there.

    Two conditions on one lock: a worker's wait gives the lock back only once it blocks, so the lock
    taken after the last arrival finds every worker waiting, and arrivals never wake the waiting ones.
    """

    def __init__(self, parked: ParkedThreads, count: int, prefix: str) -> None:
        lock = threading.Lock()
        self.arrival, self.leave = threading.Condition(lock), threading.Condition(lock)
        self.arrived = 0
        self.released = False
        for number in range(count):
            parked.start(self.work, name=f"{prefix}-{number}")
        with lock:
            assert self.arrival.wait_for(lambda: self.arrived == count, timeout=JOIN_TIMEOUT)

    def work(self, _release: threading.Event) -> None:
        with self.leave:
            self.arrived += 1
            self.arrival.notify()
            self.leave.wait_for(lambda: self.released)

    def release(self) -> None:
        with self.leave:
            self.released = True
            self.leave.notify_all()


@contextlib.contextmanager
def parked_threads() -> Iterator[ParkedThreads]:
    threads = ParkedThreads()
    try:
        yield threads
    finally:
        threads.release()


async def _cancel_all_tasks() -> None:
    current = asyncio.current_task()
    tasks = [task for task in asyncio.all_tasks() if task is not current]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def loop_in_thread(name: str = "test-loop", task_factory: Any = None) -> Iterator[asyncio.AbstractEventLoop]:
    """An event loop running forever in a daemon thread.

    On exit every task still on it is cancelled and awaited, then the loop is
    stopped, its thread joined and the loop closed.
    """
    loop = asyncio.new_event_loop()
    if task_factory is not None:
        loop.set_task_factory(task_factory)
    running = threading.Event()
    loop.call_soon(running.set)
    thread = threading.Thread(target=loop.run_forever, name=name, daemon=True)
    thread.start()
    try:
        assert running.wait(JOIN_TIMEOUT)
        yield loop
    finally:
        try:
            asyncio.run_coroutine_threadsafe(_cancel_all_tasks(), loop).result(JOIN_TIMEOUT)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(JOIN_TIMEOUT)
            if not thread.is_alive():
                loop.close()
        assert not thread.is_alive(), "the test loop's thread did not stop"


def create_task_on(loop: asyncio.AbstractEventLoop, coro: Any, name: str) -> asyncio.Task[Any]:
    """Create a task named ``name`` on ``loop``, which runs in another thread.

    Returns once the task has taken its first step, so it sits at its first
    real suspension point.
    """
    created: List[asyncio.Task[Any]] = []
    done = threading.Event()
    stepped = threading.Event()

    def create() -> None:
        try:
            task = loop.create_task(coro, name=name)
            _running_tasks.add(task)
            task.add_done_callback(_running_tasks.discard)
            created.append(task)
        finally:
            done.set()

    loop.call_soon_threadsafe(create)
    assert done.wait(JOIN_TIMEOUT) and created, "the task was not created"
    # Callbacks run in order: this one runs after the task's first step.
    loop.call_soon_threadsafe(stepped.set)
    assert stepped.wait(JOIN_TIMEOUT)
    return created[0]


class NumberedThread(threading.Thread):
    """A Thread subclass whose name is not a str."""

    @property  # type: ignore[override]
    def name(self) -> Any:
        return 42

    @name.setter
    def name(self, value: Any) -> None:
        pass


@contextlib.contextmanager
def answering(body: bytes):
    """The URL of an HTTP endpoint on loopback that answers every GET with ``body``; stopped and joined on exit."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as endpoint:
        thread = threading.Thread(target=endpoint.serve_forever, name="fake-endpoint", daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{endpoint.server_address[1]}/"
        finally:
            endpoint.shutdown()
            thread.join(10)
