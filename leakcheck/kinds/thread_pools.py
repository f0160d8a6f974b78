"""What is capacity, not a leak: idle workers of pools that outlive any one check.

A pool starts its workers lazily, so its first worker appears in whichever
check happens to give it the first job; blaming that check would make the
result depend on test order.  A thread is capacity when

* it is a worker of a pool that outlives the check:
  - the default executor of an event loop that leakcheck knows and that is
    still open (``run_in_executor(None, ...)``, ``asyncio.to_thread``);
  - a ``ThreadPoolExecutor`` held in a module global;
  - any other pool whose worker object (the ``self`` of the thread's target)
    a global of the module defining that object's class can reach in at most
    three steps through attributes and containers (trio's thread cache, say);
* and it is idle in that pool's own wait: its top function (``_stack_top``)
  is the worker loop itself, not a job.

A worker still running a job shows the job's frames, so it is still
reported, and so is every worker of a pool that the check itself created
and left running, and a worker whose loop is closed.
"""

from __future__ import annotations

import gc
import sys
import threading
import types
import weakref
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set

from . import asyncio_compat as compat
from .base import InfoRecord
from .frames import hide_code
from .ownership import Owner, current_owner, run_owned_by
from .stack_top import top_frame, waits_for_work
from .tasks import drivable_loops
from .tracking import Patch

_REACH = 3  # steps from a module global to a pool's worker object: global -> pool -> dict -> worker


# -- creation tracking: a job belongs to the block that submitted it, not to the block that started its worker


class _OwnedJob:
    """A job submitted to a ``ThreadPoolExecutor`` while tracking: it runs owned by its submitter's block."""

    __slots__ = ("function", "owner")

    def __init__(self, function: Any, owner: Optional[Owner]) -> None:
        self.function = function
        self.owner = owner

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return run_owned_by(self.owner, self.function, *args, **kwargs)

    def __repr__(self) -> str:
        return repr(self.function)


hide_code(_OwnedJob.__call__.__code__)


def _runs_jobs_in_threads(executor: Any) -> bool:
    # 3.14's InterpreterPoolExecutor is a ThreadPoolExecutor that ships each job to another interpreter,
    # which could not take a wrapped job: only pools that prepare their workers as ThreadPoolExecutor does.
    from concurrent.futures import ThreadPoolExecutor

    def preparation(cls: Any) -> Any:
        return getattr(getattr(cls, "prepare_context", None), "__func__", None)

    return preparation(type(executor)) is preparation(ThreadPoolExecutor)


