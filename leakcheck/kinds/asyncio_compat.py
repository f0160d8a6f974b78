"""Every private asyncio detail leakcheck relies on, in one place.

``asyncio.all_tasks()`` only sees the running loop of the calling thread, but a
leak check has to see tasks on every loop in the process: running in any
thread, stopped but not closed, or never run at all.  How CPython keeps its
tasks changes between versions, so the census has one branch per version:

* 3.10 - 3.11: ``asyncio.tasks._all_tasks``, a WeakSet of every task.
* 3.12 - 3.13: ``asyncio.tasks._scheduled_tasks`` (a WeakSet) plus
  ``asyncio.tasks._eager_tasks`` (a set of eager tasks still in their first step).
* 3.14 and later: native tasks live in per-thread linked lists inside the
  interpreter (``_scheduled_tasks`` still exists, but only tasks that are not
  native, such as ``_PyTask``, are in it).  The one way to read those lists is
  ``asyncio.all_tasks(loop)``, one loop at a time, so the census has to know
  every loop: see :class:`_LoopRegistry`.

A version whose internals are not the ones expected makes every task census
raise ``RuntimeError`` naming the version: a check must never pass because it
could not see the tasks.

asyncio itself is never imported here: if the program has not imported it,
there cannot be any task, and importing leakcheck must stay cheap.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
import warnings
import weakref
from itertools import chain
from typing import TYPE_CHECKING, AbstractSet, Any, Callable, Dict, FrozenSet, Iterable, List, Optional, Set, Tuple

if TYPE_CHECKING:
    import asyncio

_VERSION = sys.version_info[:2]
_EMPTY: FrozenSet[Any] = frozenset()
_ref = weakref.ref


class _RegistryCensus:
    """3.10 - 3.13: the process-wide registries hold every task.

    ``weak`` are the ``data`` sets of WeakSet registries (sets of weak
    references, so copying one is a single C-level operation that cannot fail
    when another thread adds a task meanwhile); ``strong`` are plain sets of
    tasks.
    """

    def __init__(self, weak: Tuple[Set[Any], ...], strong: Tuple[Set[Any], ...]) -> None:
        self._weak = weak
        self._strong = strong

    def tokens(self) -> FrozenSet[Any]:
        weak = self._weak
        tokens: FrozenSet[Any] = frozenset(weak[0]) if len(weak) == 1 else frozenset().union(*weak)
        if any(self._strong):
            tokens = tokens.union(*(_refs(tasks) for tasks in self._strong))
        return tokens

    def loops(self) -> List[Any]:
        found = {}
        for token in self.tokens():
            task = token()
            if task is not None:
                loop = _loop_of(task)
                if loop is not None:
                    found[id(loop)] = loop
        return list(found.values())

    def new_tokens(self, before: AbstractSet[Any]) -> AbstractSet[Any]:
        new: Set[Any] = set()
        for data in self._weak:
            if data and not data.issubset(before):  # skip the difference when nothing is new: the common case
                new.update(data - before)
        for tasks in self._strong:
            if tasks:
                new.update(_refs(tasks) - before)
        return new or _EMPTY


class _LoopRegistry:
    """3.14+: every event loop alive in the process, so that each can be asked for its tasks.

    It is filled once, when the first census runs with asyncio imported:

    * a ``sys.monitoring`` event (``PY_START``, local to the code of
      ``BaseEventLoop.__init__``, so nothing else is slowed) adds each loop as
      it is created from then on;
    * one scan of the garbage collector's objects adds the loops that already
      exist.  The event is set up first, so a loop created during the scan is
      not missed.

    Loops are held weakly, and a closed loop is dropped once it has no task
    left (a closed loop never gets a new one).  When no ``sys.monitoring``
    tool id is free, every census scans the garbage collector instead: still
    exact, but it costs time in proportion to the heap, so a warning says so
    once.
    """

    _TOOL_IDS = (4, 3)  # the ids sys.monitoring leaves unassigned; 0-2 and 5 belong to debuggers, coverage, profilers

    def __init__(self) -> None:
        # id -> weak reference: a plain dict, because loops are added from any thread (where
        # they are created) while a census lists them, and copying a dict's values is one
        # C-level step; a WeakValueDictionary's iteration is not safe against that.
        self._loops: Dict[int, Any] = {}
        self._lock = threading.Lock()
        self._installed = False
        self._tool_id: Optional[int] = None

    def loops(self) -> List[Any]:
        if not self._installed:
            self._install()
        if self._tool_id is None:
            self._scan_heap()
        live = (ref() for ref in list(self._loops.values()))
        return [loop for loop in live if loop is not None]

    @property
    def installed(self) -> bool:
        return self._installed

    def forget(self, loop: Any) -> None:
        self._loops.pop(id(loop), None)

    def uninstall(self) -> None:
        """Give back the tool id and forget every loop: as if no census had been taken (see :func:`stand_down`)."""
        with self._lock:
            tool_id, self._tool_id = self._tool_id, None
            self._installed = False
            self._loops.clear()
        if tool_id is not None:
            monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
            monitoring.set_local_events(tool_id, _base_loop_init().__code__, 0)
            monitoring.register_callback(tool_id, monitoring.events.PY_START, None)
            monitoring.free_tool_id(tool_id)

    def _add(self, loop: Any) -> None:
        key = id(loop)
        if key in self._loops and self._loops[key]() is loop:
            return
        loops = self._loops

        def dropped(ref: Any) -> None:
            if loops.get(key) is ref:  # not a newer loop that reuses the id
                loops.pop(key, None)

        try:
            loops[key] = weakref.ref(loop, dropped)
        except TypeError:  # a loop type without weak references: not a BaseEventLoop, so best effort
            pass

    def _install(self) -> None:
        with self._lock:
            if self._installed:
                return
            self._tool_id = self._watch_loop_creation()
            self._scan_heap()
            self._installed = True
        if self._tool_id is None:
            warnings.warn(
                "leakcheck: no sys.monitoring tool id is free (3 and 4 are taken), so every task census "
                "finds event loops by scanning the garbage collector's objects, which is slow",
                RuntimeWarning,
                stacklevel=2,
            )

    def _watch_loop_creation(self) -> Optional[int]:
        monitoring = sys.monitoring  # type: ignore[attr-defined,unused-ignore]
        init = _base_loop_init()
        for tool_id in self._TOOL_IDS:
            if monitoring.get_tool(tool_id) is None:
                monitoring.use_tool_id(tool_id, "leakcheck")
                break
        else:
            return None
        add = self._add
        getframe = sys._getframe

        def loop_created(code: types.CodeType, offset: int) -> None:
            frame = getframe(1)  # BaseEventLoop.__init__, whose ``self`` is the new loop
            loop = frame.f_locals.get("self")
            del frame
            if loop is not None:
                add(loop)

        monitoring.register_callback(tool_id, monitoring.events.PY_START, loop_created)
        monitoring.set_local_events(tool_id, init.__code__, monitoring.events.PY_START)
        return tool_id

    def _scan_heap(self) -> None:
        import asyncio

        loop_types = _subclasses(asyncio.AbstractEventLoop)
        if all(loop_type.__flags__ & _HEAP_TYPE for loop_type in loop_types):
            # An instance of a class made by a class statement refers to its class, so the collector finds
            # the instances from the classes, in C: a tenth of the time of a loop over every object.
            found = gc.get_referrers(*loop_types)
        else:  # a loop class written in C: its instances may not say which class they are
            found = gc.get_objects()
        for obj in found:
            if type(obj) in loop_types:  # type(), not isinstance(): a mock's __class__ must not count
                self._add(obj)


_HEAP_TYPE = 1 << 9
"""``Py_TPFLAGS_HEAPTYPE`` in ``type.__flags__`` (3.10-3.15): a class made at run time, whose instances the
collector's traversal leads back to it."""


