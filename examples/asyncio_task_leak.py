"""An asyncio task leak: a background task created and forgotten, caught by leakcheck, then fixed.

The scenario: ``subscribe()`` connects a handler to an event source by
starting a background task, ``pump_events``, that waits for each event and
hands it to the handler.  It starts the task with ``asyncio.create_task`` and
forgets it.  ``unsubscribe()`` detaches the source, but nothing stops the pump:
it stays suspended in ``await source.next_event()`` forever, one more task for
every subscriber that ever came and went.

This script shows:

1. the leak caught by ``async with no_leaks()``; the report names the task
   (``event-pump``), its coroutine (``pump_events``) and its whole await chain,
   down to the ``Queue.get`` it is suspended in, which ``Task.get_stack()``
   alone would not show;
2. the fix, ``subscription()``: it keeps the task, and on close cancels it and
   waits for it to finish, so the same check passes.

Run it with ``python examples/asyncio_task_leak.py``: it exits 0 when the leak
was caught and the fix passed.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from typing import AsyncIterator, Callable, List, Optional

from leakcheck import LeakError, no_leaks

PUMP_TASK_NAME = "event-pump"

# A leak costs the whole grace period, so the leaky check uses a short one.  A
# clean check returns the moment the tasks have finished, so the fixed check
# can afford a generous one.
LEAK_GRACE = 0.2
FIXED_GRACE = 2.0

Handler = Callable[[str], None]


class EventSource:
    """Events for one subscriber, in order."""

    def __init__(self) -> None:
        self._queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, event: str) -> None:
        self._queue.put_nowait(event)

    async def next_event(self) -> str:
        return await self._queue.get()


class EventBus:
    """Fans published events out to every attached source."""

    def __init__(self) -> None:
        self._sources: List[EventSource] = []

    def attach(self) -> EventSource:
        source = EventSource()
        self._sources.append(source)
        return source

    def detach(self, source: EventSource) -> None:
        if source in self._sources:
            self._sources.remove(source)

    def publish(self, event: str) -> None:
        for source in list(self._sources):
            source.put(event)


async def pump_events(source: EventSource, handler: Handler) -> None:
    """Hand every event of ``source`` to ``handler``, forever."""
    while True:
        event = await source.next_event()
        handler(event)


# --- leaky -------------------------------------------------------------------


async def subscribe(bus: EventBus, handler: Handler) -> EventSource:
    source = bus.attach()
    # BUG: the task is created and forgotten; nothing will ever stop it.
    asyncio.create_task(pump_events(source, handler), name=PUMP_TASK_NAME)  # noqa: RUF006
    return source


def unsubscribe(bus: EventBus, source: EventSource) -> None:
    bus.detach(source)  # the pump task still waits on source.next_event()


# --- fixed -------------------------------------------------------------------


@contextlib.asynccontextmanager
async def subscription(bus: EventBus, handler: Handler) -> AsyncIterator[EventSource]:
    source = bus.attach()
    # FIX: keep the task, and stop it when the subscription ends.
    pump = asyncio.create_task(pump_events(source, handler), name=PUMP_TASK_NAME)
    try:
        yield source
    finally:
        bus.detach(source)
        pump.cancel()
        # Wait until the pump has really finished.  gather(return_exceptions=True)
        # absorbs the pump's own CancelledError, but not a cancellation of this
        # coroutine itself.
        await asyncio.gather(pump, return_exceptions=True)


# --- the demo ----------------------------------------------------------------


async def _one_delivery(bus: EventBus, delivered: asyncio.Queue[str]) -> str:
    bus.publish("user.created")
    return await asyncio.wait_for(delivered.get(), timeout=10)


async def _cancel_forgotten_pumps() -> None:
    """Clean up after the leaky demo: the leaked pumps can only be found by name."""
    pumps = [task for task in asyncio.all_tasks() if task.get_name() == PUMP_TASK_NAME]
    for task in pumps:
        task.cancel()
    await asyncio.gather(*pumps, return_exceptions=True)


async def check_leaky(timeout: float = LEAK_GRACE) -> Optional[LeakError]:
    """Subscribe, receive one event, unsubscribe, inside ``no_leaks``; the error raised, if any."""
    bus = EventBus()
    delivered: asyncio.Queue[str] = asyncio.Queue()
    try:
        async with no_leaks(timeout=timeout):
            source = await subscribe(bus, delivered.put_nowait)
            await _one_delivery(bus, delivered)
            unsubscribe(bus, source)
    except LeakError as error:
        return error
    finally:
        await _cancel_forgotten_pumps()
    return None


async def check_fixed(timeout: float = FIXED_GRACE) -> Optional[LeakError]:
    """The same with the fixed ``subscription()``; the error raised, if any."""
    bus = EventBus()
    delivered: asyncio.Queue[str] = asyncio.Queue()
    try:
        async with no_leaks(timeout=timeout), subscription(bus, delivered.put_nowait):
            await _one_delivery(bus, delivered)
    except LeakError as error:
        return error
    return None


def heading(text: str) -> None:
    print(f"\n=== {text} ===\n")


def run_demo() -> bool:
    """Print the demo; True when the leak was caught and the fix passed."""
    ok = True

    heading("1. Leaky subscribe(): the pump task is created and forgotten")
    print("Subscribe, receive one event, unsubscribe; the pump task is still waiting for events.\n")
    error = asyncio.run(check_leaky())
    if error is not None and "pump_events" in str(error):
        print("Caught by async with no_leaks() (LeakError):\n")
        print(error)
    else:
        ok = False
        print(f"UNEXPECTED: no_leaks did not report the forgotten pump_events task ({error!r})")

    heading("2. Fixed subscription(): the pump task is cancelled and awaited on close")
    error = asyncio.run(check_fixed())
    if error is None:
        print("fixed subscription passed no_leaks")
    else:
        ok = False
        print(f"UNEXPECTED: the fixed subscription failed no_leaks:\n\n{error}")

    print()
    if ok:
        print("Result: the forgotten task was caught, and the fixed subscription passed.")
    else:
        print("Result: the demo did NOT behave as expected (see UNEXPECTED above).")
    return ok


def main() -> int:
    return 0 if run_demo() else 1


if __name__ == "__main__":
    sys.exit(main())
