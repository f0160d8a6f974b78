"""Checking ``unittest.TestCase`` tests: a window per test, from before ``setUp`` to after the last cleanup.

The check is registered as the test's *first* cleanup, and cleanups run
last-in first-out, so it runs after ``tearDown`` and every other cleanup.
Raised from a cleanup, a :class:`LeakError` (an ``AssertionError``) is
recorded as a failure of that very test, next to any failure of its own.
For ``IsolatedAsyncioTestCase`` the check is an async cleanup: it runs on the
test's loop before that loop cancels what is left, so pending tasks get their
grace period and are then reported instead of being cancelled silently.

This is the engine's part, used by ``@no_leaks`` on a TestCase class, by
:mod:`leakcheck.integrations.unittest`'s base classes and runner, and by the
pytest plugin for ``IsolatedAsyncioTestCase`` tests.
"""

from __future__ import annotations

import functools
import unittest
from typing import Any, List, Optional, TypeVar

from ..reporting.report import LeakError
from .options import Options
from .self_checked import is_self_checked, mark_self_checked
from .window import Window

T = TypeVar("T", bound=type)

# unittest leaves frames of modules with this global out of failure tracebacks,
# and pytest those with __tracebackhide__: a leak's report is its message,
# leakcheck's own frames would only be noise.
__unittest = True
__tracebackhide__ = True


def _as_test_failure(case: unittest.TestCase, error: LeakError) -> BaseException:
    if isinstance(error, case.failureException):
        return error
    return case.failureException(str(error))


def _finish(case: unittest.TestCase, block: Window) -> None:
    leak = block.finish(None)
    if leak is not None:
        raise _as_test_failure(case, leak)


# An IsolatedAsyncioTestCase runs the check as an async cleanup, on the test's
# loop.  Raised there, the failure's traceback would run through asyncio's
# runner and IsolatedAsyncioTestCase's own frames, which unittest shows.  So the
# async cleanup only keeps the failure, and a plain cleanup, run after it and
# called straight from unittest's doCleanups (see _call_cleanup), raises it.


async def _finish_async(block: Window, found: List[LeakError]) -> None:
    leak = await block.finish_async(None)
    if leak is not None:
        found.append(leak)


def _raise_found(case: unittest.TestCase, found: List[LeakError]) -> None:
    vars(case).pop("_callCleanup", None)  # the last cleanup: unittest's own _callCleanup is back
    if found:
        raise _as_test_failure(case, found[0])


def _call_cleanup(case: unittest.TestCase, function: Any, /, *args: Any, **kwargs: Any) -> None:
    """The test's ``_callCleanup``, except that :func:`_raise_found` is called directly."""
    if function is _raise_found:
        function(*args, **kwargs)
    else:
        type(case)._callCleanup(case, function, *args, **kwargs)  # type: ignore[attr-defined,unused-ignore]


def _is_skipped(case: unittest.TestCase) -> bool:
    method = getattr(case, case._testMethodName, None)
    return bool(getattr(type(case), "__unittest_skip__", False) or getattr(method, "__unittest_skip__", False))


def start_test_check(case: unittest.TestCase, options: Options) -> None:
    """Begin the checked window of one test; it ends after its last cleanup."""
    name = case._testMethodName
    if not (name.startswith("test") or name == "runTest") or _is_skipped(case):
        return
    # A warning names the test method (of the class: the block must not hold the test case).
    block = Window(options, getattr(type(case), name, None))
    if isinstance(case, unittest.IsolatedAsyncioTestCase):
        found: List[LeakError] = []
        case.addCleanup(_raise_found, case, found)  # cleanups run last in, first out: after the check
        case.addAsyncCleanup(_finish_async, block, found)
        case._callCleanup = functools.partial(_call_cleanup, case)  # type: ignore[attr-defined,unused-ignore]
    else:
        case.addCleanup(_finish, case, block)


def checks_itself(case: unittest.TestCase) -> bool:
    """Whether ``case`` runs its own leak check, through its class or its test method."""
    return is_self_checked(type(case)) or is_self_checked(getattr(case, case._testMethodName, None))


def decorate_testcase(cls: T, options: Options) -> T:
    if not issubclass(cls, unittest.TestCase):
        raise TypeError(f"no_leaks decorates unittest.TestCase subclasses, not the class {cls.__qualname__}")
    original_run = cls.run

    def run(self: unittest.TestCase, result: Optional[unittest.TestResult] = None) -> Any:
        start_test_check(self, options)
        return original_run(self, result)

    run.__qualname__ = f"{cls.__qualname__}.run"
    run.__doc__ = original_run.__doc__
    cls.run = run  # type: ignore[method-assign]
    mark_self_checked(cls)
    return cls


