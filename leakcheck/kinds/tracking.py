"""Turning creation tracking on and off: the hooks of every kind, counted.

Tracking is on while anything uses it: a :func:`track_creation` call not yet
matched by :func:`stop_tracking_creation`, a ``with track_creation():``
block, or a check with ``track_creation=True`` (the pytest plugin's run, by
default).  The first user installs every kind's hooks
(:meth:`Kind.track <leakcheck.kinds.base.Kind.track>`); the last one to stop
removes them, restoring exactly what was there.  Importing leakcheck
installs nothing.

Hooks on a module's objects (asyncio's event loop, ``concurrent.futures``,
``subprocess``, ``multiprocessing``) go in once the program has imported
that module: importing asyncio only to hook it would cost every run that
never uses it a census of tasks at every check.  Tracking looks again each
time a check starts; :func:`track_creation` imports them at once.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from collections import deque
from types import TracebackType
from typing import Any, Callable, Deque, List, Optional, Tuple, Type

from .frames import hide_code
from .registry import kinds

ENV_VARIABLE = "LEAKCHECK_TRACK"
_TRUE = ("1", "yes", "true", "on")
_FALSE = ("0", "no", "false", "off")

_lock = threading.RLock()  # reentrant: a lease may be given back from a finalizer, on any thread
_users = 0
_calls = 0  # plain track_creation() calls not yet matched by stop_tracking_creation()
_waiting: List[Tuple[str, Callable[[], bool]]] = []  # hooks whose module the program has not imported yet


def parse_flag(text: str, what: str) -> bool:
    """``yes``/``no`` (also ``1``/``0``, ``true``/``false``, ``on``/``off``, any case) as a bool."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    shown = text if len(text) <= 40 else text[:40] + "..."
    raise ValueError(f"{what} must be yes or no (or 1/0, true/false, on/off), not {shown!r}")


def env_default() -> Optional[bool]:
    """What ``LEAKCHECK_TRACK`` says, if it is set; a ``ValueError`` naming it for a value that is no yes or no."""
    text = os.environ.get(ENV_VARIABLE)
    if text is None or not text.strip():
        return None
    return parse_flag(text, f"the environment variable {ENV_VARIABLE}")


def is_tracking() -> bool:
    """Whether creation tracking is on."""
    return _users > 0


is_tracking_creation = is_tracking


def acquire() -> None:
    """Start using tracking: the first user installs the hooks.

    Hooks that wait for a module (see :func:`when_imported`) go in now if the
    program has imported it since.
    """
    global _users
    with _lock:
        _give_back_released()
        if _users == 0:
            _install()
        _users += 1
        if _waiting:
            _catch_up()


def release() -> None:
    """Stop using tracking: the last user removes the hooks."""
    with _lock:
        _give_back_released()
        _give_back(1)


def release_soon() -> None:
    """:func:`release`, from a finalizer: it never waits for the lock.

    The garbage collector may run a finalizer in a thread that holds an
    import lock the tracking lock's holder waits for; that release is then
    given back by the next user of the lock.
    """
    if not _lock.acquire(blocking=False):
        _released.append(None)  # deque.append and popleft are each atomic: no lease is lost between them
        return
    try:
        _give_back(1)
    finally:
        _lock.release()


_released: Deque[None] = deque()
"""One entry per lease a finalizer gave back while another thread held the lock."""


def _give_back_released() -> None:
    count = 0
    while _released:
        _released.popleft()
        count += 1
    if count:
        _give_back(count)


def _give_back(count: int) -> None:
    global _users
    if _users <= 0:
        return  # every hook is gone already
    _users = max(0, _users - count)
    if _users == 0:
        _uninstall()


def when_imported(module: str, install: Callable[[], bool]) -> None:
    """Call ``install`` (hooks on objects of ``module``) now if ``module`` is imported, else once it is.

    For a kind's :meth:`~leakcheck.kinds.base.Kind.track`: until then nothing
    of that module can start anything.  ``install`` returns ``False`` while
    what it hooks is not there yet (the module is still being imported), to
    be called again later.  It runs under the tracking lock, so it may import
    only standard-library modules, whose import runs no code that takes that
    lock (finalizers never wait for it: :func:`release_soon`).  Forgotten
    when tracking goes off.
    """
    if module not in sys.modules or not install():
        _waiting.append((module, install))


def _catch_up() -> None:
    for entry in list(_waiting):
        module, install = entry
        if module in sys.modules and install():
            _waiting.remove(entry)


