"""``no_leaks``: the verify entry point, as context manager, async context manager and decorator."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import threading
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, List, Optional, ParamSpec, Tuple, Type, TypeVar, Union, overload

from ..reporting.report import LeakReport
from ..reporting.snapshot import Snapshot
from .compare import check_steps
from .options import FIND_OPTION_NAMES, FindOptions, NoLeaksOptions, Options, make_options, tracks_creation
from .self_checked import mark_self_checked
from .wait import run_blocking
from .window import Tracked, Window

if TYPE_CHECKING:
    from typing_extensions import Unpack

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("leakcheck")

# pytest leaves the frames of modules with this global out of its tracebacks (see window.py).
__tracebackhide__ = True


# The blocks open in the current context (thread or task), newest first, as a
# chain of (check, block, rest) tuples: ``with`` exits in the context that
# entered, last in first out, so the newest entry is nearly always the one,
# and pushing and popping it costs one tuple and one ContextVar.set.  A task
# inherits a copy of its creator's chain; a thread starts with none.
_open_blocks: contextvars.ContextVar[Tuple[Any, ...]] = contextvars.ContextVar("leakcheck_open_blocks", default=())
# Serialises the rare exits that cannot use the current context's newest entry.
_exit_lock = threading.Lock()


class LeakCheck:
    """A configured leak check, made by :func:`no_leaks`.

    Use it as ``with``, ``async with``, or as a decorator on functions,
    coroutine functions and ``unittest.TestCase`` classes.  Every call of
    :func:`no_leaks` makes a new one, so two ``with`` statements never share
    one.  One object may still be entered several times at once, nested or
    from several threads and tasks: each exit takes the block its own thread
    or task entered last.  An exit from a thread or task that did not enter it
    (an ``ExitStack`` closed elsewhere) takes the object's only open block,
    and raises :class:`RuntimeError` when several are open, rather than guess.
    """

    __slots__ = ("_open", "_orphans", "options")

    def __init__(self, options: Options) -> None:
        self.options = options
        self._open: List[Window] = []  # every open block; list.append and list.remove are atomic
        self._orphans = 0  # exits that could not be told apart: as many open blocks will never be exited

    def __repr__(self) -> str:
        return f"<LeakCheck {self.options}>"

    def start(self, where: object = None) -> Window:
        """Take the baseline census for one checked window; ``where`` is the checked code, for warnings."""
        return Window(self.options, where)

    def _push(self) -> None:
        block = Window(self.options)
        self._open.append(block)
        below = _open_blocks.get()
        while below and below[1] not in below[0]._open:  # stale: exited from another thread or task
            below = below[2]
        _open_blocks.set((self, block, below))

    def _pop(self) -> Window:
        entry = _open_blocks.get()
        newest: object = entry[0] if entry else None
        if newest is self:  # the common case: the newest block of this context
            _open_blocks.set(entry[2])
            block: Window = entry[1]
            try:
                self._open.remove(block)
            except ValueError:  # exited already, from another thread or task
                return self._pop_elsewhere()
            if self._orphans:
                with _exit_lock:
                    self._drop_orphans()
            return block
        return self._pop_elsewhere()

    def _pop_elsewhere(self) -> Window:
        with _exit_lock:
            block = self._pop_from_chain()
            if block is not None:  # exited out of order: an older block of this context
                return block
            # This context never entered the object: its block was entered elsewhere.
            still_open = list(self._open)
            if len(still_open) == 1:
                only = still_open[0]
                try:
                    self._open.remove(only)
                except ValueError:
                    pass  # exited meanwhile, by its own context
                else:
                    return only
            if not self._open:
                raise RuntimeError(
                    f"leakcheck: exiting {self!r}, which has no open block: it was exited already, or never entered"
                )
            # Never guess: each exit must close the block it opened, or none.
            self._orphans += 1
            count = len(self._open)
            self._drop_orphans()
            raise RuntimeError(
                f"leakcheck: cannot tell which block of {self!r} to exit: it is open {count} times, and this "
                "thread or task entered none of them. Give each block that is exited from another thread or "
                "task its own no_leaks() object."
            )

    def _pop_from_chain(self) -> Optional[Window]:
        """Take this context's newest open block of ``self`` from anywhere in its chain; drop stale entries."""
        kept: List[Tuple[LeakCheck, Window]] = []
        found: Optional[Window] = None
        node = _open_blocks.get()
        while node:
            check, block, node = node
            if found is None and check is self and block in self._open:
                found = block
            elif block in check._open:  # else stale: exited from another thread or task
                kept.append((check, block))
        chain: Tuple[Any, ...] = ()
        for check, block in reversed(kept):
            chain = (check, block, chain)
        _open_blocks.set(chain)
        if found is not None:
            self._open.remove(found)
            self._drop_orphans()
        return found

    def _drop_orphans(self) -> None:
        """Once every open block is one whose exit could not be identified, give them all up (holding the lock)."""
        if self._orphans and len(self._open) <= self._orphans:
            for block in self._open:
                block.drop()
            self._open.clear()
            self._orphans = 0

    def __enter__(self) -> LeakCheck:
        self._push()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        leak = self._pop().finish(exc)
        if leak is not None:
            raise leak

    async def __aenter__(self) -> LeakCheck:
        self._push()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        leak = await self._pop().finish_async(exc)
        if leak is not None:
            raise leak

    @overload
    def __call__(self, target: C) -> C: ...

    @overload
    def __call__(self, target: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, target: Union[type, Callable[..., Any]]) -> Any:
        return decorate(self, target)


