"""``no_leaks``: the verify entry point, as context manager, async context manager and decorator."""

from __future__ import annotations

import contextvars
import functools
import inspect
import logging
import sys
import threading
import warnings
from types import TracebackType
from typing import Any, Callable, Iterable, List, Optional, ParamSpec, Tuple, Type, TypeVar, Union, overload

from ..kinds.base import Census, Probe
from ..records import Snapshot
from ..reporting.report import LeakError, LeakReport, LeakWarning
from .compare import check_steps, enabled_probes, take_census
from .matching import MatcherLike, StackPattern
from .options import OnLeak, Options, make_options
from .wait import Steps, run_async, run_blocking

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("leakcheck")

# pytest leaves the frames of modules with this global out of its tracebacks.  A
# leak's report is the message of its LeakError: leakcheck's own frames, with
# their arguments and locals, would only bury it.  (unittest's counterpart,
# ``__unittest``, is not set here: unittest would then also cut the frames of
# the code a ``@no_leaks`` function runs out of its assertion failures.)
__tracebackhide__ = True

# Code that was interrupted, is exiting, or was abandoned (a generator closed
# early, a cancelled task) did not run to its end: a leak check would only
# delay the interruption by its grace period.
_SKIP_CHECK_ON = (KeyboardInterrupt, SystemExit, GeneratorExit)


def skips_check(error: Optional[BaseException]) -> bool:
    if error is None:
        return False
    if isinstance(error, _SKIP_CHECK_ON):
        return True
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(error, asyncio.CancelledError)


def attach_to_error(error: BaseException, text: str) -> None:
    """Add ``text`` to an exception in flight without replacing it."""
    add_note = getattr(error, "add_note", None)
    if callable(add_note):  # 3.11+
        add_note(text)
        return
    notes = getattr(error, "__notes__", None)
    if not isinstance(notes, list):
        notes = []
        try:
            error.__notes__ = notes  # type: ignore[attr-defined,unused-ignore]
        except AttributeError:  # an exception type without a __dict__
            pass
    notes.append(text)
    # Tracebacks before 3.11 do not print __notes__, so make sure someone sees it.
    logger.error("%s\n(while %s was propagating)", text, type(error).__name__)


def _warn_stacklevel() -> int:
    """The stacklevel that points a warning at the first frame outside leakcheck."""
    level = 1
    frame = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).startswith("leakcheck."):
        level += 1
        frame = frame.f_back  # type: ignore[assignment]
    return level


Location = Tuple[str, int, Optional[str]]
"""Where a warning points: file name, line number and module name (None: taken from the file name)."""


def location_of(code: object) -> Optional[Location]:
    """Where the function ``code`` (or what it wraps) is defined, for a warning about it."""
    try:
        function = inspect.unwrap(code)  # type: ignore[arg-type]
    except ValueError:  # a cycle of __wrapped__
        function = code
    function = getattr(function, "__func__", function)  # a bound method
    body = getattr(function, "__code__", None)
    if body is None:
        return None
    module = getattr(function, "__module__", None)
    return body.co_filename, body.co_firstlineno, module if isinstance(module, str) else None


def warn_about(warning: Warning, where: object = None) -> None:
    """Emit ``warning`` at ``where`` (a :data:`Location` or a function), else at the first caller outside leakcheck.

    A check that ends after its code has returned (a decorated function, a
    test's teardown) has no caller of its own to blame: ``where`` names the
    checked code instead of the test runner that happened to call leakcheck.
    """
    location = where if isinstance(where, tuple) else location_of(where) if where is not None else None
    if location is None:
        warnings.warn(warning, stacklevel=_warn_stacklevel())
    else:
        filename, lineno, module = location
        warnings.warn_explicit(warning, type(warning), filename, lineno, module=module)