def _load_waiting() -> None:
    """Import the modules whose hooks wait for them, outside the lock: an import may wait for another thread."""
    for module in [module for module, _ in list(_waiting)]:
        try:
            importlib.import_module(module)
        except ImportError:  # not on this platform: it starts nothing here
            pass


def _install() -> None:
    installed = []
    try:
        for kind in kinds().values():
            kind.track(True)
            installed.append(kind)
    except BaseException:
        _waiting.clear()
        for kind in reversed(installed):
            kind.track(False)
        raise


def _uninstall() -> None:
    _waiting.clear()
    for kind in reversed(list(kinds().values())):
        kind.track(False)


class TrackCreation:
    """Creation tracking, on from the call of :func:`track_creation`: a context manager, or a plain call."""

    __module__ = "leakcheck"

    __slots__ = ("_held",)

    def __init__(self) -> None:
        self._held = True

    def __enter__(self) -> TrackCreation:
        global _calls
        with _lock:  # from now on the block, not the call, holds tracking on
            if _calls > 0:
                _calls -= 1
            else:  # stop_tracking_creation() undid this call already: the block has nothing to give back
                self._held = False
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], traceback: Optional[TracebackType]
    ) -> None:
        if self._held:
            self._held = False
            release()

    def __repr__(self) -> str:
        return f"<leakcheck.track_creation: {'on' if is_tracking() else 'off'}>"


def track_creation() -> TrackCreation:
    """Record where every thread, task and child process is started, and which checked block owns it.

    As a plain call, tracking stays on until :func:`stop_tracking_creation`;
    as ``with track_creation():``, until the block ends.  Reports then show
    ``created at`` for each leak, and checks blame only what their own block
    started.  Installing the hooks patches ``threading.Thread.start``,
    ``_thread.start_new_thread``, asyncio's ``BaseEventLoop.create_task`` and
    ``call_exception_handler``, ``ThreadPoolExecutor.submit``, and
    ``os.posix_spawn``, ``_posixsubprocess.fork_exec`` and multiprocessing's
    fork start method; turning tracking off restores every one of them exactly.
    """
    global _calls
    acquire()
    if _waiting:  # asked for by name: hook asyncio and the rest now, even if not imported yet
        _load_waiting()
        with _lock:
            _catch_up()
    with _lock:
        _calls += 1
    return TrackCreation()


def stop_tracking_creation() -> None:
    """Undo one plain :func:`track_creation` call; the hooks go when nothing else uses tracking.

    ``RuntimeError`` when there is no such call to undo.
    """
    global _calls
    with _lock:
        if _calls <= 0:
            raise RuntimeError("stop_tracking_creation() matches no track_creation() call: tracking was not turned on")
        _calls -= 1
        release()


# -- the hooks


_MISSING = object()


class Patch:
    """One attribute that tracking replaces with a hook, and puts back exactly.

    ``hook(original)`` makes the replacement, which must call ``original``
    and record nothing once :attr:`active` is false: someone may have
    wrapped it in turn, and their wrapper outlives tracking.
    """

    __slots__ = ("_hook", "_original", "_own", "_replacement", "active", "name", "target")

    def __init__(self, target: Any, name: str, hook: Callable[[Any, Patch], Any]) -> None:
        self.target = target
        self.name = name
        self._hook = hook
        self._original: Any = _MISSING
        self._replacement: Any = _MISSING
        self._own = False
        self.active = False

    def apply(self) -> None:
        """Put the hook in place (nothing, where the attribute does not exist here)."""
        current = getattr(self.target, self.name, _MISSING)
        if current is _MISSING:
            return
        if current is not self._replacement:
            self._own = self.name in vars(self.target)
            self._original = current
            self._replacement = self._hook(current, self)
            hook_code = getattr(self._replacement, "__code__", None)
            if hook_code is not None:  # a creation stack shows the user's call, not the hook around it
                hide_code(hook_code)
            setattr(self.target, self.name, self._replacement)
        self.active = True

    def undo(self) -> None:
        """Put the original back, unless someone replaced the hook meanwhile (then it only stops recording)."""
        self.active = False
        if self._replacement is _MISSING or getattr(self.target, self.name, _MISSING) is not self._replacement:
            return
        if self._own:
            setattr(self.target, self.name, self._original)
        else:  # it came from a base class: the class had none of its own
            delattr(self.target, self.name)
        self._replacement = _MISSING