def _submit_hook(original: Any, patch: Patch) -> Any:
    def submit(self: Any, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        if patch.active and _runs_jobs_in_threads(self):
            fn = _OwnedJob(fn, current_owner())
        return original(self, fn, *args, **kwargs)

    submit.__doc__ = original.__doc__
    submit.__wrapped__ = original  # type: ignore[attr-defined]
    return submit


def pool_patches(executor: type) -> List[Patch]:
    """The hooks that make the jobs of ``executor`` (ThreadPoolExecutor) run owned by whoever submitted them
    (``map`` submits too)."""
    return [Patch(executor, "submit", _submit_hook)]


def executor_of(thread: threading.Thread) -> Optional[Any]:
    """The live ``ThreadPoolExecutor`` that ``thread`` is a worker of, or ``None``.

    A worker runs ``concurrent.futures.thread._worker`` with a weak reference
    to its executor as first argument; ``Thread`` keeps both while it runs.
    """
    futures_thread = sys.modules.get("concurrent.futures.thread")
    if futures_thread is None or getattr(thread, "_target", None) is not getattr(futures_thread, "_worker", ()):
        return None
    args = getattr(thread, "_args", ())
    reference = args[0] if isinstance(args, tuple) and args else None
    return reference() if isinstance(reference, weakref.ref) else None


class IdlePoolWorker:
    """An ignore matcher for idle workers of long-lived pools (see the module docstring)."""

    def __init__(self, executor_workers: Set[Any], loops: Dict[int, str]) -> None:
        self._executor_workers = {thread.ident for thread in executor_workers}
        self._loops = loops  # ident -> qualname of the worker loop the thread idles in

    def could_match(self, thread: Any) -> bool:
        """Whether ``thread`` may turn idle later: then its check polls instead of joining it."""
        return thread.ident in self._executor_workers or thread.ident in self._loops

    def __call__(self, info: InfoRecord) -> bool:
        ident = getattr(info, "ident", None) if info.kind == "thread" else None
        if ident is None:
            return False
        if ident in self._executor_workers:
            return waits_for_work(info)
        loop = self._loops.get(ident)
        top = top_frame(info.frames)
        return loop is not None and top is not None and top.function == loop


def idle_worker_matcher(threads: Sequence[Any]) -> Optional[IdlePoolWorker]:
    """A matcher for the ``threads`` that belong to long-lived pools, or ``None`` when none do."""
    if not threads:
        return None
    executor_workers = _open_loop_executor_workers(threads)
    executors = {thread: executor_of(thread) for thread in threads if thread not in executor_workers}
    candidates = [executor for executor in executors.values() if executor is not None]
    if candidates:
        held = {id(executor) for executor in module_globals_holding(candidates)}
        executor_workers.update(thread for thread, executor in executors.items() if id(executor) in held)
    loops = {
        thread.ident: loop
        for thread in threads
        if thread not in executor_workers and executors.get(thread) is None
        for loop in [_pool_worker_loop(thread)]
        if loop is not None
    }
    if not executor_workers and not loops:
        return None
    return IdlePoolWorker(executor_workers, loops)


def known_open_loops() -> List[Any]:
    """The event loops leakcheck knows that are still open."""
    loops = {id(loop): loop for loop in (*compat.known_loops(), *drivable_loops())}
    return [loop for loop in loops.values() if not _closed(loop)]


def _closed(loop: Any) -> bool:
    try:
        return bool(loop.is_closed())
    except Exception:
        return True


def _open_loop_executor_workers(threads: Sequence[Any]) -> Set[Any]:
    """The ``threads`` that work for the default executor of an open event loop."""
    if "asyncio" not in sys.modules:
        return set()
    wanted = set(threads)
    workers: Set[Any] = set()
    for loop in known_open_loops():
        workers.update(wanted.intersection(compat.default_executor_threads(loop)))
    # A loop with no task left is unknown before 3.14: ask the garbage collector who holds the executor.
    unexplained = {executor_of(thread) for thread in wanted - workers} - {None}
    for executor in unexplained:
        loop = _loop_owning(executor)
        if loop is not None and not _closed(loop):
            workers.update(wanted.intersection(compat.default_executor_threads(loop)))
    return workers


def _loop_owning(executor: Any) -> Optional[Any]:
    """The event loop whose default executor ``executor`` is, found through the objects that refer to it."""
    import asyncio

    for referrer in gc.get_referrers(executor):
        if isinstance(referrer, dict) and referrer.get("_default_executor") is executor:
            owners = gc.get_referrers(referrer)  # an instance __dict__ (before 3.12, or once materialised)
        else:
            owners = [referrer]
        for owner in owners:
            is_loop = issubclass(type(owner), asyncio.AbstractEventLoop)
            if is_loop and getattr(owner, "_default_executor", None) is executor:
                return owner
    return None


def module_globals_holding(objects: Sequence[Any]) -> List[Any]:
    """The ``objects`` that some module keeps in a global variable."""
    wanted = {id(obj): obj for obj in objects}
    held: Dict[int, Any] = {}
    for module in list(sys.modules.values()):
        namespace = getattr(module, "__dict__", None)
        if isinstance(namespace, dict):
            for value in list(namespace.values()):
                if id(value) in wanted and value is wanted[id(value)]:
                    held[id(value)] = value
    return list(held.values())


def global_holding(thread: Any) -> Optional[str]:
    """``"module.name"`` of a module global that is ``thread``, or an object whose attribute is it.

    Such a thread was started when its module was imported (a cache refresher,
    say), so it appears in whichever test imports the module first.  Only the
    modules that define the thread's target or its class are looked into: that
    is where such a global lives, and it keeps a report cheap.
    """
    target = getattr(thread, "_target", None)
    function = getattr(target, "__func__", target)
    names = {getattr(function, "__module__", None), type(thread).__module__} - {None, "threading"}
    for name in names:
        namespace = getattr(sys.modules.get(str(name)), "__dict__", None)
        if not isinstance(namespace, dict):
            continue
        for key, value in list(namespace.items()):
            if value is thread or (type(value).__module__ == name and any(v is thread for v in _attributes(value))):
                return f"{name}.{key}"
    return None


def _attributes(obj: object) -> List[Any]:
    """The values of ``obj``'s instance attributes: its ``__dict__`` and its ``__slots__``."""
    if isinstance(obj, type):
        return []
    namespace = getattr(obj, "__dict__", None)
    values = list(namespace.values()) if isinstance(namespace, dict) else []
    for klass in type(obj).__mro__:
        for slot in klass.__dict__.get("__slots__", ()):
            descriptor = klass.__dict__.get(slot)
            if isinstance(descriptor, types.MemberDescriptorType):  # a plain slot: reading it runs no code
                try:
                    values.append(descriptor.__get__(obj, klass))
                except AttributeError:  # never set
                    pass
    return values


def _pool_worker_loop(thread: Any) -> Optional[str]:
    """The qualname of ``thread``'s worker loop when its worker object belongs to a module-level pool."""
    target = getattr(thread, "_target", None)
    worker = getattr(target, "__self__", None)
    function = getattr(target, "__func__", None)
    if worker is None or not isinstance(function, types.FunctionType) or isinstance(worker, type):
        return None
    module = sys.modules.get(type(worker).__module__)
    namespace = getattr(module, "__dict__", None)
    if not isinstance(namespace, dict) or not _reaches(list(namespace.values()), worker):
        return None
    return f"{function.__module__}.{function.__qualname__}"


def _reaches(roots: Iterable[Any], wanted: Any) -> bool:
    """Whether ``wanted`` is within ``_REACH`` steps of ``roots``, through attributes and containers."""
    seen: Set[int] = set()
    layer = [root for root in roots if not isinstance(root, (types.ModuleType, type, types.FunctionType))]
    for _ in range(_REACH):
        following: List[Any] = []
        for obj in layer:
            if obj is wanted:
                return True
            if id(obj) in seen:
                continue
            seen.add(id(obj))
            following.extend(_children(obj))
        layer = following
    return any(obj is wanted for obj in layer)


def _children(obj: Any) -> Iterable[Any]:
    if isinstance(obj, dict):
        return [*obj.keys(), *obj.values()]
    if isinstance(obj, (list, tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, (str, bytes, int, float, types.ModuleType, type, types.FunctionType)):
        return ()
    deque = sys.modules.get("collections")
    if deque is not None and isinstance(obj, deque.deque):
        return list(obj)
    return _attributes(obj)
