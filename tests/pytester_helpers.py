"""Threads that inner pytest sessions leak on purpose, and their release.

The plugin tests run inner sessions in this process (``pytester.runpytest``).
Their test modules ``import pytester_helpers``, which finds this very module
(the outer test module imported it first), and start their threads with
:func:`park` or block on a :func:`gate`.  The outer tests call
:func:`release_all` after every test, so nothing an inner session leaks
outlives the outer test.  Subprocess sessions find this module through
``PYTHONPATH`` (see :data:`TESTS_DIR`).
"""

from __future__ import annotations

import os
import threading
from typing import Any, Callable, List

JOIN_TIMEOUT = 5.0
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

_gates: List[threading.Lock] = []
_threads: List[threading.Thread] = []
_lock = threading.Lock()


def gate() -> threading.Lock:
    """A held lock: ``gate.acquire()`` blocks until :func:`release_all`.

    Blocking in ``Lock.acquire`` (a C call) keeps the blocked function the top
    frame of its thread's stack, which ``top:`` matchers need.
    """
    held = threading.Lock()
    held.acquire()
    with _lock:
        _gates.append(held)
    return held


def start(target: Callable[..., Any], name: str, *args: Any) -> threading.Thread:
    """Start ``target(*args)`` in a daemon thread that :func:`release_all` joins."""
    thread = threading.Thread(target=target, args=args, name=name, daemon=True)
    with _lock:
        _threads.append(thread)
    thread.start()
    return thread


def _enter(running: threading.Event, target: Callable[[threading.Lock], Any], held: threading.Lock) -> None:
    running.set()
    target(held)


def park(target: Callable[[threading.Lock], Any], name: str) -> threading.Thread:
    """Start ``target(gate)``, which must block on ``gate.acquire()``; returns once it runs."""
    running = threading.Event()
    thread = start(_enter, name, running, target, gate())
    assert running.wait(JOIN_TIMEOUT), f"thread {name!r} did not start"
    return thread


def release_all() -> None:
    """Open every gate, join every thread started here, and forget them."""
    with _lock:
        gates, _gates[:] = list(_gates), []
        threads, _threads[:] = list(_threads), []
    for held in gates:
        held.release()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    alive = [thread.name for thread in threads if thread.is_alive()]
    assert not alive, f"threads still alive after release: {alive}"
