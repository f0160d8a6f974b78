"""leakcheck: catch leaked threads, asyncio tasks and other resources, and show their stacks.

The Python counterpart of Go's goleak: record what runs before some code,
compare with what runs after, give stragglers a grace period, and fail with
the full stack of whatever is left.  Importing leakcheck starts no thread,
patches nothing and does not import asyncio or unittest.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .engine.check import LeakCheck, find_leaks, no_leaks
from .engine.matching import (
    BUILTIN_IGNORES,
    Matcher,
    ignore_any_function,
    ignore_created_by,
    ignore_globally,
    ignore_name,
    ignore_top_function,
    use_builtin_ignores,
)
from .engine.snapshot import snapshot
from .kinds.creation import CreationSite
from .kinds.tasks import TaskInfo
from .kinds.threads import ThreadInfo
from .kinds.tracking import TrackCreation, is_tracking_creation, stop_tracking_creation, track_creation
from .records import Frame
from .remote.assertions import assert_no_stack_match, assert_stack_match, find_stacks
from .reporting.report import LeakError, LeakReport, LeakWarning
from .reporting.snapshot import Snapshot

if TYPE_CHECKING:
    from .engine.options import UnknownOption
    from .integrations.pytest_plugin import LeakCheckFixture
    from .integrations.unittest import AsyncLeakCheckTestCase, LeakCheckTestCase
    from .kinds.fds import FdInfo
    from .kinds.os_threads import OsThreadInfo
    from .kinds.probes import Probe, ProbeInfo
    from .kinds.processes import ProcessInfo
    from .remote.agent import start_agent
    from .remote.client import RemoteError, fetch_snapshot
    from .remote.server import StackServer, serve_stacks
    from .remote.web_apps import asgi_app, wsgi_app
    from .reporting.dump import parse_dump

__version__ = "0.1.0"

__all__ = [
    "BUILTIN_IGNORES",
    "AsyncLeakCheckTestCase",
    "CreationSite",
    "FdInfo",
    "Frame",
    "LeakCheck",
    "LeakCheckFixture",
    "LeakCheckTestCase",
    "LeakError",
    "LeakReport",
    "LeakWarning",
    "Matcher",
    "OsThreadInfo",
    "Probe",
    "ProbeInfo",
    "ProcessInfo",
    "RemoteError",
    "Snapshot",
    "StackServer",
    "TaskInfo",
    "ThreadInfo",
    "TrackCreation",
    "UnknownOption",
    "assert_no_stack_match",
    "asgi_app",
    "assert_stack_match",
    "fetch_snapshot",
    "find_leaks",
    "find_stacks",
    "ignore_any_function",
    "ignore_created_by",
    "ignore_globally",
    "ignore_name",
    "ignore_top_function",
    "is_tracking_creation",
    "no_leaks",
    "parse_dump",
    "serve_stacks",
    "snapshot",
    "start_agent",
    "stop_tracking_creation",
    "track_creation",
    "use_builtin_ignores",
    "wsgi_app",
]

# Loaded on first use, so that importing leakcheck stays cheap: the TestCase
# classes need unittest (and, through it, asyncio), the fixture's type needs
# pytest, the remote tools need sockets, and the dump's parser compiles its
# regular expressions.
_LAZY = {
    "FdInfo": "kinds.fds",
    "OsThreadInfo": "kinds.os_threads",
    "Probe": "kinds.probes",
    "ProbeInfo": "kinds.probes",
    "ProcessInfo": "kinds.processes",
    "UnknownOption": "engine.options",
    "AsyncLeakCheckTestCase": "integrations.unittest",
    "LeakCheckTestCase": "integrations.unittest",
    "LeakCheckFixture": "integrations.pytest_plugin",
    "parse_dump": "reporting.dump",
    "StackServer": "remote.server",
    "serve_stacks": "remote.server",
    "wsgi_app": "remote.web_apps",
    "asgi_app": "remote.web_apps",
    "fetch_snapshot": "remote.client",
    "RemoteError": "remote.client",
    "start_agent": "remote.agent",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'leakcheck' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)
