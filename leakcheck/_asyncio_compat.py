"""Every private asyncio detail leakcheck relies on, in one place.

``asyncio.all_tasks()`` only sees the running loop of the calling thread, but a
leak check has to see tasks on every loop in the process.  CPython keeps
process-wide registries, under names that change between versions:

* 3.9 - 3.11: ``asyncio.tasks._all_tasks``, a WeakSet of every task;
* 3.12 - 3.13: ``asyncio.tasks._scheduled_tasks`` (WeakSet) plus
  ``asyncio.tasks._eager_tasks`` (a set of eager tasks still in their first step);
* anything else (3.14 keeps native tasks in per-thread lists): the fallback
  asks ``asyncio.all_tasks(loop)`` for every loop it can find, i.e. the
  calling thread's running loop and loops found running on other threads.

asyncio itself is never imported here: if the program has not imported it,
there cannot be any task, and importing leakcheck must stay cheap.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, AbstractSet, Any, FrozenSet, Iterable, List, Optional, Set, Tuple

if TYPE_CHECKING:
    import asyncio

_EMPTY: FrozenSet[Any] = frozenset()


_REGISTRY_NAMES = ("_all_tasks", "_scheduled_tasks", "_eager_tasks")
_cache: Tuple[Any, Optional[Tuple[Tuple[Any, ...], Tuple[Any, ...]]]] = (None, None)


def _registries() -> Optional[Tuple[Tuple[Any, ...], Tuple[Any, ...]]]:
    """The sets behind this version's task registries, looked up once.

    Returns ``(weak, strong)``: the ``data`` sets of the WeakSet registries
    (sets of weak references) and the plain sets of tasks (eager tasks);
    both empty before asyncio is imported.  ``None`` means this version has no
    registry leakcheck knows, and the fallback applies.  The registries are
    created once, when asyncio is imported, so they can be cached.
    """
    global _cache
    module = sys.modules.get("asyncio.tasks")
    if module is None:
        return ((), ())
    cached_module, registries = _cache
    if cached_module is not module:
        found = [getattr(module, name) for name in _REGISTRY_NAMES if hasattr(module, name)]
        weak = tuple(registry.data for registry in found if isinstance(registry, weakref.WeakSet))  # type: ignore[attr-defined]
        strong = tuple(registry for registry in found if isinstance(registry, set))
        registries = (weak, strong) if found else None
        _cache = (module, registries)
    return registries


def _strong_tokens(tasks: Any) -> Set[Any]:
    return {weakref.ref(task) for task in list(tasks)}  # list(): one C-level copy


def task_tokens() -> FrozenSet[Any]:
    """Cheap identity tokens for every live task: weak references.

    Weak references compare equal only while both referents are alive and the
    same, so a token of a dead task never matches a new task that happens to
    reuse its ``id``.  Copying a WeakSet's ``data`` is a single C-level
    operation, so it cannot fail when another thread adds a task meanwhile.
    """
    if "asyncio.tasks" not in sys.modules:  # asyncio was never imported: there is no task
        return _EMPTY
    registries = _registries()
    if registries is None:
        return frozenset(weakref.ref(task) for task in _fallback_all_tasks())
    weak, strong = registries
    tokens: FrozenSet[Any] = frozenset(weak[0]) if len(weak) == 1 else frozenset().union(*weak)
    if any(strong):
        tokens = tokens.union(*(_strong_tokens(tasks) for tasks in strong))
    return tokens


def new_task_tokens(before: AbstractSet[Any]) -> AbstractSet[Any]:
    """The tokens of tasks not in ``before``, without copying every registry first."""
    if "asyncio.tasks" not in sys.modules:
        return _EMPTY
    registries = _registries()
    if registries is None:
        return task_tokens() - before
    weak, strong = registries
    new: Set[Any] = set()
    for data in weak:
        if data and not data.issubset(before):  # skip the difference when nothing is new: the common case
            new.update(data - before)
    for tasks in strong:
        if tasks:
            new.update(_strong_tokens(tasks) - before)
    return new or _EMPTY


def all_tasks() -> List[asyncio.Task[Any]]:
    """Every live, not yet done task of every loop in the process."""
    live = (token() for token in task_tokens())
    return [task for task in live if task is not None and not task.done()]


def _fallback_all_tasks() -> List[asyncio.Task[Any]]:
    import asyncio

    tasks: List[asyncio.Task[Any]] = []
    for loop in _known_loops():
        try:
            tasks.extend(asyncio.all_tasks(loop))
        except RuntimeError:  # the loop's task set changed under us; skip it
            continue
    return tasks


def _known_loops() -> Iterable[asyncio.AbstractEventLoop]:
    import asyncio

    loops = {}
    running = running_loop()
    if running is not None:
        loops[id(running)] = running
    # A loop running in another thread shows up as ``self`` of its run_forever
    # frame.  Reading f_locals is harmless here: this fallback serves versions
    # without the registries (3.14+), where f_locals is a read-only proxy.
    for frame in list(sys._current_frames().values()):
        while frame is not None:
            if frame.f_code.co_name == "run_forever":
                candidate = frame.f_locals.get("self")
                if isinstance(candidate, asyncio.AbstractEventLoop):
                    loops[id(candidate)] = candidate
            frame = frame.f_back  # type: ignore[assignment]
    return list(loops.values())


def running_loop() -> Optional[asyncio.AbstractEventLoop]:
    """The loop running in the calling thread, if any, without importing asyncio."""
    events = sys.modules.get("asyncio.events")
    if events is None:
        return None
    loop: Optional[asyncio.AbstractEventLoop] = events._get_running_loop()
    return loop


def current_task() -> Optional[asyncio.Task[Any]]:
    loop = running_loop()
    if loop is None:
        return None
    import asyncio

    return asyncio.current_task(loop)


def loop_thread_ident(loop: asyncio.AbstractEventLoop) -> Optional[int]:
    """The thread running ``loop``; ``None`` when it is not running."""
    ident = getattr(loop, "_thread_id", None)
    return ident if isinstance(ident, int) else None


def awaited_by(task: asyncio.Task[Any]) -> str:
    """A short description of the future ``task`` is suspended on, or ``""``."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is None:
        return ""
    get_name = getattr(waiter, "get_name", None)
    if callable(get_name):
        return f"Task {get_name()!r}"
    return type(waiter).__name__


def task_state(task: asyncio.Task[Any]) -> str:
    if task.done():
        return "done"
    cancelling = getattr(task, "cancelling", None)  # 3.11+
    if callable(cancelling):
        return "cancelling" if cancelling() else "pending"
    # Before 3.11, cancelling a task suspended on a future cancels that future
    # instead of setting _must_cancel.
    waiter = getattr(task, "_fut_waiter", None)
    if getattr(task, "_must_cancel", False) or (waiter is not None and waiter.cancelled()):
        return "cancelling"
    return "pending"


def default_executor_threads(loop: asyncio.AbstractEventLoop) -> FrozenSet[Any]:
    """The worker threads of ``loop``'s default executor (``run_in_executor(None, ...)``)."""
    executor = getattr(loop, "_default_executor", None)
    workers = getattr(executor, "_threads", None)
    return frozenset(workers) if workers else _EMPTY
