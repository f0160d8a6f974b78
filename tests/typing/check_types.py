"""Static checks of the public API's types, run by ``mypy --strict`` in .ci/run.

Not a test module: pytest does not collect it.  ``assert_type`` fails the
mypy run when a decorator loses a signature or a return type.
"""

from __future__ import annotations

import unittest

from typing_extensions import assert_type

import leakcheck
from leakcheck import LeakCheck, LeakReport, Snapshot, no_leaks


@no_leaks
def plain(a: int, *, b: str = "") -> float:
    return 1.0


@no_leaks(timeout=0.5, on_leak="warn")
def configured(a: int) -> str:
    return str(a)


@no_leaks
async def coroutine(a: int) -> bytes:
    return b""


@no_leaks(tasks=False)
class Tests(unittest.TestCase):
    def test_it(self) -> None: ...


assert_type(plain(1, b="x"), float)
assert_type(configured(1), str)
assert_type(Tests, type[Tests])
assert_type(no_leaks(timeout=1), LeakCheck)
assert_type(leakcheck.snapshot(), Snapshot)
assert_type(leakcheck.find_leaks(leakcheck.snapshot()), LeakReport)


async def uses_coroutine() -> None:
    assert_type(await coroutine(1), bytes)



def on_leak(report: LeakReport) -> None:
    print(report.threads, report.tasks, report.forbidden)


assert_type(no_leaks(on_leak=on_leak), LeakCheck)
