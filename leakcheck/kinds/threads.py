"""Capture of threads: census, stacks, and waiting by joining.

The private details of ``threading`` that leakcheck reads live here, each
with a fallback: the ``_limbo`` and ``_active`` dicts, for a cheap census,
and a worker thread's ``_target`` and ``_args``, for its executor.
"""

from __future__ import annotations

import sys
import threading
import time
import weakref
from typing import AbstractSet, Any, FrozenSet, Hashable, List, Optional, Sequence

from ..records import ThreadInfo, format_frames
from .frames import as_text, safely, thread_frames

_helpers: weakref.WeakSet[threading.Thread] = weakref.WeakSet()
_SELF_MODULES = ("leakcheck.",)
_DUMMY_POLL_CAP = 0.02
_NOTHING: FrozenSet[Hashable] = frozenset()


def start_helper(target: Any, name: str) -> threading.Thread:
    """Start one of leakcheck's own threads, which no check ever reports."""
    thread = threading.Thread(target=target, name=name, daemon=True)
    _helpers.add(thread)
    thread.start()
    return thread


def is_helper(thread: threading.Thread) -> bool:
    return thread in _helpers


def live_threads() -> List[threading.Thread]:
    """Every live ``Thread`` object: what ``threading.enumerate()`` returns, for a third of its cost.

    The census runs twice for every test of a checked suite, and most of
    ``enumerate()``'s time goes to its lock.  Copying a dict's values is one C
    call that runs no Python code, so it needs no lock under the GIL.  The
    starting threads (``_limbo``) are copied first: a thread only ever moves
    from there to ``_active``, so reading in this order can list it twice but
    never miss it.  A ``threading`` without these private dicts gets
    ``enumerate()``.
    """
    try:
        limbo, active = threading._limbo, threading._active  # type: ignore[attr-defined]
    except AttributeError:
        return threading.enumerate()
    if type(limbo) is not dict or type(active) is not dict:
        return threading.enumerate()
    if limbo:
        starting = [*limbo.values()]
        return [*active.values(), *starting]
    return [*active.values()]  # not list(): calling the type costs more than the copy


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


class ThreadProbe:
    option = "threads"

    def census(self) -> FrozenSet[Hashable]:
        # Weak references to Thread objects: not idents, which are reused as
        # soon as a thread ends and would hide a new thread behind an old one;
        # and not the objects, which a kept Snapshot would otherwise pin.
        return frozenset(map(weakref.ref, live_threads()))

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        live = live_threads()
        if isinstance(before, (frozenset, set)) and before.issuperset(map(weakref.ref, live)):
            return _NOTHING  # the common case, without building a set
        return set(map(weakref.ref, live)).difference(before)

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[threading.Thread]:
        threads = (token() for token in tokens if isinstance(token, weakref.ref))
        return [t for t in threads if isinstance(t, threading.Thread) and t.is_alive() and not is_helper(t)]

    def live(self) -> List[threading.Thread]:
        return [t for t in threading.enumerate() if not is_helper(t)]

    def is_alive(self, obj: Any) -> bool:
        thread: threading.Thread = obj
        if isinstance(thread, threading._DummyThread):
            return thread.ident in sys._current_frames()
        return thread.is_alive()

    def describe(self, objs: Sequence[Any]) -> List[ThreadInfo]:
        if not objs:
            return []
        frames_by_ident = sys._current_frames()
        try:
            infos = []
            for thread in objs:
                ident = thread.ident or 0
                frames = thread_frames(frames_by_ident.get(ident), _SELF_MODULES)
                infos.append(
                    ThreadInfo(
                        ident=ident,
                        native_id=getattr(thread, "native_id", None),
                        name=safely(lambda: as_text(thread.name), "<name failed>"),  # noqa: B023 - called at once
                        daemon=safely(lambda: bool(thread.daemon), False),  # noqa: B023 - called at once
                        frames=frames,
                        stack=format_frames(frames),
                    )
                )
            return infos
        finally:
            frames_by_ident.clear()  # drop every frame reference now, not at the next GC

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        polled = []
        for thread in objs:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                return
            if isinstance(thread, threading._DummyThread):
                polled.append(thread)  # not started by threading: cannot be joined
            elif thread is not threading.current_thread():
                thread.join(timeout)
        delay = 0.001
        while polled and time.monotonic() < deadline:
            polled = [t for t in polled if self.is_alive(t)]
            if polled:
                time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
                delay = min(delay * 2, _DUMMY_POLL_CAP)
