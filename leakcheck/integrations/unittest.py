"""unittest integration: the class decorator and the two base classes.

The checked window of a test runs from before ``setUp`` to after the last
cleanup: the check is registered as the test's *first* cleanup, and cleanups
run last-in first-out, so it runs after ``tearDown`` and every other cleanup.
Raised from a cleanup, a :class:`LeakError` (an ``AssertionError``) is
recorded as a failure of that very test, next to any failure of its own.
For ``IsolatedAsyncioTestCase`` the check is an async cleanup: it runs on the
test's loop before that loop cancels what is left, so pending tasks get their
grace period and are then reported instead of being cancelled silently.
"""

from __future__ import annotations

import unittest
from typing import Any, ClassVar, Dict, Optional, TypeVar

from ..engine.check import LeakCheck, no_leaks
from ..engine.self_checked import mark_self_checked
from ..engine.testcase import start_test_check

T = TypeVar("T", bound=type)

# unittest leaves frames of modules with this global out of failure tracebacks,
# and pytest those with __tracebackhide__: a leak's report is its message,
# leakcheck's own frames would only be noise.
__unittest = True
__tracebackhide__ = True


class _LeakCheckMixin:
    leakcheck_options: ClassVar[Dict[str, Any]] = {}
    """Options for :func:`no_leaks`, checked when the class is defined."""

    _leakcheck: ClassVar[LeakCheck]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._leakcheck = _check_for(cls)
        mark_self_checked(cls)


def _check_for(cls: type) -> LeakCheck:
    options = getattr(cls, "leakcheck_options", {})
    if not isinstance(options, dict):
        raise TypeError(f"{cls.__qualname__}.leakcheck_options must be a dict, not {type(options).__name__}")
    check: LeakCheck = no_leaks(**options)
    return check


class LeakCheckTestCase(_LeakCheckMixin, unittest.TestCase):
    """A ``TestCase`` that fails every test leaving threads or tasks behind.

    The window covers ``setUp``, the test, ``tearDown`` and the cleanups.
    Configure it with the class attribute ``leakcheck_options``.
    """

    def run(self, result: Optional[unittest.TestResult] = None) -> Any:
        start_test_check(self, type(self)._leakcheck.options)
        return super().run(result)


class AsyncLeakCheckTestCase(_LeakCheckMixin, unittest.IsolatedAsyncioTestCase):
    """An ``IsolatedAsyncioTestCase`` that fails tests leaving threads or tasks behind.

    Tasks still pending when the test ends are leaks, where the base class
    would cancel them silently.
    """

    def run(self, result: Optional[unittest.TestResult] = None) -> Any:
        start_test_check(self, type(self)._leakcheck.options)
        return super().run(result)
