"""Capture of threads: census, stacks, and waiting by joining.

The private details of ``threading`` that leakcheck reads live here, each
with a fallback: the ``_limbo`` and ``_active`` dicts, for a cheap census,
and a worker thread's ``_target`` and ``_args``, for its executor.
"""

from __future__ import annotations

import _thread
import re
import sys
import threading
import time
import weakref
from typing import AbstractSet, Any, Dict, FrozenSet, Hashable, List, Optional, Sequence, Tuple

from ..records import LITERAL, Frame, format_frames
from .base import InfoRecord, JsonFields, Kind, TextFields
from .creation import Created, add_boundary, record
from .frames import as_text, hide_code, safely, thread_frames
from .ownership import Owner, add_owner_source, remove_owner_source, run_owned_by
from .tracking import Patch, when_imported


class ThreadInfo(InfoRecord):
    """A thread as it was when it was captured."""

    _compared = ("ident", "native_id", "name", "daemon", "frames", "stack")
    __slots__ = _compared
    _shown = ("ident", "native_id", "name", "daemon")
    kind = "thread"
    plural = "threads"
    header_word = "Thread"
    HEADER = re.compile(
        rf"Thread (?P<name>{LITERAL}) \(ident=(?P<ident>\d+), native_id=(?P<native_id>None|\d+), "
        r"daemon=(?P<daemon>True|False)\) \[(?P<state>running|starting)\]:"
    )

    ident: int
    native_id: Optional[int]
    name: str
    daemon: bool
    frames: Tuple[Frame, ...]
    stack: str
    """Traceback-style text, innermost frame last."""

    def __init__(
        self, ident: int, native_id: Optional[int], name: str, daemon: bool, frames: Tuple[Frame, ...], stack: str
    ) -> None:
        self._init(ident=ident, native_id=native_id, name=name, daemon=daemon, frames=frames, stack=stack)

    @property
    def state(self) -> str:
        # Python cannot tell a blocked thread from a busy one, and a thread with
        # no Python frame yet is still in its bootstrap.
        return "running" if self.frames else "starting"

    @property
    def header(self) -> str:
        """The dump line that introduces this thread's stack."""
        return (
            f"Thread {self.name!r} (ident={self.ident}, native_id={self.native_id}, "
            f"daemon={self.daemon}) [{self.state}]:"
        )

    @property
    def advice(self) -> str:
        from .stack_top import waits_for_work

        if waits_for_work(self):
            return "shut its executor down before the block ends (executor.shutdown(wait=True), or `with executor:`)"
        return "stop it and join() it before the block ends"

    def sort_key(self) -> Tuple[Any, ...]:
        return (self.name, self.native_id or 0)

    def to_json(self) -> Dict[str, Any]:
        return {
            "ident": self.ident,
            "native_id": self.native_id,
            "name": self.name,
            "daemon": self.daemon,
            "state": self.state,
            "frames": [frame._asdict() for frame in self.frames],
            "stack": self.stack,
        }

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> ThreadInfo:
        if details:
            raise fields.error(f"a thread has no line {details[0][:80]!r}")
        info = cls(
            ident=fields.integer(header["ident"], "ident"),
            native_id=fields.optional_integer(header["native_id"], "native_id"),
            name=fields.name(header["name"]),
            daemon=header["daemon"] == "True",
            frames=frames,
            stack=format_frames(frames),
        )
        if info.state != header["state"]:
            raise fields.error(f"a {header['state']} thread cannot have {len(frames)} frames")
        return info

    @classmethod
    def from_json(cls, fields: JsonFields) -> ThreadInfo:
        frames = fields.frames()
        return cls(
            ident=fields.field("ident", (int,)),
            native_id=fields.field("native_id", (int, type(None))),
            name=fields.field("name", (str,)),
            daemon=fields.field("daemon", (bool,)),
            frames=frames,
            stack=format_frames(frames),
        )


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


# -- creation tracking

_CREATED = "_leakcheck_created"
"""The attribute of a tracked ``Thread`` that holds its :class:`~leakcheck.kinds.creation.Created`."""
_started_raw: Dict[int, Created] = {}
"""What started the ``_thread`` threads now running, by ident: their dummy ``Thread`` has no attribute to hold it."""
_started_native: Dict[int, Created] = {}
"""The same, by native id: the OS threads kind may know a thread by its TID only."""


def _has_started(thread: threading.Thread) -> bool:
    started = thread.__dict__.get("_started")  # the Event every Thread has; not a subclass's property
    return bool(safely(started.is_set, False)) if isinstance(started, threading.Event) else False


