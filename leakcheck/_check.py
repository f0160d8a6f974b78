"""``no_leaks``: the verify entry point, as context manager, async context manager and decorator."""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import sys
import warnings
from types import TracebackType
from typing import Any, Callable, Iterable, List, Optional, ParamSpec, Tuple, Type, TypeVar, Union, overload

from ._compare import check_steps, enabled_probes, take_census
from ._matching import MatcherLike, StackPattern
from ._model import Snapshot
from ._options import OnLeak, Options, make_options
from ._probes import Census, Probe
from ._report import LeakError, LeakReport, LeakWarning
from ._wait import Steps, run_async, run_blocking

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

logger = logging.getLogger("leakcheck")

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


def act_on_report(report: LeakReport, options: Options, error: Optional[BaseException]) -> None:
    """Do what ``on_leak`` says with a non-empty report.

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
        warnings.warn(LeakWarning(report), stacklevel=_warn_stacklevel())
    elif on_leak == "raise":
        raise LeakError(report)
    elif callable(on_leak):
        on_leak(report)


class _Block:
    """One entry into a checked block: the census taken when it started."""

    __slots__ = ("before", "options", "probes")

    def __init__(self, options: Options, probes: Tuple[Probe, ...]) -> None:
        self.options = options
        self.probes = probes
        self.before: Census = take_census(probes)

    def _steps(self) -> Steps[LeakReport]:
        before, self.before = self.before, {}  # a block is finished once
        return check_steps(before, self.options, self.probes)

    def finish(self, error: Optional[BaseException]) -> None:
        """End the block, blocking while suspects get their grace period."""
        if skips_check(error):
            return
        try:
            report = run_blocking(self._steps())
        except Exception as failure:  # e.g. a user's ignore matcher raised
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return
        if report:
            act_on_report(report, self.options, error)

    async def finish_async(self, error: Optional[BaseException]) -> None:
        """End the block, keeping the running loop turning during the grace period."""
        if skips_check(error):
            return
        try:
            report = await run_async(self._steps())
        except Exception as failure:
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return
        if report:
            act_on_report(report, self.options, error)


# Open blocks per context, so one LeakCheck object can be entered from several
# threads and tasks at once, and nested, without them seeing each other.
_open_blocks: contextvars.ContextVar[Tuple[Tuple[LeakCheck, _Block], ...]] = contextvars.ContextVar(
    "leakcheck_open_blocks", default=()
)


class LeakCheck:
    """A configured leak check, made by :func:`no_leaks`.

    Use it as ``with``, ``async with``, or as a decorator on functions,
    coroutine functions and ``unittest.TestCase`` classes.  It keeps no state
    between uses, so it is reusable and re-entrant.
    """

    def __init__(self, options: Options) -> None:
        self.options = options
        self._probes = enabled_probes(options)
        # Every open block, for a block exited from another context than the one
        # that entered it (an AsyncExitStack closed by another task, say).
        self._entered: List[_Block] = []  # list.append and list.remove are atomic

    def __repr__(self) -> str:
        return f"<LeakCheck {self.options}>"

    def start(self) -> _Block:
        """Take the baseline census for one checked window."""
        return _Block(self.options, self._probes)

    def _push(self) -> None:
        block = self.start()
        _open_blocks.set((*_open_blocks.get(), (self, block)))
        self._entered.append(block)

    def _pop(self) -> _Block:
        blocks = _open_blocks.get()
        for index in range(len(blocks) - 1, -1, -1):
            if blocks[index][0] is self:
                _open_blocks.set(blocks[:index] + blocks[index + 1 :])
                block = blocks[index][1]
                self._entered.remove(block)
                return block
        with contextlib.suppress(IndexError):
            return self._entered.pop()
        raise RuntimeError("leakcheck: exiting a LeakCheck block that was never entered")

    def __enter__(self) -> LeakCheck:
        self._push()
        return self

    def __exit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self._pop().finish(exc)

    async def __aenter__(self) -> LeakCheck:
        self._push()
        return self

    async def __aexit__(
        self,
        exc_type: Optional[Type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        await self._pop().finish_async(exc)

    @overload
    def __call__(self, target: C) -> C: ...

    @overload
    def __call__(self, target: Callable[P, R]) -> Callable[P, R]: ...

    def __call__(self, target: Union[type, Callable[..., Any]]) -> Any:
        return decorate(self, target)


def decorate(check: LeakCheck, target: Any) -> Any:
    if isinstance(target, type):
        from ._unittest import decorate_testcase

        return decorate_testcase(target, check)
    if not callable(target):
        raise TypeError(f"no_leaks decorates functions, coroutine functions and TestCase classes, not {target!r}")
    if inspect.isgeneratorfunction(target) or inspect.isasyncgenfunction(target):
        raise TypeError(
            f"no_leaks cannot decorate the generator function {target.__qualname__}: "
            "its body runs after the call returns; check the code that consumes it instead"
        )
    if inspect.iscoroutinefunction(target):

        @functools.wraps(target)
        async def checked_coroutine(*args: Any, **kwargs: Any) -> Any:
            async with check:
                return await target(*args, **kwargs)

        return _mark_self_checked(checked_coroutine)

    @functools.wraps(target)
    def checked(*args: Any, **kwargs: Any) -> Any:
        with check:
            return target(*args, **kwargs)

    return _mark_self_checked(checked)


_marked_a_function = False


def _mark_self_checked(function: F) -> F:
    global _marked_a_function
    function._leakcheck_self_checked = True  # type: ignore[attr-defined]
    _marked_a_function = True
    return function


def may_have_self_checked_tests() -> bool:
    """Whether any test could be self-checked: lets runners skip looking at every test when none is.

    Functions are marked by :func:`no_leaks` above; classes only by ``leakcheck._unittest``.
    """
    return _marked_a_function or "leakcheck._unittest" in sys.modules


def is_self_checked(target: object) -> bool:
    """Whether ``target`` (a function or class) runs its own check: ``@no_leaks`` or a LeakCheck base class.

    Runners that check every test leave such tests to their own check, with
    their own options, instead of checking them twice.
    """
    return bool(getattr(target, "_leakcheck_self_checked", False))


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
    timeout: float = 1.0,
    ignore: Iterable[MatcherLike] = (),
    forbid: Union[StackPattern, Iterable[StackPattern]] = (),
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
    if (
        threads is True
        and tasks is True
        and type(timeout) is float
        and timeout == 1.0
        and ignore == ()
        and forbid == ()
        and on_leak == "raise"
        and cancel_tasks is False
    ):
        check = _default_check()  # keeps no state, so it can be shared; the common case stays cheap
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
def _default_check() -> LeakCheck:
    return LeakCheck(make_options())


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