def _subclasses(cls: type) -> Set[type]:
    """``cls`` and every class derived from it, as far as they exist now."""
    found = {cls}
    todo = [cls]
    while todo:
        subclasses: List[type] = type.__subclasses__(todo.pop())
        for sub in subclasses:
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return found


def _base_loop_init() -> types.FunctionType:
    import asyncio.base_events

    init = asyncio.base_events.BaseEventLoop.__dict__.get("__init__")
    if not isinstance(init, types.FunctionType):
        raise _unrecognised("asyncio.base_events.BaseEventLoop.__init__ is not a plain function")
    return init


class _LoopCensus:
    """3.14+: ``asyncio.all_tasks(loop)`` for every loop, plus the registries of tasks that are not native."""

    def __init__(
        self,
        all_tasks: Callable[[Any], AbstractSet[Any]],
        registry: _LoopRegistry,
        weak: Set[Any],
        strong: Set[Any],
    ) -> None:
        self._all_tasks = all_tasks
        self._registry = registry
        self._weak = weak  # _scheduled_tasks.data: tasks that are not native (_PyTask, foreign Task types)
        self._strong = strong  # _eager_tasks: such tasks during their eager first step
        # The last census, kept so that its weak references stay alive: weakref.ref(task)
        # then returns the existing reference instead of making one, which bench_core's
        # figure 6 shows saves about an eighth of a clean check.  Only weak references.
        self._last: FrozenSet[Any] = _EMPTY

    def loops(self) -> List[Any]:
        return self._registry.loops()

    def _task_sets(self) -> List[AbstractSet[Any]]:
        """The pending tasks of each known loop."""
        loops = self._registry.loops()
        running = running_loop()
        if running is not None and running not in loops:  # a loop type the creation event cannot see (uvloop)
            loops.append(running)
        sets = list(map(self._all_tasks, loops))
        if not all(sets):
            for loop, tasks in zip(loops, sets, strict=True):
                if not tasks and _is_closed(loop):  # a closed loop never gets a task again
                    self._registry.forget(loop)
        return sets

    def tokens(self) -> FrozenSet[Any]:
        tokens = frozenset(map(_ref, chain.from_iterable(self._task_sets())))
        if self._weak:
            tokens = tokens.union(self._weak)
        if self._strong:
            tokens = tokens.union(_refs(self._strong))
        self._last = tokens
        return tokens

    def new_tokens(self, before: AbstractSet[Any]) -> AbstractSet[Any]:
        if not isinstance(before, (set, frozenset)):
            before = frozenset(before)
        new: Set[Any] = set()
        for tasks in self._task_sets():
            # issuperset() of an iterator stops at the first new task and builds no set:
            # the common case, nothing new, costs one weak reference lookup per task.
            if not before.issuperset(map(_ref, tasks)):
                new.update(map(_ref, tasks))
        if new:
            new.difference_update(before)
        if self._weak and not self._weak.issubset(before):
            new.update(self._weak - before)
        if self._strong:
            new.update(_refs(self._strong) - before)
        return new or _EMPTY


