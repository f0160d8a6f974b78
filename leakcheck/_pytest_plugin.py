"""The pytest plugin: ``--leakcheck``, ``@pytest.mark.leakcheck`` and the ``leakcheck`` fixture.

What a check answers for is its *window*.  A test's window opens before its
first fixture is set up and closes after its last fixture is torn down (the
outermost wrappers of the setup and teardown phases), so neither a thread a
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
import dataclasses
import functools
import sys
from typing import Any, Dict, Generator, List, Optional, Sequence, Union

import pytest

from ._assertions import assert_no_stack_match, assert_stack_match, find_stacks
from ._check import LeakCheck, act_on_report, attach_to_error, is_self_checked, skips_check
from ._compare import PROBES, check_steps, enabled_probes, started_since, take_census
from ._matching import MatcherLike, StackPattern, validate_matchers
from ._model import Info, Snapshot
from ._options import Options
from ._probes import Census
from ._pytest_loops import anyio_runner_lease, last_lease, track_runner_loop
from ._pytest_settings import MARKER, MARKER_HELP, Settings, add_options, read_marker, read_settings
from ._report import LeakReport
from ._snapshot import snapshot
from ._tasks import LoopTaskProbe
from ._wait import run_blocking

# How long what a fixture of each scope starts may live; a window answers for
# fixtures up to its own rank and absorbs what broader ones start.
_SCOPE_RANK = {"function": 0, "class": 1, "module": 2, "package": 3, "session": 4}
_TEST, _MODULE, _SESSION = 0, 2, 4
_PLUGIN_NAME = "leakcheck-checks"


class Window:
    """One checked window (a test, a module or the run) and its baseline census.

    A window without options belongs to a test that opted out: it only
    records what the test starts, for the broader windows to absorb.
    """

    def __init__(self, label: str, rank: int, options: Optional[Options]) -> None:
        self.label = label
        self.rank = rank
        self.options = options
        self.probes = enabled_probes(options) if options is not None else PROBES
        self.ignore: List[MatcherLike] = []
        self.early: List[LeakReport] = []
        self.before: Census = take_census(self.probes)

    @property
    def checks_tasks(self) -> bool:
        return self.options is not None and self.options.tasks

    def absorb(self, started: Census) -> None:
        """Make what ``started`` lists part of the baseline: nobody's leak."""
        for option, tokens in started.items():
            if tokens and option in self.before:
                self.before[option] = self.before[option] | tokens

    def started(self) -> Census:
        return started_since(self.before, self.probes)

    def _options(self, **changes: Any) -> Options:
        assert self.options is not None
        if not self.ignore and not changes:
            return self.options
        return dataclasses.replace(self.options, ignore=(*self.options.ignore, *self.ignore), **changes)

    def task_options(self) -> Options:
        """The options for a check of this window's tasks only."""
        return self._options(threads=False, forbid=())

    def check_closing_loop(self, loop: Any) -> None:
        """Check the tasks of ``loop`` before a runner closes it and cancels them."""
        if self.checks_tasks:
            report = run_blocking(check_steps(self.before, self.task_options(), (LoopTaskProbe(loop),)))
            if report:
                self.early.append(report)

    def check(self) -> List[LeakReport]:
        """The window's findings: those made before a loop closed, then the final check."""
        options = self._options()
        if not options.forbid and not any(self.started().values()):
            return list(self.early)  # the common case, kept cheap: nothing new at all
        report = run_blocking(check_steps(self.before, options, self.probes))
        return [*self.early, report] if report else list(self.early)


@dataclasses.dataclass(frozen=True)
class _Plan:
    """How one test is checked: on its own (``options``), not at all, or opted out."""

    options: Optional[Options] = None
    opted_out: bool = False


_Node = Union[pytest.Item, pytest.Collector]
_plan_key = pytest.StashKey[_Plan]()
_window_key = pytest.StashKey[Optional[Window]]()


def _checks_itself(item: pytest.Item) -> bool:
    return is_self_checked(getattr(item, "obj", None)) or is_self_checked(getattr(item, "cls", None))


