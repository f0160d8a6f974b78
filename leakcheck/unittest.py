"""``python -m leakcheck.unittest``: run a unittest suite with every test checked for leaks.

Takes the arguments of ``python -m unittest`` (``discover``, module names,
``-v``, ``-k``, ...), plus ``--leakcheck-timeout=SECONDS`` and
``--leakcheck-kinds=threads,tasks``.  Each test's window runs from before
``setUp`` to after its last cleanup; a leak is a failure of that test, with
the stacks, and makes the exit status non-zero.  Tests that check themselves
already (``@no_leaks``, ``LeakCheckTestCase``) are not checked twice.
"""

from __future__ import annotations

import argparse
import sys
import unittest
from typing import Any, List, Optional, Sequence, Tuple

from ._check import LeakCheck
from ._options import check_timeout, make_options
from ._unittest import is_self_checked, start_test_check

_PROG = "python -m leakcheck.unittest"
_KINDS = ("threads", "tasks")


class LeakCheckResult(unittest.TextTestResult):
    """A text result that opens each test's leak check as the test starts."""

    check: LeakCheck = LeakCheck(make_options())

    def startTest(self, test: unittest.TestCase) -> None:
        super().startTest(test)
        if isinstance(test, unittest.TestCase) and not is_self_checked(test):
            start_test_check(test, self.check)


def _split_arguments(argv: Sequence[str]) -> Tuple[LeakCheck, List[str]]:
    """Take leakcheck's own options out of ``argv``; the rest is for unittest."""
    parser = argparse.ArgumentParser(prog=_PROG, add_help=False)
    parser.add_argument("--leakcheck-timeout", metavar="SECONDS")
    parser.add_argument("--leakcheck-kinds", metavar="KINDS")
    ours, rest = parser.parse_known_args(argv)
    kinds = {kind: True for kind in _KINDS}
    try:
        timeout = 1.0
        if ours.leakcheck_timeout is not None:
            try:
                number: object = float(ours.leakcheck_timeout)
            except ValueError:
                number = ours.leakcheck_timeout
            timeout = check_timeout(number, "--leakcheck-timeout")
        if ours.leakcheck_kinds is not None:
            names = [name.strip() for name in ours.leakcheck_kinds.split(",") if name.strip()]
            if not names or any(name not in _KINDS for name in names):
                raise ValueError(f"--leakcheck-kinds takes a comma-separated list of {', '.join(_KINDS)}")
            kinds = {kind: kind in names for kind in _KINDS}
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return LeakCheck(make_options(timeout=timeout, **kinds)), rest


def main(argv: Optional[Sequence[str]] = None) -> Any:
    """Run ``python -m unittest`` with ``argv``, every test checked; exits like it."""
    check, rest = _split_arguments(sys.argv[1:] if argv is None else argv)
    result_class = type("LeakCheckResult", (LeakCheckResult,), {"check": check})
    runner = type("LeakCheckRunner", (unittest.TextTestRunner,), {"resultclass": result_class})
    return unittest.main(module=None, argv=[_PROG, *rest], testRunner=runner)


if __name__ == "__main__":
    main()
