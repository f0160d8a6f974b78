"""leakcheck: catch leaked threads and asyncio tasks, and show their stacks.

The Python counterpart of Go's goleak: record what runs before some code,
compare with what runs after, give stragglers a grace period, and fail with
the full stack of whatever is left.  Importing leakcheck starts no thread,
patches nothing and does not import asyncio or unittest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._assertions import assert_no_stack_match, assert_stack_match, find_stacks
from ._check import LeakCheck, find_leaks, no_leaks
from ._matching import (
    BUILTIN_IGNORES,
    Matcher,
    ignore_any_function,
    ignore_globally,
    ignore_name,
    ignore_top_function,
    use_builtin_ignores,
)
from ._model import Frame, Snapshot, TaskInfo, ThreadInfo
from ._report import LeakError, LeakReport, LeakWarning
from ._snapshot import snapshot

if TYPE_CHECKING:
    from ._agent import start_agent
    from ._dump import parse_dump
    from ._pytest_plugin import LeakCheckFixture
    from ._remote import RemoteError, fetch_snapshot
    from ._server import StackServer, serve_stacks
    from ._unittest import AsyncLeakCheckTestCase, LeakCheckTestCase
    from ._web_apps import asgi_app, wsgi_app

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_IGNORES",
    "AsyncLeakCheckTestCase",
    "Frame",
    "LeakCheck",
    "LeakCheckFixture",
    "LeakCheckTestCase",
    "LeakError",
    "LeakReport",
    "LeakWarning",
    "Matcher",
    "RemoteError",
    "Snapshot",
    "StackServer",
    "TaskInfo",
    "ThreadInfo",
    "assert_no_stack_match",
    "asgi_app",
    "assert_stack_match",
    "fetch_snapshot",
    "find_leaks",
    "find_stacks",
    "ignore_any_function",
    "ignore_globally",
    "ignore_name",
    "ignore_top_function",
    "no_leaks",
    "parse_dump",
    "serve_stacks",
    "snapshot",
    "start_agent",
    "use_builtin_ignores",
    "wsgi_app",
]

# Loaded on first use, so that importing leakcheck stays cheap: the TestCase
# classes need unittest (and, through it, asyncio), the fixture's type needs
# pytest, the remote tools need sockets, and the dump's parser compiles its
# regular expressions.
_LAZY = {
    "AsyncLeakCheckTestCase": "_unittest",
    "LeakCheckTestCase": "_unittest",
    "LeakCheckFixture": "_pytest_plugin",
    "parse_dump": "_dump",
    "StackServer": "_server",
    "serve_stacks": "_server",
    "wsgi_app": "_web_apps",
    "asgi_app": "_web_apps",
    "fetch_snapshot": "_remote",
    "RemoteError": "_remote",
    "start_agent": "_agent",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leakcheck' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