def _module_node(item: pytest.Item) -> _Node:
    # pytest.File, not Module: doctest files and plugins' own file types count as modules
    return item.getparent(pytest.File) or item


class LeakCheckPlugin:
    """The per-run state: the settings and the windows open right now."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.windows: List[Window] = []  # outermost first
        self._module_options: Dict[str, Optional[Options]] = {}
        self._lease: Optional[contextlib.ExitStack] = None
        self._leased_loop: Optional[Any] = None

    # -- planning: markers are validated at collection, the mistake named there

    def plan(self, item: pytest.Item) -> _Plan:
        plan = item.stash.get(_plan_key, None)
        if plan is None:
            plan = item.stash[_plan_key] = self._make_plan(item)
        return plan

    def _make_plan(self, item: pytest.Item) -> _Plan:
        node, mark = next(iter(item.iter_markers_with_node(MARKER)), (item, None))
        enabled, options = read_marker(mark, self.settings, node.nodeid)
        if enabled is False:
            return _Plan(opted_out=True)
        on_module = mark is not None and isinstance(node, (pytest.Module, pytest.Package))
        asked = (mark is not None and not on_module) or "leakcheck" in getattr(item, "fixturenames", ())
        scope = self.settings.scope
        run_wide = (on_module and scope != "module") or self.settings.enabled
        if not asked and run_wide and _checks_itself(item):
            # @no_leaks or a LeakCheckTestCase: its own check, with its own options, decides.
            return _Plan(opted_out=True)
        wanted = asked or (on_module and scope != "module") or (self.settings.enabled and scope == "test")
        return _Plan(options=options if wanted else None)

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
        for item in items:
            plan = self.plan(item)
            needed = needed or plan.options is not None
            if self.settings.scope == "module":
                needed = self._module_window_options(_module_node(item)) is not None or needed
        if not needed:  # nothing to check in this run: leave every test's hooks alone
            config.pluginmanager.unregister(self)

    # -- windows

    def _window(self, rank: int) -> Optional[Window]:
        return next((window for window in self.windows if window.rank == rank), None)

    def _open(self, item: pytest.Item) -> None:
        settings = self.settings
        if settings.scope == "session" and settings.enabled and self._window(_SESSION) is None:
            self.windows.append(Window("the test session", _SESSION, settings.options({})))
        if settings.scope == "module":
            module = _module_node(item)
            label = f"module {module.nodeid}"
            stale = self._window(_MODULE)
            if stale is not None and stale.label != label:  # its last test never reached teardown
                self.windows.remove(stale)
            options = self._module_window_options(module)
            if options is not None and self._window(_MODULE) is None:
                self.windows.append(Window(label, _MODULE, options))
        plan = self.plan(item)
        window = None
        if plan.options is not None:
            window = Window(item.nodeid, _TEST, plan.options)
        elif plan.opted_out and self.windows:
            window = Window(item.nodeid, _TEST, None)
        if window is not None:
            self.windows.append(window)
        item.stash[_window_key] = window

    def _closing(self, item: pytest.Item, nextitem: Optional[pytest.Item]) -> List[Window]:
        closing = []
        test_window = item.stash.get(_window_key, None)
        if test_window is not None and test_window in self.windows:
            closing.append(test_window)
        module = self._window(_MODULE)
        if module is not None and (nextitem is None or _module_node(nextitem) is not _module_node(item)):
            closing.append(module)
        session = self._window(_SESSION)
        if session is not None and nextitem is None:
            closing.append(session)
        return closing

    def _close(self, item: pytest.Item, nextitem: Optional[pytest.Item], error: Optional[BaseException]) -> None:
        closing = self._closing(item, nextitem)
        for window in closing:
            self.windows.remove(window)
        failures: List[str] = []
        try:
            for window in closing:
                if window.options is None:
                    started = window.started()
                    for broader in (*self.windows, *closing):
                        if broader.rank > window.rank:
                            broader.absorb(started)
                elif not skips_check(error):
                    failures.extend(_finish(window, error))
            if self._leased_loop is not None and last_lease() and not skips_check(error):
                self._closing_loop(self._leased_loop)
        finally:
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

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_setup(self, item: pytest.Item) -> Generator[None, None, None]:
        self._open(item)
        result = yield
        self._watch_unittest_loop(item)
        return result

    def _watch_unittest_loop(self, item: pytest.Item) -> None:
        """Check an IsolatedAsyncioTestCase's tasks before its loop cancels them.

        Its loop lives and dies inside the test call, so the check has to run
        there too: as the test's last async cleanup, like LeakCheckTestCase.
        """
        async_case = sys.modules.get("unittest.async_case")  # not imported: no such test exists
        case = getattr(item, "instance", None) if async_case is not None else None
        if async_case is None or not isinstance(case, async_case.IsolatedAsyncioTestCase):
            return
        window = next((window for window in reversed(self.windows) if window.checks_tasks), None)
        if window is not None:
            from ._unittest import start_test_check

            start_test_check(case, LeakCheck(window.task_options()))

    @pytest.hookimpl(wrapper=True)
    def pytest_fixture_setup(self, fixturedef: Any, request: Any) -> Generator[None, Any, Any]:
        rank = _SCOPE_RANK.get(fixturedef.scope, 0)
        broader = [window for window in self.windows if window.rank < rank]
        before = take_census(PROBES) if broader else None
        try:
            result = yield
        finally:
            if before is not None:
                started = started_since(before, PROBES)
                for window in broader:
                    window.absorb(started)
        loop = track_runner_loop(result)
        if loop is not None:
            # Runs after the fixtures using the loop are torn down, before the loop is closed.
            fixturedef.addfinalizer(functools.partial(self._closing_loop, loop))
        return result

    @pytest.hookimpl(wrapper=True)
    def pytest_pyfunc_call(self, pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
        if self._lease is None and any(window.checks_tasks for window in self.windows):
            lease = anyio_runner_lease(pyfuncitem)
            if lease is not None:
                stack = contextlib.ExitStack()
                self._leased_loop = stack.enter_context(lease)
                self._lease = stack
        return (yield)

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
        self.windows.clear()
        self._release_lease()


def _finish(window: Window, error: Optional[BaseException]) -> List[str]:
    """Check a closing window and do what ``on_leak`` says; the texts that fail the test."""
    assert window.options is not None
    try:
        reports = window.check()
    except Exception as failure:  # e.g. a user's ignore matcher raised
        if error is None:
            raise
        attach_to_error(error, f"leakcheck could not complete its check: {failure!r}")
        return []
    failures = []
    for report in reports:
        if window.options.on_leak == "raise" and error is None:
            failures.append(str(report).replace("leakcheck: ", f"leakcheck: {window.label}: ", 1))
        else:
            act_on_report(report, window.options, error)
    return failures


class LeakCheckFixture:
    """What the ``leakcheck`` fixture gives a test: its check, and keyword assertions."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self._windows = [window for window in windows if window.options is not None]

    def snapshot(self) -> Snapshot:
        """Every live thread and task, with stacks: :func:`leakcheck.snapshot`."""
        return snapshot()

    def find_stacks(self, *patterns: StackPattern) -> List[Info]:
        """Live threads and tasks whose stacks match: :func:`leakcheck.find_stacks`."""
        return find_stacks(*patterns)

    def assert_no_stack_match(self, *patterns: StackPattern, timeout: float = 0.0) -> None:
        """:func:`leakcheck.assert_no_stack_match`."""
        assert_no_stack_match(*patterns, timeout=timeout)

    def assert_stack_match(self, *patterns: StackPattern, timeout: float = 0.0) -> List[Info]:
        """:func:`leakcheck.assert_stack_match`."""
        return assert_stack_match(*patterns, timeout=timeout)

    def ignore(self, *matchers: MatcherLike) -> None:
        """Never report what ``matchers`` match in the checks this test is part of.

        That is the test's own check and, under ``--leakcheck-scope=module``
        or ``session``, the module's or the run's.
        """
        checked = validate_matchers(matchers, "leakcheck.ignore")
        for window in self._windows:
            window.ignore.extend(checked)


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