def _start_hook(original: Any, patch: Patch) -> Any:
    def start(self: threading.Thread) -> None:
        # Not a second start(), which raises: the thread's site is where it really started.
        if patch.active and not _has_started(self):
            created = record(1)
            try:
                if created is not None:  # before it runs: what it starts looks its owner up here
                    self.__dict__[_CREATED] = created
            except Exception:  # a Thread subclass that refuses attributes is started untracked
                pass
        return original(self)  # type: ignore[no-any-return]

    start.__doc__ = original.__doc__
    start.__qualname__ = original.__qualname__
    start.__wrapped__ = original  # type: ignore[attr-defined]
    return start


class _Started:
    """The function a tracked ``_thread`` thread runs: the user's, owned by its starter's block."""

    __slots__ = ("created", "function")

    def __init__(self, function: Any, created: Created) -> None:
        self.function = function
        self.created = created

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        ident, native_id = threading.get_ident(), threading.get_native_id()
        _started_raw[ident] = _started_native[native_id] = self.created
        try:
            return run_owned_by(self.created.owner, self.function, *args, **kwargs)
        finally:
            _started_raw.pop(ident, None)
            _started_native.pop(native_id, None)

    def __repr__(self) -> str:  # what an unhandled exception's message names
        return repr(self.function)


hide_code(_Started.__call__.__code__)


def _start_new_thread_hook(original: Any, patch: Patch) -> Any:
    def start_new_thread(function: Any, args: Any, *kwargs: Any) -> Any:
        if patch.active:
            created = record(1)
            if created is not None:
                function = _Started(function, created)
        return original(function, args, *kwargs)

    start_new_thread.__doc__ = original.__doc__
    return start_new_thread


_PATCHES = (
    Patch(threading.Thread, "start", _start_hook),
    Patch(_thread, "start_new_thread", _start_new_thread_hook),
    Patch(_thread, "start_new", _start_new_thread_hook),  # the old alias, where it is still there
)
_pool_patches: List[Patch] = []


def _hook_pools() -> bool:
    """Hook ``ThreadPoolExecutor.submit``, once ``concurrent.futures`` is imported."""
    if not _pool_patches:
        # concurrent.futures imports its thread pool module on first use (asyncio's first run_in_executor,
        # inside a test): imported here, so that the jobs of the first pool are seen too.
        from concurrent.futures import thread

        from .thread_pools import pool_patches

        _pool_patches.extend(pool_patches(thread.ThreadPoolExecutor))
    for patch in _pool_patches:
        patch.apply()
    return True


def started_by(ident: Optional[int], native_id: Optional[int] = None) -> Optional[Created]:
    """What started the tracked ``_thread`` thread with this ident (or else native id), while it runs."""
    found = _started_raw.get(ident) if ident is not None else None
    if found is None and native_id is not None:
        found = _started_native.get(native_id)
    return found


def _owner_of_this_thread() -> Optional[Owner]:
    # threading._active, not current_thread(): that would make a dummy Thread for a foreign thread.
    try:
        thread = threading._active.get(threading.get_ident())  # type: ignore[attr-defined]
    except AttributeError:
        return None
    created = vars(thread).get(_CREATED) if thread is not None else None
    return created.owner if isinstance(created, Created) else None


class ThreadKind(Kind):
    """Every ``threading.Thread``, including the dummy ones of threads ``threading`` did not start."""

    name = "threads"
    info_type = ThreadInfo
    has_stacks = True

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

    def is_exempt(self, obj: Any) -> bool:
        return obj is threading.current_thread()

    def extra_ignores(self, suspects: Sequence[Any]) -> Tuple[List[Any], bool]:
        from .thread_pools import idle_worker_matcher

        idle_worker = idle_worker_matcher(suspects)
        if idle_worker is None:
            return [], False
        return [idle_worker], any(idle_worker.could_match(thread) for thread in suspects)

    def held_by(self, objs: Sequence[Any]) -> Tuple[Tuple[int, str], ...]:
        from .thread_pools import global_holding

        return tuple((thread.ident, holder) for thread in objs for holder in [global_holding(thread)] if holder)

    def track(self, on: bool) -> None:
        bootstrap = getattr(threading.Thread, "_bootstrap_inner", None)
        if on and bootstrap is not None:
            add_boundary(bootstrap.__code__)  # a creation stack in a thread ends where the thread began
        for patch in _PATCHES if on else (*_PATCHES, *_pool_patches):
            patch.apply() if on else patch.undo()
        if on:
            when_imported("concurrent.futures", _hook_pools)
            add_owner_source(_owner_of_this_thread)
        else:
            remove_owner_source(_owner_of_this_thread)

    def creation(self, obj: Any) -> Optional[Created]:
        created = safely(lambda: vars(obj).get(_CREATED), None)
        if created is None and isinstance(obj, threading._DummyThread):
            created = started_by(obj.ident or 0)
        return created if isinstance(created, Created) else None


KIND = ThreadKind()
