"""Where a stack is stuck: its top function, and the frame a report blames.

The innermost frame of a blocked thread or task is nearly always a waiting
primitive of the standard library (``threading.Condition.wait``,
``selectors.EpollSelector.select``, ``asyncio.queues.Queue.get``), which says
nothing about the code that waits.  Like goleak's top function, which skips
the Go runtime's frames, the *top function* here is the innermost frame that
is neither a waiting primitive nor a wrapper that a test tool puts around
them (blockbuster's, which anyio's test suite installs).  The lists are the
README's, word for word: extend them there and here together.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence

from ..records import Frame

if TYPE_CHECKING:
    from .base import InfoRecord

WAITING_FUNCTIONS = frozenset(
    {
        # threading
        "threading.Condition.wait",
        "threading.Condition.wait_for",
        "threading.Event.wait",
        "threading.Semaphore.acquire",
        "threading.Barrier.wait",
        "threading.Barrier._wait",
        "threading.Barrier._enter",
        "threading.Thread.join",
        "threading.Thread._wait_for_tstate_lock",
        # queue, concurrent.futures, subprocess, multiprocessing
        "queue.Queue.get",
        "queue.Queue.put",
        "queue.Queue.join",
        "queue._PySimpleQueue.get",
        "concurrent.futures._base.Future.result",
        "concurrent.futures._base.Future.exception",
        "concurrent.futures._base.wait",
        "concurrent.futures._base.as_completed",
        "subprocess.Popen.wait",
        "subprocess.Popen._wait",
        "subprocess.Popen._try_wait",
        "subprocess.Popen.communicate",
        "subprocess.Popen._communicate",
        "multiprocessing.connection.wait",
        "multiprocessing.connection._ConnectionBase.recv",
        "multiprocessing.connection._ConnectionBase.recv_bytes",
        "multiprocessing.connection._ConnectionBase.poll",
        "multiprocessing.connection.Connection._recv_bytes",
        "multiprocessing.connection.Connection._recv",
        "multiprocessing.connection.Connection._poll",
        "multiprocessing.connection.Listener.accept",
        "multiprocessing.connection.SocketListener.accept",
        "multiprocessing.queues.Queue.get",
        "multiprocessing.queues.SimpleQueue.get",
        # sockets
        "socket.socket.accept",
        "socket.SocketIO.readinto",
        "socket.create_connection",
        "ssl.SSLSocket.accept",
        "ssl.SSLSocket.do_handshake",
        "ssl.SSLSocket.read",
        "ssl.SSLSocket.recv",
        "ssl.SSLSocket.recv_into",
        # asyncio: the loop's own wait, sleeps, futures, queues, locks, streams
        "asyncio.base_events.BaseEventLoop._run_once",
        "asyncio.base_events.BaseEventLoop.sock_accept",
        "asyncio.base_events.BaseEventLoop.getaddrinfo",
        "asyncio.selector_events.BaseSelectorEventLoop.sock_recv",
        "asyncio.selector_events.BaseSelectorEventLoop.sock_recv_into",
        "asyncio.selector_events.BaseSelectorEventLoop.sock_accept",
        "asyncio.selector_events.BaseSelectorEventLoop.sock_connect",
        "asyncio.selector_events.BaseSelectorEventLoop.sock_sendall",
        "asyncio.futures.Future.__await__",
        "asyncio.tasks.sleep",
        "asyncio.tasks.wait",
        "asyncio.tasks._wait",
        "asyncio.tasks.wait_for",
        "asyncio.threads.to_thread",
        "asyncio.queues.Queue.get",
        "asyncio.queues.Queue.put",
        "asyncio.queues.Queue.join",
        "asyncio.locks.Lock.acquire",
        "asyncio.locks.Event.wait",
        "asyncio.locks.Condition.wait",
        "asyncio.locks.Condition.wait_for",
        "asyncio.locks.Semaphore.acquire",
        "asyncio.locks.Barrier.wait",
        "asyncio.locks.Barrier._block",
        "asyncio.locks.Barrier._wait",
        "asyncio.streams.StreamReader._wait_for_data",
        "asyncio.streams.StreamReader.read",
        "asyncio.streams.StreamReader.readline",
        "asyncio.streams.StreamReader.readuntil",
        "asyncio.streams.StreamReader.readexactly",
        "asyncio.subprocess.Process.wait",
        "asyncio.subprocess.Process.communicate",
    }
)
"""Functions that only wait: skipped at the top of a stack."""

WAITING_MODULES = ("selectors.",)
"""Modules whose every function only waits."""

WRAPPER_MODULES = ("blockbuster.",)
"""Test tools that wrap the waiting primitives with Python functions of their own."""


def is_waiting_frame(frame: Frame) -> bool:
    """Whether ``frame`` runs a waiting primitive, or a test tool's wrapper around one."""
    function = frame.function
    return function in WAITING_FUNCTIONS or function.startswith(WAITING_MODULES) or is_wrapper_frame(frame)


def is_wrapper_frame(frame: Frame) -> bool:
    return frame.function.startswith(WRAPPER_MODULES)


def top_frame(frames: Sequence[Frame]) -> Optional[Frame]:
    """The innermost frame that is not a waiting primitive; the innermost frame when all are."""
    for frame in reversed(frames):
        if not is_waiting_frame(frame):
            return frame
    return frames[-1] if frames else None


_POOL_WORKER_LOOP = "concurrent.futures.thread._worker"


def waits_for_work(info: InfoRecord) -> bool:
    """Whether the described thread is a ``ThreadPoolExecutor`` worker waiting for a job.

    Its top frame is then the worker loop itself; a worker running a job
    shows the job's frames below it.
    """
    top = top_frame(info.frames)
    return top is not None and top.function == _POOL_WORKER_LOOP