def act_on_report(
    report: LeakReport, options: Options, error: Optional[BaseException], where: object = None
) -> Optional[LeakError]:
    """Do what ``on_leak`` says with a non-empty report.

    Returns the :class:`LeakError` the caller must raise (``on_leak="raise"``
    and no exception in flight): raised by the outermost leakcheck frame, its
    traceback holds no other frame of leakcheck's.  A ``"warn"`` warning points
    at ``where`` (see :func:`warn_about`).

    With the block's own exception in flight, the report is attached to that
    exception instead, whatever ``on_leak`` says: nothing may replace it, not
    even a warning turned into an error by ``-W error``.
    """
    on_leak = options.on_leak
    if error is not None:
        attach_to_error(error, str(report))
        if callable(on_leak):
            try:
                on_leak(report)
            except BaseException as failure:  # e.g. pytest.fail(): still not allowed to win
                attach_to_error(error, f"leakcheck: the on_leak callback failed: {failure!r}")
    elif on_leak == "warn":
        warn_about(LeakWarning(report), where)
    elif on_leak == "raise":
        return LeakError(report)
    elif callable(on_leak):
        on_leak(report)
    return None


class _Block:
    """One entry into a checked block: the census taken when it started."""

    __slots__ = ("before", "options", "probes", "where")

    def __init__(self, options: Options, probes: Tuple[Probe, ...], where: object = None) -> None:
        self.options = options
        self.probes = probes
        self.where = where
        """The checked code, for a warning that cannot point at a caller (see :func:`warn_about`)."""
        self.before: Census = take_census(probes)

    def _steps(self) -> Steps[LeakReport]:
        before, self.before = self.before, {}  # a block is finished once
        return check_steps(before, self.options, self.probes)

    def finish(self, error: Optional[BaseException]) -> Optional[LeakError]:
        """End the block, blocking while suspects get their grace period; the LeakError to raise, if any."""
        if skips_check(error):
            return None
        try:
            report = run_blocking(self._steps())
        except Exception as failure:  # e.g. a user's ignore matcher raised
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return None
        return act_on_report(report, self.options, error, self.where) if report else None

    async def finish_async(self, error: Optional[BaseException]) -> Optional[LeakError]:
        """End the block, keeping the running loop turning during the grace period; the LeakError to raise."""
        if skips_check(error):
            return None
        try:
            report = await run_async(self._steps())
        except Exception as failure:
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return None
        return act_on_report(report, self.options, error, self.where) if report else None

    def drop(self) -> None:
        """Give the block up unchecked: let go of its census."""
        self.before = {}


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

    __slots__ = ("_open", "_orphans", "_probes", "options")

    def __init__(self, options: Options, probes: Optional[Tuple[Probe, ...]] = None) -> None:
        self.options = options
        self._probes = enabled_probes(options) if probes is None else probes
        self._open: List[_Block] = []  # every open block; list.append and list.remove are atomic
        self._orphans = 0  # exits that could not be told apart: as many open blocks will never be exited

    def __repr__(self) -> str:
        return f"<LeakCheck {self.options}>"

    def start(self, where: object = None) -> _Block:
        """Take the baseline census for one checked window; ``where`` is the checked code, for warnings."""
        return _Block(self.options, self._probes, where)

    def _push(self) -> None:
        block = _Block(self.options, self._probes)
        self._open.append(block)
        below = _open_blocks.get()
        while below and below[1] not in below[0]._open:  # stale: exited from another thread or task
            below = below[2]
        _open_blocks.set((self, block, below))

    def _pop(self) -> _Block:
        entry = _open_blocks.get()
        newest: object = entry[0] if entry else None
        if newest is self:  # the common case: the newest block of this context
            _open_blocks.set(entry[2])
            block: _Block = entry[1]
            try:
                self._open.remove(block)
            except ValueError:  # exited already, from another thread or task
                return self._pop_elsewhere()
            if self._orphans:
                with _exit_lock:
                    self._drop_orphans()
            return block
        return self._pop_elsewhere()

    def _pop_elsewhere(self) -> _Block:
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

    def _pop_from_chain(self) -> Optional[_Block]:
        """Take this context's newest open block of ``self`` from anywhere in its chain; drop stale entries."""
        kept: List[Tuple[LeakCheck, _Block]] = []
        found: Optional[_Block] = None
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
        from ..integrations.unittest import decorate_testcase

        return decorate_testcase(target, check)
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

        return _mark_self_checked(checked_coroutine)

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

    return _mark_self_checked(checked)


_marked_a_function = False


def _mark_self_checked(function: F) -> F:
    global _marked_a_function
    function._leakcheck_self_checked = True  # type: ignore[attr-defined]
    _marked_a_function = True
    return function


