"""The pytest plugin: ``--leakcheck``, ``@pytest.mark.leakcheck`` and the ``leakcheck`` fixture.

What a check answers for is its *window*.  A test's window opens before its
first fixture is set up and closes after its last fixture is torn down (the
first setup hook and the outermost teardown wrapper), so neither a thread a
fixture starts and stops, nor one the test starts and a fixture's teardown
stops, is a leak.  Whatever a class-, module-, package- or session-scoped
fixture starts while it is set up is *absorbed*: added to the baseline of
every narrower open window, so the test that happened to trigger the setup is
not blamed.  A test that opts out with ``enabled=False`` is absorbed the same
way into module and session windows.

Module and session scopes open one window per module, or for the run, and
close it in the teardown of its last test, after the broader fixtures are
gone.  A leak fails the teardown of that test with the report as message: it
shows as an error next to the test's own outcome and never hides it.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import sys
from typing import Any, Dict, Generator, List, Optional, Sequence, Tuple, Union, cast

import pytest

from ..engine.compare import check_steps, started_since, take_census
from ..engine.matching import (
    MatcherLike,
    ignore_any_function,
    ignore_created_by,
    ignore_name,
    ignore_top_function,
    validate_matchers,
)
from ..engine.options import Options
from ..engine.self_checked import is_self_checked, may_have_self_checked_tests
from ..engine.snapshot import snapshot
from ..engine.wait import run_blocking
from ..engine.window import Location, Window, skips_check
from ..kinds import tracking
from ..kinds.base import Census, Kind
from ..kinds.ownership import Owner, enter_owner, exit_owner, set_default_owner
from ..kinds.tasks import KIND as TASKS
from ..kinds.tasks import LoopTaskKind
from ..remote.assertions import assert_no_stack_match, assert_stack_match, find_stacks
from .pytest_loops import anyio_runner_lease, last_lease, track_runner_loop
from .pytest_settings import (
    MARKER,
    MARKER_HELP,
    Settings,
    add_options,
    read_marker,
    read_settings,
    unused_settings_warning,
)

# How long what a fixture of each scope starts may live; a window answers for
# fixtures up to its own rank and absorbs what broader ones start.
_SCOPE_RANK = {"function": 0, "class": 1, "module": 2, "package": 3, "session": 4}
_TEST, _MODULE, _SESSION = 0, 2, 4
_PLUGIN_NAME = "leakcheck-checks"
_Node = Union[pytest.Item, pytest.Collector]


class ScopeWindow(Window):
    """The checked window of a test, a module or the run: the core's :class:`Window` and the node it answers for.

    A window that is not ``checked`` belongs to a test that opted out: it
    only records what the test starts, for the broader windows to absorb.
    """

    __slots__ = ("checked", "node", "rank")

    def __init__(self, node: _Node, rank: int, options: Options, checked: bool = True) -> None:
        super().__init__(options)
        self.node = node
        self.rank = rank
        self.checked = checked

    @property
    def label(self) -> str:
        """What the window answers for, as its report names it."""
        if self.rank == _SESSION:
            return "the test session"
        return f"module {self.node.nodeid}" if self.rank == _MODULE else self.node.nodeid

    @property
    def checks_tasks(self) -> bool:
        return self.checked and self.options.checks(TASKS.name)

    def task_options(self) -> Options:
        """The options for a check of this window's tasks only (and of no stack pattern)."""
        task_kinds = tuple(kind for kind in self.kinds if kind.name == TASKS.name)
        return self.effective_options()._replace(kinds=task_kinds, forbid=())

    def check_closing_loop(self, loop: Any) -> None:
        """Check the tasks of ``loop`` before a runner closes it and cancels them."""
        if self.checks_tasks:
            options = self.task_options()._replace(kinds=(LoopTaskKind(loop),))
            report = run_blocking(check_steps(self.before, options, self.tracked))
            if report:
                self.early += (report,)

    def is_clean(self) -> bool:
        return self.checked and super().is_clean()


class _OptedOut:
    """The plan of a test that opted out: it only records what it starts, for broader windows to absorb."""


_OPTED_OUT = _OptedOut()
_Plan = Union[Options, _OptedOut, None]
"""How one test is checked: with these options, opted out, or not at all (``None``)."""


