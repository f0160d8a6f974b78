"""Waiting: the grace period, shared by blocking and ``async`` callers.

Checks are written once, as generators that yield :class:`Wait` requests
("wait for these objects until this deadline") and return their result.  A
blocking caller runs them with :func:`run_blocking`; a coroutine runs them with
:func:`run_async`, which keeps its event loop turning meanwhile so the tasks
being waited for can actually finish.  Neither ever sleeps for a fixed time:
threads are joined, tasks are awaited or signal completion through a done
callback, and nothing waits at all when there is nothing to wait for.
"""

from __future__ import annotations

import time
from typing import Any, Generator, List, NamedTuple, Sequence, Tuple, TypeVar

from ..kinds import asyncio_compat as compat
from ..kinds.base import Kind, remaining
from ..kinds.threads import start_helper

T = TypeVar("T")


class Wait(NamedTuple):
    """Wait until every object has finished, or until ``deadline``.

    A ``poll`` request is one slice of a polling loop: if some objects cannot
    finish while the caller waits (a task on a stopped loop, say), it still
    pauses until ``deadline`` instead of returning at once, so the loop
    around it never spins.  Polling is only used when a stack may change
    without its thread ending, never in a clean check.
    """

    objects: Tuple[Tuple[Kind, Sequence[Any]], ...]
    deadline: float
    poll: bool = False


Steps = Generator[Wait, None, T]


def _wait_blocking(request: Wait) -> None:
    for kind, objs in request.objects:
        kind.wait(objs, request.deadline)
    if request.poll and any(kind.is_alive(obj) for kind, objs in request.objects for obj in objs):
        time.sleep(remaining(request.deadline))


def run_blocking(steps: Steps[T]) -> T:
    """Drive a check to its end, blocking the calling thread while it waits."""
    try:
        request = next(steps)
        while True:
            _wait_blocking(request)
            del request  # the check may collect garbage next: hold no suspect meanwhile
            request = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()  # on an error, let go of the suspects at once


async def _wait_async(request: Wait) -> None:
    import asyncio

    loop = asyncio.get_running_loop()
    local: List[Any] = []
    elsewhere = False
    for kind, objs in request.objects:
        for obj in objs:
            if kind.runs_on(obj, loop):
                local.append(obj)
            else:
                elsewhere = True
    timeout = remaining(request.deadline)
    if not elsewhere:
        if local:
            await asyncio.wait(local, timeout=timeout)
        elif request.poll:
            await asyncio.sleep(timeout)
        return
    # Joining threads would block this loop, and the loop must keep running so
    # that its own tasks can finish: one helper thread does the blocking part.
    finished = loop.create_future()

    def resolve() -> None:
        if not finished.done():
            finished.set_result(None)

    def wait_then_resolve() -> None:
        try:
            _wait_blocking(request)
        finally:
            try:
                loop.call_soon_threadsafe(resolve)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                pass

    start_helper(wait_then_resolve, "leakcheck-waiter")
    await finished


async def run_async(steps: Steps[T]) -> T:
    """Drive a check to its end without blocking the running event loop."""
    if compat.running_loop() is None:  # e.g. trio: no asyncio loop to keep turning
        return run_blocking(steps)
    try:
        request = next(steps)
        while True:
            await _wait_async(request)
            del request  # the check may collect garbage next: hold no suspect meanwhile
            request = steps.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    finally:
        steps.close()


def backoff_deadlines(deadline: float, first: float = 0.001, cap: float = 0.032) -> Generator[float, None, None]:
    """Slice deadlines for polling, doubling from ``first`` up to ``cap``."""
    step = first
    while True:
        yield min(deadline, time.monotonic() + step)
        step = min(step * 2, cap)