def may_have_self_checked_tests() -> bool:
    """Whether any test could be self-checked: lets runners skip looking at every test when none is.

    Functions are marked by :func:`no_leaks` above; classes only by ``leakcheck.integrations.unittest``.
    """
    return _marked_a_function or "leakcheck.integrations.unittest" in sys.modules


def is_self_checked(target: object) -> bool:
    """Whether ``target`` (a function or class) runs its own check: ``@no_leaks`` or a LeakCheck base class.

    Runners that check every test leave such tests to their own check, with
    their own options, instead of checking them twice.
    """
    return bool(getattr(target, "_leakcheck_self_checked", False))


_DEFAULT_TIMEOUT = 1.0
_NONE: Tuple[Any, ...] = ()


@overload
def no_leaks(target: C, /) -> C: ...


@overload
def no_leaks(target: Callable[P, R], /) -> Callable[P, R]: ...


@overload
def no_leaks(
    *,
    threads: bool = True,
    tasks: bool = True,
    timeout: float = 1.0,
    ignore: Iterable[MatcherLike] = (),
    forbid: Union[StackPattern, Iterable[StackPattern]] = (),
    on_leak: OnLeak = "raise",
    cancel_tasks: bool = False,
) -> LeakCheck: ...


def no_leaks(
    target: Any = None,
    /,
    *,
    threads: bool = True,
    tasks: bool = True,
    timeout: float = _DEFAULT_TIMEOUT,
    ignore: Iterable[MatcherLike] = _NONE,
    forbid: Union[StackPattern, Iterable[StackPattern]] = _NONE,
    on_leak: OnLeak = "raise",
    cancel_tasks: bool = False,
) -> Any:
    """Fail when code leaves threads or asyncio tasks behind.

    Records what runs before the checked code and compares it with what runs
    after, giving new threads and tasks up to ``timeout`` seconds to finish
    (returning as soon as they have).  Whatever is still running then is a
    leak, reported with its full stack according to ``on_leak``.

    Works as ``with no_leaks(...):``, ``async with no_leaks(...):``,
    ``@no_leaks`` and ``@no_leaks(...)`` on functions, coroutine functions and
    ``unittest.TestCase`` classes.  Invalid options raise ``TypeError`` or
    ``ValueError`` here, not when the block ends.
    """
    if (  # every option left at its default: identity tests are the cheapest
        threads is True
        and tasks is True
        and timeout is _DEFAULT_TIMEOUT
        and ignore is _NONE
        and forbid is _NONE
        and on_leak == "raise"
        and cancel_tasks is False
    ):
        # The common case, kept cheap: a new object (every block its own), validated options shared.
        check = LeakCheck(*_default_options())
    else:
        check = LeakCheck(
            make_options(
                threads=threads,
                tasks=tasks,
                timeout=timeout,
                ignore=ignore,
                forbid=forbid,
                on_leak=on_leak,
                cancel_tasks=cancel_tasks,
            )
        )
    return check if target is None else decorate(check, target)


@functools.lru_cache(maxsize=1)
def _default_options() -> Tuple[Options, Tuple[Probe, ...]]:
    options = make_options()
    return options, enabled_probes(options)


def find_leaks(
    baseline: Snapshot,
    *,
    threads: bool = True,
    tasks: bool = True,
    timeout: float = 1.0,
    ignore: Iterable[MatcherLike] = (),
    forbid: Union[StackPattern, Iterable[StackPattern]] = (),
    cancel_tasks: bool = False,
) -> LeakReport:
    """Compare the process now with ``baseline`` (from :func:`snapshot`).

    Waits up to ``timeout`` for new threads and tasks to finish, like
    :func:`no_leaks`, and returns the report instead of acting on it: the
    report is falsy when nothing leaked.  Tasks on the caller's own running
    loop cannot finish while this blocks; use ``async with no_leaks()`` there.
    """
    if not isinstance(baseline, Snapshot):
        raise TypeError(f"find_leaks takes a Snapshot from leakcheck.snapshot(), not {type(baseline).__name__}")
    census = baseline._census
    if not isinstance(census, dict):
        raise ValueError("find_leaks needs a snapshot taken in this process by leakcheck.snapshot()")
    options = make_options(
        threads=threads, tasks=tasks, timeout=timeout, ignore=ignore, forbid=forbid, cancel_tasks=cancel_tasks
    )
    return run_blocking(check_steps(census, options))