def _class_of(item: pytest.Item) -> Optional[type]:
    # Not item.cls, which walks every parent up to the session; and not
    # isinstance(), which Node, an abc.ABC, routes through Python code.
    parent = item.parent
    return parent.obj if pytest.Class in type(parent).__mro__ else None  # type: ignore[union-attr]


def _checks_itself(item: pytest.Item) -> bool:
    return is_self_checked(getattr(item, "obj", None)) or is_self_checked(_class_of(item))


def _module_node(item: pytest.Item) -> _Node:
    # pytest.File, not Module: doctest files and plugins' own file types count as modules
    return item.getparent(pytest.File) or item


class LeakCheckPlugin:
    """The per-run state: the settings and the windows open right now.

    At most one window of each rank is open at a time, so each has a slot of
    its own: the hooks that run for every test look at three attributes, not
    at a list.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.session_window: Optional[ScopeWindow] = None
        self.module_window: Optional[ScopeWindow] = None
        self.test_window: Optional[ScopeWindow] = None
        self._module_options: Dict[str, Optional[Options]] = {}
        # Keyed by id(): hashing a node runs Python code.  Each entry keeps its
        # node, so an id is never taken for another node's; cleared at the end.
        self._plans: Dict[int, Tuple[pytest.Item, _Plan]] = {}
        self._closest_marks: Dict[int, Tuple[_Node, _Node, Optional[pytest.Mark]]] = {}
        # Every test is checked with the run's options unless a marker says
        # otherwise: plans are worked out and kept only for marked tests.
        self._uniform = False
        self._lease: Optional[contextlib.ExitStack] = None
        self._leased_loop: Optional[Any] = None
        self._tracking = False  # holds creation tracking on for the whole run
        self._run_owner: Optional[Owner] = None
        self._outer_owner: Optional[Owner] = None

    @property
    def windows(self) -> List[ScopeWindow]:
        """The open windows, outermost first."""
        return [window for window in (self.session_window, self.module_window, self.test_window) if window]

    # -- planning: markers are validated at collection, the mistake named there

    def plan(self, item: pytest.Item) -> _Plan:
        entry = self._plans.get(id(item))
        if entry is not None and entry[0] is item:
            return entry[1]
        if self._uniform and self._closest_mark(item)[1] is None:
            return self.settings.default_options
        plan = self._make_plan(item)
        self._plans[id(item)] = (item, plan)
        return plan

    def _closest_mark(self, node: _Node) -> Tuple[_Node, Optional[pytest.Mark]]:
        """The closest ``leakcheck`` marker of ``node`` and its parents, and the node that has it.

        What a collector's chain says is worked out once, not for each of its tests.
        """
        for mark in node.own_markers:
            if mark.name == MARKER:
                return node, mark
        parent = cast(Optional[_Node], node.parent)  # a collector, typed as Node by some pytest versions
        if parent is None:
            return node, None
        entry = self._closest_marks.get(id(parent))
        if entry is None or entry[0] is not parent:
            entry = self._closest_marks[id(parent)] = (parent, *self._closest_mark(parent))
        return entry[1], entry[2]

    def _make_plan(self, item: pytest.Item) -> _Plan:
        node, mark = self._closest_mark(item)
        if mark is None:
            enabled, options = None, self.settings.default_options
        else:
            enabled, options = read_marker(mark, self.settings, node.nodeid)
        if enabled is False:
            return _OPTED_OUT
        on_module = mark is not None and isinstance(node, (pytest.Module, pytest.Package))
        asked = (mark is not None and not on_module) or "leakcheck" in getattr(item, "fixturenames", ())
        scope = self.settings.scope
        run_wide = (on_module and scope != "module") or self.settings.enabled
        if not asked and run_wide and may_have_self_checked_tests() and _checks_itself(item):
            # @no_leaks or a LeakCheckTestCase: its own check, with its own options, decides.
            return _OPTED_OUT
        wanted = asked or (on_module and scope != "module") or (self.settings.enabled and scope == "test")
        return options if wanted else None

    def _module_window_options(self, module: _Node) -> Optional[Options]:
        if module.nodeid not in self._module_options:
            mark = module.get_closest_marker(MARKER)
            enabled, options = read_marker(mark, self.settings, module.nodeid)
            wanted = enabled if enabled is not None else self.settings.enabled
            self._module_options[module.nodeid] = options if wanted else None
        return self._module_options[module.nodeid]

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config: pytest.Config, items: Sequence[pytest.Item]) -> None:
        needed = self.settings.enabled
        by_module = self.settings.scope == "module"
        # Tests only opt out of a --leakcheck run by a marker or by checking themselves.
        self._uniform = needed and self.settings.scope == "test" and not may_have_self_checked_tests()
        anyio_tests = False
        anyio_loaded = config.pluginmanager.has_plugin("anyio")
        for item in items:
            plan = self.plan(item)  # validates the marker, if any: the mistake is named at collection
            needed = needed or isinstance(plan, Options)
            if by_module:
                needed = self._module_window_options(_module_node(item)) is not None or needed
            if anyio_loaded and not anyio_tests:
                anyio_tests = "anyio_backend" in getattr(item, "fixturenames", ())
        async_cases = "unittest.async_case" in sys.modules and any(map(_is_async_case, items))
        if not needed:  # nothing to check in this run: leave every test's hooks alone
            config.pluginmanager.unregister(self)
            warning = unused_settings_warning(self.settings, config)
            if warning is not None:
                try:
                    config.issue_config_time_warning(pytest.PytestConfigWarning(warning), stacklevel=2)
                except pytest.PytestConfigWarning:  # -W error: a usage error, rather than an internal error
                    raise pytest.UsageError(warning) from None
            return
        if self.settings.default_options.track_creation:
            # On for the whole run, not test by test: fixtures and teardown between tests are seen too.
            # What no test starts (broader fixtures, code at import) is the run's: shared, so a
            # session server's handler threads are blamed on the test whose request left them stuck.
            tracking.acquire()
            self._tracking = True
            self._run_owner = Owner(None, shared=True)
            self._outer_owner = set_default_owner(self._run_owner)  # a run inside a run gives it back
        # Hooks that only some tests need are registered only when such tests exist.
        if anyio_tests:
            config.pluginmanager.register(_AnyioLease(self), f"{_PLUGIN_NAME}-anyio")
        if async_cases:
            config.pluginmanager.register(_AsyncCaseCheck(self), f"{_PLUGIN_NAME}-asyncio-testcase")

    # -- windows

    def _open(self, item: pytest.Item) -> None:
        settings = self.settings
        if settings.scope == "session":
            if settings.enabled and self.session_window is None:
                self.session_window = ScopeWindow(item.session, _SESSION, settings.default_options)
        elif settings.scope == "module":
            self._open_module_window(item)
        plan = self.plan(item)
        if isinstance(plan, Options):
            self.test_window = ScopeWindow(item, _TEST, plan)
        elif plan is _OPTED_OUT and (self.session_window or self.module_window):
            self.test_window = ScopeWindow(item, _TEST, self.settings.default_options, checked=False)
        else:
            self.test_window = None

    def _open_module_window(self, item: pytest.Item) -> None:
        module = _module_node(item)
        if self.module_window is not None and self.module_window.node is not module:
            self.module_window.drop()
            self.module_window = None  # its last test never reached teardown
        if self.module_window is None:
            options = self._module_window_options(module)
            if options is not None:
                self.module_window = ScopeWindow(module, _MODULE, options)

    def _take_closing(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> List[ScopeWindow]:
        """Empty the slots of the windows that close after ``item``: innermost first."""
        closing = []
        if self.test_window is not None:
            closing.append(self.test_window)
            self.test_window = None
        if self.module_window is not None and (nextitem is None or _module_node(nextitem) is not _module_node(item)):
            closing.append(self.module_window)
            self.module_window = None
        if self.session_window is not None and nextitem is None:
            closing.append(self.session_window)
            self.session_window = None
        return closing

    def _close(self, item: pytest.Item, nextitem: Optional[pytest.Item], error: Optional[BaseException]) -> None:
        window = self.test_window
        if (
            window is not None
            and error is None
            and self.module_window is None
            and self.session_window is None
            and self._lease is None
            and window.is_clean()
        ):
            self.test_window = None  # the common case, kept cheap: a clean test, nothing else to close
            window.drop()
            return
        closing = self._take_closing(item, nextitem)
        failures: List[str] = []
        try:
            if self._lease is not None:
                # The tasks of the leased runner's loop are checked while it still holds them; then the
                # runner may close the loop, and what it holds (descriptors, reaped children) goes with it.
                if self._leased_loop is not None and last_lease() and not skips_check(error):
                    for window in closing:
                        window.check_closing_loop(self._leased_loop)
                    self._closing_loop(self._leased_loop)  # and for the broader windows that stay open
                self._release_lease()
            for window in closing:
                if not window.checked:
                    started = window.started()
                    window.drop()
                    for broader in (*self.windows, *closing):
                        if broader.rank > window.rank:
                            broader.absorb(started)
                elif not skips_check(error):
                    failures.extend(_finish(window, error, item))
                else:
                    window.drop()
        finally:
            if self._lease is not None:
                self._release_lease()
        if failures and error is None:
            pytest.fail("\n\n".join(failures), pytrace=False)

    def _release_lease(self) -> None:
        lease, self._lease, self._leased_loop = self._lease, None, None
        if lease is not None:
            lease.close()

    def _closing_loop(self, loop: Any) -> None:
        for window in reversed(self.windows):
            window.check_closing_loop(loop)

    # -- hooks

    # Not a wrapper: pluggy's wrappers cost more than the check itself.  Plain
    # and tryfirst, it still runs before the setup of any fixture.
    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        self._open(item)

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
        rank = _SCOPE_RANK.get(fixturedef.scope, 0)
        broader = [window for window in self.windows if window.rank < rank] if rank else ()
        # A broader fixture's resources are the run's, not the test's that happens to set it up, nor
        # the test's that happens to be the last one using it when it is torn down.
        teardown = _BroaderFixtureCode(self, rank) if rank else None
        if teardown is not None:
            fixturedef.addfinalizer(teardown.end)  # finalizers run last added first: after the fixture's own
        entered = _BroaderFixtureCode(self, rank) if broader else None
        if entered is not None:
            entered.begin()
        try:
            result = yield
        finally:
            if entered is not None:
                entered.end()
            if teardown is not None:
                fixturedef.addfinalizer(teardown.begin)  # before the fixture's own teardown
        loop = track_runner_loop(result)
        if loop is not None:
            # Runs after the fixtures using the loop are torn down, before the loop is closed.
            fixturedef.addfinalizer(functools.partial(self._closing_loop, loop))
        return result

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> Generator[None, Any, Any]:
        try:
            result = yield
        except BaseException as error:
            self._close(item, nextitem, error)
            raise
        self._close(item, nextitem, None)
        return result

    def pytest_sessionfinish(self) -> None:
        # A run stopped early (-x, --maxfail, Ctrl-C) never reached its last teardown.
        for window in self.windows:
            window.drop()
        self.session_window = self.module_window = self.test_window = None
        self._plans.clear()
        self._closest_marks.clear()
        self._release_lease()
        if self._tracking:
            self._tracking = False
            set_default_owner(self._outer_owner)
            tracking.release()


class _BroaderFixtureCode:
    """The setup or teardown of a fixture broader than the test it runs for: what it starts is not the test's.

    The windows narrower than the fixture take it into their baseline, and, with creation tracking, it
    is started for the run, as code outside every test is.
    """

    __slots__ = ("_before", "_kinds", "_owned", "_plugin", "_rank", "_windows")

    def __init__(self, plugin: LeakCheckPlugin, rank: int) -> None:
        self._plugin = plugin
        self._rank = rank
        self._windows: List[ScopeWindow] = []
        self._kinds: Tuple[Kind, ...] = ()
        self._before: Optional[Census] = None
        self._owned: Optional[contextvars.Token[Optional[Owner]]] = None

    def begin(self) -> None:
        self._windows = [window for window in self._plugin.windows if window.rank < self._rank]
        if not self._windows:
            return
        self._kinds = tuple({kind: None for window in self._windows for kind in window.kinds})
        self._before = take_census(self._kinds)
        run_owner = self._plugin._run_owner
        self._owned = enter_owner(run_owner) if run_owner is not None else None

    def end(self) -> None:
        before, self._before = self._before, None
        owned, self._owned = self._owned, None
        if owned is not None:
            exit_owner(owned)
        if before is not None:
            started = started_since(before, self._kinds)
            for window in self._windows:
                window.absorb(started)


class _AnyioLease:
    """Keeps anyio's runner open until the check of a test's tasks is done.

    anyio closes its runner, cancelling whatever tasks are left, as soon as
    the last test or fixture using it is finished: before teardown's check.
    """

    def __init__(self, plugin: LeakCheckPlugin) -> None:
        self._plugin = plugin

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        plugin = self._plugin
        if plugin._lease is None and any(window.checks_tasks for window in plugin.windows):
            lease = anyio_runner_lease(pyfuncitem)
            if lease is not None:
                stack = contextlib.ExitStack()
                plugin._leased_loop = stack.enter_context(lease)
                plugin._lease = stack
        return (yield)


class _AsyncCaseCheck:
    """Checks an IsolatedAsyncioTestCase's tasks before its loop cancels them.

    Its loop lives and dies inside the test call, so the check has to run
    there too: as the test's last async cleanup, like LeakCheckTestCase.
    """

    def __init__(self, plugin: LeakCheckPlugin) -> None:
        self._plugin = plugin

    @pytest.hookimpl(trylast=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> None:
        case = getattr(item, "instance", None)  # made by the setup that ran before this hook
        if not _is_async_case(item) or case is None:
            return
        window = next((window for window in reversed(self._plugin.windows) if window.checks_tasks), None)
        if window is not None:
            from ..engine.testcase import start_test_check

            start_test_check(case, window.task_options())


def _is_async_case(item: pytest.Item) -> bool:
    async_case = sys.modules.get("unittest.async_case")  # not imported: no such test exists
    if async_case is None:
        return False
    cls = _class_of(item)
    return isinstance(cls, type) and issubclass(cls, async_case.IsolatedAsyncioTestCase)


def _location(window: ScopeWindow, item: pytest.Item) -> Optional[Location]:
    """What a warning about ``window`` points at: its test function, its module, or (the run) the last test."""
    node = item if window.rank == _SESSION else window.node
    try:
        path, lineno, _ = getattr(node, "reportinfo", item.reportinfo)()
    except Exception:  # a plugin's own kind of node
        return None
    module = getattr(getattr(node, "module", None), "__name__", None)
    return str(path), (lineno or 0) + 1, module if isinstance(module, str) else None


def _finish(window: ScopeWindow, error: Optional[BaseException], item: pytest.Item) -> List[str]:
    """Check a closing window and do what ``on_leak`` says; the texts that fail the test.

    The test is gone: a warning points at its code (see ``_location``), not at pytest's hook that called this.
    """
    assert window.checked
    reports = window.close(error, _location(window, item))
    return [str(report).replace("leakcheck: ", f"leakcheck: {window.label}: ", 1) for report in reports]


class LeakCheckFixture:
    """What the ``leakcheck`` fixture gives a test: its check, keyword assertions and matchers.

    The fixture's name hides the module ``leakcheck`` inside the test, so what
    a test calls there as ``leakcheck.X`` is here too, the same functions:
    :func:`~leakcheck.snapshot`, :func:`~leakcheck.find_stacks`, the keyword
    assertions (``source=`` included) and the matchers for :meth:`ignore`.
    """

    snapshot = staticmethod(snapshot)
    find_stacks = staticmethod(find_stacks)
    assert_no_stack_match = staticmethod(assert_no_stack_match)
    assert_stack_match = staticmethod(assert_stack_match)
    ignore_name = staticmethod(ignore_name)
    ignore_top_function = staticmethod(ignore_top_function)
    ignore_any_function = staticmethod(ignore_any_function)
    ignore_created_by = staticmethod(ignore_created_by)

    def __init__(self, windows: Sequence[ScopeWindow]) -> None:
        self._windows = [window for window in windows if window.checked]

    def ignore(self, *matchers: MatcherLike) -> None:
        """Never report what ``matchers`` match in the checks this test is part of.

        That is the test's own check and, under ``--leakcheck-scope=module``
        or ``session``, the module's or the run's.
        """
        checked = validate_matchers(matchers, "leakcheck.ignore")
        for window in self._windows:
            window.ignore += checked


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.pluginmanager.register(LeakCheckPlugin(read_settings(config)), _PLUGIN_NAME)


@pytest.fixture
def leakcheck(request: pytest.FixtureRequest) -> LeakCheckFixture:
    """Check this test for leaked threads and tasks; assert on live stacks."""
    plugin = request.config.pluginmanager.get_plugin(_PLUGIN_NAME)
    return LeakCheckFixture(plugin.windows if isinstance(plugin, LeakCheckPlugin) else ())
