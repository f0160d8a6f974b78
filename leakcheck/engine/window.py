"""The checked window: a baseline census when it opens, a check when it closes.

``no_leaks`` (each ``with`` block and each decorated call), the unittest
integration (each test) and the pytest plugin (each test, module or run)
all check through :class:`Window`.  What to do with a leak (raise, warn,
call back) and how a report joins an exception already in flight are
decided here, once.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from typing import List, Optional, Sequence, Tuple

from ..kinds import tracking
from ..kinds.base import Census, Kind
from ..kinds.ownership import Owner, Scope, close_scope, lost_mark, lost_since, open_scope
from ..reporting.report import LeakError, LeakReport, LeakWarning
from .compare import anything_started, check_steps, started_since, take_census
from .matching import MatcherLike
from .options import Options, tracks_creation
from .wait import Steps, run_async, run_blocking

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


def act_on_report(report: LeakReport, options: Options, error: Optional[BaseException], where: object = None) -> bool:
    """Do what ``on_leak`` says with a non-empty report.

    Returns whether the caller must raise it (``on_leak="raise"`` and no
    exception in flight): raised by the outermost leakcheck frame, its
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
        return True
    elif callable(on_leak):
        on_leak(report)
    return False


class Tracked:
    """A check's creation tracking: tracking held on, and for a block, its ownership.

    ``owner`` is ``None`` for a check that is no block (``find_leaks``): it
    blames whatever is new, and only shows where it was created.  ``mark``
    dates what vanished without ending (a pending task collected as garbage).
    """

    __slots__ = ("__weakref__", "_held", "mark", "scope")

    def __init__(self, block: bool = True) -> None:
        tracking.acquire()  # before the census: what the block starts must find the hooks in place
        self._held = True
        self.scope: Optional[Scope] = open_scope() if block else None
        self.mark = lost_mark()

    def __del__(self) -> None:
        # A block that never ended (a generator abandoned inside it), or a snapshot's tracking let go.
        try:
            if self.scope is not None and self.scope.owner.open:
                close_scope(self.scope, here=False)
            if self._held:
                self._held = False
                tracking.release_soon()
        except Exception:  # at interpreter shutdown, modules may be half torn down
            pass

    @property
    def owner(self) -> Optional[Owner]:
        return self.scope.owner if self.scope is not None else None

    def end_block(self) -> None:
        """The block's code has ended: it owns nothing started from now on."""
        if self.scope is not None and self.scope.owner.open:
            close_scope(self.scope)

    def release(self) -> None:
        """The check is over: end the block, and let tracking go off if nothing else uses it."""
        self.end_block()
        if self._held:
            self._held = False
            tracking.release()


class Window:
    """One checked window and its baseline census.

    ``ignore`` and ``early`` let an integration add to a window while it is
    open: matchers from a fixture, and reports of checks made before the
    window closed (the tasks of a loop about to be closed).  With creation
    tracking (``tracked``), the window is a block that owns what it starts.
    """

    __slots__ = ("before", "early", "ignore", "kinds", "options", "tracked", "where")

    def __init__(self, options: Options, where: object = None, kinds: Optional[Tuple[Kind, ...]] = None) -> None:
        self.options = options
        self.kinds = options.kinds if kinds is None else kinds
        self.where = where
        """The checked code, for a warning that cannot point at a caller (see :func:`warn_about`)."""
        self.ignore: Tuple[MatcherLike, ...] = ()
        self.early: Tuple[LeakReport, ...] = ()
        self.tracked: Optional[Tracked] = Tracked() if tracks_creation(options) else None
        try:
            self.before: Census = take_census(self.kinds)
        except BaseException:
            self.drop()
            raise

    def absorb(self, started: Census) -> None:
        """Make what ``started`` lists part of the baseline: nobody's leak."""
        for name, tokens in started.items():
            if tokens and name in self.before:
                self.before[name] = self.before[name] | tokens

    def started(self) -> Census:
        """What is alive now that the baseline did not list."""
        return started_since(self.before, self.kinds)

    def effective_options(self) -> Options:
        """The window's options, with the matchers added while it was open."""
        if not self.ignore:
            return self.options
        return self.options._replace(ignore=(*self.options.ignore, *self.ignore))

    def is_clean(self) -> bool:
        """Whether a check would find nothing, judged cheaply: nothing new at all, nothing forbidden, nothing lost."""
        return (
            not self.early
            and not self.options.forbid
            and not anything_started(self.before, self.kinds)
            and (self.tracked is None or not lost_since(self.tracked.mark))
        )

    def steps(self, options: Optional[Options] = None) -> Steps[LeakReport]:
        """The check, to be run blocking or async; a window is checked once, so the baseline goes with it."""
        before, self.before = self.before, {}
        options = self.effective_options() if options is None else options
        if options.kinds is not self.kinds:
            options = options._replace(kinds=self.kinds)
        return check_steps(before, options, self.tracked)

    def check(self) -> List[LeakReport]:
        """The findings: those made before the window closed, then the final check's (blocking)."""
        self.end_block()
        try:
            if self.is_clean():
                self.before = {}
                return []
            report = run_blocking(self.steps())
        finally:
            self.release()
        return [*self.early, report] if report else list(self.early)

    async def check_async(self) -> List[LeakReport]:
        """As :meth:`check`, keeping the running event loop turning during the grace period."""
        self.end_block()
        try:
            if self.is_clean():
                self.before = {}
                return []
            report = await run_async(self.steps())
        finally:
            self.release()
        return [*self.early, report] if report else list(self.early)

    def end_block(self) -> None:
        """The checked code has ended: with tracking, the window owns nothing started from now on."""
        if self.tracked is not None:
            self.tracked.end_block()

    def release(self) -> None:
        """Let go of tracking, once the window is checked or given up."""
        if self.tracked is not None:
            self.tracked.release()

    def close(self, error: Optional[BaseException], where: object = None) -> List[LeakReport]:
        """Check the window, blocking; do what ``on_leak`` says; the reports the caller must raise.

        ``error`` is the exception in flight, if any: the reports are added
        to it, never raised instead of it (see :func:`act_on_report`).
        """
        if skips_check(error):
            self.drop()
            return []
        try:
            reports = self.check()
        except Exception as failure:  # e.g. a user's ignore matcher raised
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return []
        return self._act(reports, error, where)

    async def close_async(self, error: Optional[BaseException], where: object = None) -> List[LeakReport]:
        """As :meth:`close`, keeping the running event loop turning during the grace period."""
        if skips_check(error):
            self.drop()
            return []
        try:
            reports = await self.check_async()
        except Exception as failure:
            if error is None:
                raise
            attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
            return []
        return self._act(reports, error, where)

    def _act(self, reports: Sequence[LeakReport], error: Optional[BaseException], where: object) -> List[LeakReport]:
        where = self.where if where is None else where
        return [report for report in reports if act_on_report(report, self.options, error, where)]

    def drop(self) -> None:
        """Give the window up unchecked: let go of its census and of tracking."""
        self.before = {}
        self.release()

    # no_leaks' blocks

    def finish(self, error: Optional[BaseException]) -> Optional[LeakError]:
        """Close the window, blocking; the :class:`LeakError` to raise, if any."""
        to_raise = self.close(error)
        return LeakError(to_raise[0]) if to_raise else None

    async def finish_async(self, error: Optional[BaseException]) -> Optional[LeakError]:
        """Close the window, keeping the running loop turning; the :class:`LeakError` to raise, if any."""
        to_raise = await self.close_async(error)
        return LeakError(to_raise[0]) if to_raise else None
