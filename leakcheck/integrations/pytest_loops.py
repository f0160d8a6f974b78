"""Async test runners: keep the tasks a test leaves on their loops visible.

pytest-asyncio and anyio run async tests on event loops that stand still
between tests, and when they close such a loop they cancel the tasks left on
it, silently.  For those tasks to be reported instead:

* every loop a runner provides is marked as drivable (see
  :func:`leakcheck.kinds.tasks.allow_driving`), so a check can run it while it is
  idle and pending tasks get their grace period, as under ``async with``;
* pytest-asyncio provides loops through fixtures (an event loop, or an
  ``asyncio.Runner``): a finalizer added right after such a fixture is set up
  runs after the fixtures that depend on it are torn down and just before
  its own teardown closes the loop, which is when its tasks are checked;
* anyio's runner lives only as long as someone holds a lease on it: the
  plugin holds one from the test call until its check is done.
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from typing import Any, ContextManager, Iterator, Optional

from ..kinds.base import InfoRecord
from ..kinds.tasks import TaskInfo, allow_driving

_ANYIO_RUNNER_PREFIX = "anyio._backends._asyncio.TestRunner."


def loop_of(value: object) -> Optional[Any]:
    """The event loop a fixture value provides: a loop, or an entered runner's loop."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return None
    if isinstance(value, asyncio.AbstractEventLoop):
        return value
    if type(value).__name__ != "Runner":  # asyncio.Runner or its backport; not any value with a get_loop
        return None
    get_loop = getattr(value, "get_loop", None)
    if not callable(get_loop):
        return None
    try:
        loop = get_loop()
    except RuntimeError:  # a closed runner
        return None
    return loop if isinstance(loop, asyncio.AbstractEventLoop) else None


def track_runner_loop(value: object) -> Optional[Any]:
    """If ``value`` provides a loop, mark the loop drivable and return it."""
    loop = loop_of(value)
    if loop is not None:
        allow_driving(loop)
    return loop


def is_anyio_runner_task(info: InfoRecord) -> bool:
    """anyio's own task that runs each test and fixture on the runner: not a leak."""
    return isinstance(info, TaskInfo) and bool(info.frames) and info.frames[0].function.startswith(_ANYIO_RUNNER_PREFIX)


def anyio_runner_lease(item: Any) -> Optional[ContextManager[Any]]:
    """A lease that keeps anyio's asyncio test runner for ``item`` open, yielding its loop.

    ``None`` when ``item`` is not an anyio test on the asyncio backend; the lease
    yields ``None`` when the runner anyio hands out has no asyncio loop.
    """
    plugin = sys.modules.get("anyio.pytest_plugin")
    funcargs = getattr(item, "funcargs", None)
    if plugin is None or not isinstance(funcargs, dict) or funcargs.get("anyio_backend") is None:
        return None
    get_runner = getattr(plugin, "get_runner", None)
    split = getattr(plugin, "extract_backend_and_options", None)
    function = getattr(item, "obj", None)
    if (
        not callable(get_runner)
        or not callable(split)
        or not inspect.iscoroutinefunction(function)
        or hasattr(function, "hypothesis")  # anyio runs each example on a runner of its own
    ):
        return None
    name, options = split(funcargs["anyio_backend"])
    return _lease(get_runner, options) if name == "asyncio" else None


def last_lease() -> bool:
    """Whether releasing our lease closes anyio's runner (and so cancels its tasks)."""
    leases = getattr(sys.modules.get("anyio.pytest_plugin"), "_runner_leases", 1)
    return not isinstance(leases, int) or leases <= 1


@contextlib.contextmanager
def _lease(get_runner: Any, options: Any) -> Iterator[Any]:
    # get_runner() hands out the runner that is already open, whatever its backend: a trio
    # runner that a wider-scoped fixture holds has no loop to lease, and must not break the test.
    with get_runner("asyncio", options) as runner:
        get_loop = getattr(runner, "get_loop", None)
        loop = get_loop() if callable(get_loop) else None
        if loop is not None:
            allow_driving(loop)
        yield loop