def _loop_of(task: Any) -> Any:
    try:
        return task.get_loop()
    except Exception:
        return None


def _is_closed(loop: Any) -> bool:
    try:
        return bool(loop.is_closed())
    except Exception:  # a foreign loop type that misbehaves: keep asking it
        return False


def _refs(tasks: Iterable[Any]) -> Set[Any]:
    return set(map(_ref, list(tasks)))  # list(): one C-level copy, safe while another thread adds a task


def _unrecognised(detail: str) -> RuntimeError:
    version = ".".join(map(str, sys.version_info[:3]))
    return RuntimeError(
        f"leakcheck does not recognise how asyncio keeps its tasks on Python {version} ({detail}), "
        "so it cannot check tasks; pass tasks=False (--leakcheck-kinds=threads) to check threads only"
    )


def _registry_sets(module: Any, name: str, kind: type) -> Any:
    registry = getattr(module, name, None)
    if not isinstance(registry, kind):
        raise _unrecognised(f"asyncio.tasks.{name} is {type(registry).__name__}, not {kind.__name__}")
    return registry.data if isinstance(registry, weakref.WeakSet) else registry  # type: ignore[attr-defined]


def _census_for(module: Any) -> Any:
    """The census for this interpreter's ``asyncio.tasks`` module."""
    if _VERSION < (3, 12):
        return _RegistryCensus((_registry_sets(module, "_all_tasks", weakref.WeakSet),), ())
    weak = _registry_sets(module, "_scheduled_tasks", weakref.WeakSet)
    strong = _registry_sets(module, "_eager_tasks", set)
    if _VERSION < (3, 14):
        return _RegistryCensus((weak,), (strong,))
    all_tasks = getattr(module, "all_tasks", None)
    if not callable(all_tasks) or not hasattr(sys, "monitoring"):
        raise _unrecognised("asyncio.all_tasks(loop) or sys.monitoring is missing")
    _base_loop_init()
    return _LoopCensus(all_tasks, _LOOPS, weak, strong)


