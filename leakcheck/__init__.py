"""leakcheck: catch leaked threads and asyncio tasks, and show their stacks.

The Python counterpart of Go's goleak: record what runs before some code,
compare with what runs after, give stragglers a grace period, and fail with
the full stack of whatever is left.  Importing leakcheck starts no thread,
patches nothing and does not import asyncio or unittest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._assertions import assert_no_stack_match, assert_stack_match, find_stacks
from ._check import LeakCheck, find_leaks, no_leaks
from ._matching import Matcher, ignore_any_function, ignore_globally, ignore_name, ignore_top_function
from ._model import Frame, Snapshot, TaskInfo, ThreadInfo
from ._report import LeakError, LeakReport, LeakWarning
from ._snapshot import snapshot

if TYPE_CHECKING:
    from ._dump import parse_dump
    from ._pytest_plugin import LeakCheckFixture
    from ._unittest import AsyncLeakCheckTestCase, LeakCheckTestCase

__version__ = "0.1.0"

__all__ = [
    "AsyncLeakCheckTestCase",
    "Frame",
    "LeakCheck",
    "LeakCheckFixture",
    "LeakCheckTestCase",
    "LeakError",
    "LeakReport",
    "LeakWarning",
    "Matcher",
    "Snapshot",
    "TaskInfo",
    "ThreadInfo",
    "assert_no_stack_match",
    "assert_stack_match",
    "find_leaks",
    "find_stacks",
    "ignore_any_function",
    "ignore_globally",
    "ignore_name",
    "ignore_top_function",
    "no_leaks",
    "parse_dump",
    "snapshot",
]

_UNITTEST_NAMES = ("LeakCheckTestCase", "AsyncLeakCheckTestCase")


def __getattr__(name: str) -> Any:
    # The TestCase classes need unittest (and, through it, asyncio), the
    # fixture's type needs pytest: load them only for the programs that use them.
    if name in _UNITTEST_NAMES:
        from . import _unittest

        return getattr(_unittest, name)
    if name == "parse_dump":  # its regular expressions are compiled on first use, not by every import
        from ._dump import parse_dump

        return parse_dump
    if name == "LeakCheckFixture":
        from ._pytest_plugin import LeakCheckFixture

        return LeakCheckFixture
    raise AttributeError(f"module 'leakcheck' has no attribute {name!r}")