def decorate(check: LeakCheck, target: Any) -> Any:
    if isinstance(target, type):
        from .testcase import decorate_testcase

        return decorate_testcase(target, check.options)
    if not callable(target):
        raise TypeError(f"no_leaks decorates functions, coroutine functions and TestCase classes, not {target!r}")
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"no_leaks cannot decorate the generator function {target.__qualname__}: "
            "its body runs after the call returns; check the code that consumes it instead"
        )
    # Each call holds its own block: no lookup, however many threads and tasks run the function at once.
    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def checked_coroutine(*args: Any, **kwargs: Any) -> Any:
            block = check.start(target)
            try:
                result = await target(*args, **kwargs)
            except BaseException as error:
                await block.finish_async(error)  # notes the report on the error, never replaces it
                raise
            leak = await block.finish_async(None)
            if leak is not None:
                raise leak
            return result

        return mark_self_checked(checked_coroutine)

    @functools.wraps(target)
    def checked(*args: Any, **kwargs: Any) -> Any:
        block = check.start(target)
        try:
            result = target(*args, **kwargs)
        except BaseException as error:
            block.finish(error)  # notes the report on the error, never replaces it
            raise
        leak = block.finish(None)
        if leak is not None:
            raise leak
        return result

    return mark_self_checked(checked)


@overload
def no_leaks(target: C, /) -> C: ...


@overload
def no_leaks(target: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def no_leaks(**options: Unpack[NoLeaksOptions]) -> LeakCheck: ...


def no_leaks(target: Any = None, /, **options: Unpack[NoLeaksOptions]) -> Any:
    """Fail when code leaves threads, asyncio tasks or other resources behind.

    Records what runs before the checked code and compares it with what runs
    after, giving what is new up to ``timeout`` seconds to end (returning as
    soon as it has).  Whatever is still there then is a leak, reported with
    its full stack according to ``on_leak``.

    The kinds checked are ``threads`` and ``tasks`` unless told otherwise;
    ``processes``, ``fds``, ``os_threads`` and ``probes=[...]`` are opt-in.
    Works as ``with no_leaks(...):``, ``async with no_leaks(...):``,
    ``@no_leaks`` and ``@no_leaks(...)`` on functions, coroutine functions and
    ``unittest.TestCase`` classes.  Invalid options raise ``TypeError`` or
    ``ValueError`` here, not when the block ends.

    With ``track_creation=True`` (or ``LEAKCHECK_TRACK=1``, or tracking on
    through :func:`~leakcheck.track_creation`), each leak says where it was
    created, and the block blames only what it started itself.
    """
    # Every option left at its default, the common case, kept cheap: a new object (every block its own),
    # validated options shared.
    check = LeakCheck(_default_options() if not options else make_options(options, where="no_leaks()"))
    return check if target is None else decorate(check, target)


@functools.lru_cache(maxsize=1)
def _default_options() -> Options:
    return make_options()


def find_leaks(baseline: Snapshot, **options: Unpack[FindOptions]) -> LeakReport:
    """Compare the process now with ``baseline`` (from :func:`snapshot`).

    Waits up to ``timeout`` for what is new to end, like :func:`no_leaks`,
    and returns the report instead of acting on it: the report is falsy when
    nothing leaked.  The kinds checked must have been captured by the
    baseline (``snapshot(fds=True)`` for ``find_leaks(..., fds=True)``).
    Tasks on the caller's own running loop cannot finish while this blocks;
    use ``async with no_leaks()`` there.

    With creation tracking (``track_creation=True``, or a baseline taken with
    it), leaks say where they were created.  There is no block here, so
    nothing is left out as another block's: ownership needs ``no_leaks``.
    """
    if not isinstance(baseline, Snapshot):
        raise TypeError(f"find_leaks takes a Snapshot from leakcheck.snapshot(), not {type(baseline).__name__}")
    census = baseline._census
    if not isinstance(census, dict):
        raise ValueError("find_leaks needs a snapshot taken in this process by leakcheck.snapshot()")
    checked = make_options(options, where="find_leaks()", allowed=FIND_OPTION_NAMES)
    for kind in checked.kinds:
        if census.get(kind.name) is None:
            raise ValueError(
                f"find_leaks(..., {kind.name}=...) needs a baseline that captured {kind.name}: "
                f"take it with leakcheck.snapshot({kind.name}=...) and the same value"
            )
    tracked = baseline._tracked  # held on by the baseline: what vanished since it was taken counts too
    if not isinstance(tracked, Tracked):
        tracked = None
    if checked.track_creation is False or (tracked is None and not tracks_creation(checked)):
        return run_blocking(check_steps(census, checked))
    if tracked is not None:
        return run_blocking(check_steps(census, checked, tracked))
    own = Tracked(block=False)
    try:
        return run_blocking(check_steps(census, checked, own))
    finally:
        own.release()