_LOOPS = _LoopRegistry()


def watching_loops() -> bool:
    """Whether the task census has set up its watch on new event loops in this process (3.14+)."""
    return _LOOPS.installed


def stand_down() -> None:
    """Undo what the task census set up in this process (3.14+: the watch on new event loops).

    For a snapshot taken in a process that did not use leakcheck before (an
    attach), which must leave nothing behind.
    """
    _LOOPS.uninstall()
_cache: Tuple[Any, Any] = (None, None)


def _census() -> Any:
    """This version's census, chosen once per ``asyncio.tasks`` module (its registries live as long as it)."""
    global _cache
    module = sys.modules["asyncio.tasks"]
    cached_module, census = _cache
    if cached_module is not module:
        census = _census_for(module)
        _cache = (module, census)
    return census


def task_tokens() -> FrozenSet[Any]:
    """Cheap identity tokens for every live task: weak references.

    Weak references compare equal only while both referents are alive and the
    same, so a token of a dead task never matches a new task that happens to
    reuse its ``id``.
    """
    if "asyncio.tasks" not in sys.modules:  # asyncio was never imported: there is no task
        return _EMPTY
    tokens: FrozenSet[Any] = _census().tokens()
    return tokens


def new_task_tokens(before: AbstractSet[Any]) -> AbstractSet[Any]:
    """The tokens of tasks not in ``before``, without copying every registry first."""
    if "asyncio.tasks" not in sys.modules:
        return _EMPTY
    new: AbstractSet[Any] = _census().new_tokens(before)
    return new


def known_loops() -> List[Any]:
    """Event loops this module knows: every live loop on 3.14+, the loops of live tasks before."""
    if "asyncio.tasks" not in sys.modules:
        return []
    loops: List[Any] = _census().loops()
    running = running_loop()
    if running is not None and running not in loops:
        loops.append(running)
    return loops


def all_tasks() -> List[asyncio.Task[Any]]:
    """Every live, not yet done task of every loop in the process."""
    live = (token() for token in task_tokens())
    return [task for task in live if task is not None and not _done(task)]


def _done(task: Any) -> bool:
    try:
        return bool(task.done())
    except Exception:  # a Task subclass that misbehaves is still listed, and described as well as it can be
        return False


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
    if _is_closed(task.get_loop()):
        return "pending, loop closed"  # it can never run again
    if sys.version_info >= (3, 11):
        return "cancelling" if task.cancelling() else "pending"
    # 3.10 has no cancelling(): cancelling a task suspended on a future cancels
    # that future instead of setting _must_cancel.
    waiter = getattr(task, "_fut_waiter", None)
    if getattr(task, "_must_cancel", False) or (waiter is not None and waiter.cancelled()):
        return "cancelling"
    return "pending"


def default_executor_threads(loop: asyncio.AbstractEventLoop) -> FrozenSet[Any]:
    """The worker threads of ``loop``'s default executor (``run_in_executor(None, ...)``)."""
    executor = getattr(loop, "_default_executor", None)
    workers = getattr(executor, "_threads", None)
    return frozenset(workers) if workers else _EMPTY
