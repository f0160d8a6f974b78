"""``python -m leakcheck.unittest``: run a unittest suite with every test checked for leaks.

Takes the arguments of ``python -m unittest`` (``discover``, module names,
``-v``, ``-k``, ...), plus ``--leakcheck-timeout=SECONDS``,
``--leakcheck-kinds=threads,tasks``, ``--leakcheck-track[=yes|no]`` and
``--version``.  Each test's window
runs from before ``setUp`` to after its last cleanup; a leak is a failure of
that test, with the stacks, and makes the exit status non-zero.  Tests that
check themselves already (``@no_leaks``, ``LeakCheckTestCase``) are not
checked twice.

The command runs from this package's ``__main__`` module.  ``multiprocessing``
imports the main module again in every child it starts with the "spawn"
method, unless the module's name ends in ``.__main__``: so those children
import neither leakcheck nor this runner.  What the runner needs beyond
``unittest`` is imported when it is first used.
"""

from __future__ import annotations

import sys
import unittest
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

from ..engine.check import LeakCheck
from ..engine.options import make_options

if TYPE_CHECKING:
    import argparse

__all__ = ["LeakCheckResult", "main"]

_PROG = "python -m leakcheck.unittest"


class LeakCheckResult(unittest.TextTestResult):
    """A text result that opens each test's leak check as the test starts."""

    check: LeakCheck = LeakCheck(make_options())
    _failed: Optional[unittest.TestCase] = None

    def startTest(self, test: unittest.TestCase) -> None:
        self._failed = None
        super().startTest(test)
        if isinstance(test, unittest.TestCase):
            from ..engine.testcase import (  # brings asyncio, for IsolatedAsyncioTestCase
                checks_itself,
                start_test_check,
            )

            if not checks_itself(test):
                start_test_check(test, self.check.options)

    # A test that fails and then leaks is reported twice (its own failure, then the leak): the
    # text result would print its status line twice. The second is listed at the end, not printed.
    def _first_failure(self, test: unittest.TestCase) -> bool:
        first = test is not self._failed
        self._failed = test
        return first

    def addFailure(self, test: unittest.TestCase, err: Any) -> None:
        if self._first_failure(test):
            super().addFailure(test, err)
        else:
            unittest.TestResult.addFailure(self, test, err)

    def addError(self, test: unittest.TestCase, err: Any) -> None:
        if self._first_failure(test):
            super().addError(test, err)
        else:
            unittest.TestResult.addError(self, test, err)


def _parser() -> argparse.ArgumentParser:
    import argparse

    from .. import __version__
    from ..kinds.registry import default_kinds, flag_kinds

    parser = argparse.ArgumentParser(
        prog=_PROG,
        add_help=False,
        # Only whole options are ours: an abbreviation such as --ver is unittest's (--verbose).
        allow_abbrev=False,
        description="Run a unittest suite with every test checked for leaked threads and asyncio tasks. "
        "Takes the arguments of python -m unittest (below), and these:",
    )
    parser.add_argument("--leakcheck-timeout", metavar="SECONDS", help="grace period (default 1.0)")
    parser.add_argument(
        "--kinds",
        "--leakcheck-kinds",
        dest="leakcheck_kinds",
        metavar="KINDS",
        help=f"what to check, comma-separated: {','.join(flag_kinds())} (default: {','.join(default_kinds())})",
    )
    parser.add_argument(
        "--leakcheck-track",
        metavar="yes|no",
        nargs="?",
        const="yes",
        help="record where each thread, task and process is created, and blame each test only for what it "
        "started (default: what LEAKCHECK_TRACK says, else no)",
    )
    parser.add_argument("--version", action="version", version=f"leakcheck {__version__}")
    return parser


def _split_arguments(argv: Sequence[str]) -> Tuple[LeakCheck, List[str]]:
    """Take leakcheck's own options out of ``argv``; the rest is for unittest."""
    from ..engine.options import parse_kinds, parse_seconds
    from ..kinds.tracking import env_default, parse_flag

    parser = _parser()
    # A bare --leakcheck-track means yes, and must not take unittest's next argument (discover) as its value.
    argv = ["--leakcheck-track=yes" if argument == "--leakcheck-track" else argument for argument in argv]
    ours, rest = parser.parse_known_args(argv)
    options: Dict[str, Any] = {}
    try:
        if ours.leakcheck_timeout is not None:
            options["timeout"] = parse_seconds(ours.leakcheck_timeout, "--leakcheck-timeout")
        if ours.leakcheck_kinds is not None:
            options.update(parse_kinds(ours.leakcheck_kinds, "--leakcheck-kinds (--kinds)"))
        if ours.leakcheck_track is not None:
            options["track_creation"] = parse_flag(ours.leakcheck_track, "--leakcheck-track")
        else:
            from_env = env_default()
            if from_env is not None:
                options["track_creation"] = from_env
    except ValueError as error:
        parser.error(str(error))
    if "-h" in rest or "--help" in rest:
        parser.print_help()
        print()
    return LeakCheck(make_options(options)), rest


def main(argv: Optional[Sequence[str]] = None) -> Any:
    """Run ``python -m unittest`` with ``argv``, every test checked; exits like it."""
    check, rest = _split_arguments(sys.argv[1:] if argv is None else argv)
    result_class = type("LeakCheckResult", (LeakCheckResult,), {"check": check})
    runner = type("LeakCheckRunner", (unittest.TextTestRunner,), {"resultclass": result_class})
    if not check.options.track_creation:
        return unittest.main(module=None, argv=[_PROG, *rest], testRunner=runner)
    from ..kinds import tracking
    from ..kinds.ownership import Owner, set_default_owner

    # On for the whole run; what no test starts (setUpClass, code at import) is the run's, shared: a
    # class's server thread answers to the test whose request left its handler stuck.
    with tracking.track_creation():
        outer = set_default_owner(Owner(None, shared=True))
        try:
            return unittest.main(module=None, argv=[_PROG, *rest], testRunner=runner)
        finally:
            set_default_owner(outer)
