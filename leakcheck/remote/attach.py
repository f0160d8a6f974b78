"""Reading the stacks of a running CPython 3.14+ process that has no agent: ``sys.remote_exec`` (PEP 768).

Attach, dump, detach:

1. A private directory (mode 0700, made here) gets a FIFO and a script, both
   mode 0600: nothing another user could have written is ever run.
2. ``sys.remote_exec(pid, script)`` asks the target to run the script in its
   main thread, at the next point where that thread runs Python code.
3. The script deletes itself, takes a snapshot with the target's leakcheck
   (or, when the target cannot import one, with this process's copy), writes
   its JSON to the FIFO and closes it.  What the census set up for that
   snapshot alone (3.14's watch on new event loops) it gives back: nothing
   of leakcheck keeps running in the target.
4. This side reads the FIFO until the script closes it, within the timeout,
   and reads the snapshot as from any endpoint.

The script never raises into the target: whatever goes wrong there is
written back as an error.  If the target never gets to it within the
timeout (its main thread blocked in C code), the FIFO goes; when the main
thread gets there later, the script finds nobody to answer and only
removes itself and its directory.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import sys
import tempfile
import time
from typing import List

from ..reporting.snapshot import Snapshot
from .client import RemoteError
from .http import MAX_BODY

ERROR_KEY = "leakcheck_attach_error"
"""The key of the JSON object the script writes back instead of a snapshot when it fails in the target."""
_AGENT_HINT = "call leakcheck.start_agent() there"
_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
"""The directory this leakcheck is imported from: the target imports it from there if it has none of its own."""

_SCRIPT = """\
# sys.remote_exec runs this in a namespace of its own: named so that the main thread's stack in the
# snapshot ends where the target's own code was, without the frames of this script.
__name__ = "leakcheck.remote.attached"

import json, os, sys

FIFO, SCRIPT, DIRECTORY, ROOT, ERROR_KEY = {arguments!r}


def load():
    try:
        import leakcheck
    except ImportError:  # not installed there: this caller's copy, for as long as it takes to import it
        sys.path.insert(0, ROOT)
        try:
            import leakcheck
        finally:
            if sys.path and sys.path[0] == ROOT:
                del sys.path[0]
    return leakcheck


def answer():
    try:
        leakcheck = load()
        try:
            from leakcheck.kinds import asyncio_compat
        except ImportError:  # an older leakcheck of the target's own
            asyncio_compat = None
        watching = getattr(asyncio_compat, "watching_loops", lambda: True)()
        try:
            tracking = getattr(leakcheck, "is_tracking_creation", lambda: False)()
            taken = leakcheck.snapshot(track_creation=True) if tracking else leakcheck.snapshot()
            return taken.to_json()
        finally:
            if not watching:  # set up for this snapshot alone: give it back
                asyncio_compat.stand_down()
    except Exception as problem:  # never into the target's own code
        return json.dumps({{ERROR_KEY: type(problem).__name__ + ": " + str(problem)}})


def main():
    try:
        os.unlink(SCRIPT)
    except OSError:
        pass
    try:
        fifo = os.open(FIFO, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # the caller gave up waiting (no reader), and took the FIFO away
        try:
            os.rmdir(DIRECTORY)
        except OSError:
            pass
        return
    try:
        os.set_blocking(fifo, True)
        data = memoryview(answer().encode("utf-8", "backslashreplace"))
        while data:
            data = data[os.write(fifo, data):]
    except OSError:  # the caller went away while reading
        pass
    finally:
        os.close(fifo)


main()
"""


class AttachError(RemoteError):
    """Attaching failed; the message says why and what to do instead."""


def attach_snapshot(pid: int, timeout: float) -> Snapshot:
    """The stacks of process ``pid`` (CPython 3.14+, this user's), read through ``sys.remote_exec``.

    Raises :class:`AttachError` saying why when it cannot: this Python or
    the target's is older than 3.14, remote debugging is off there,
    permission is denied, or the target's main thread does not run Python
    code within ``timeout`` seconds.
    """
    remote_exec = getattr(sys, "remote_exec", None)
    if remote_exec is None:
        version = ".".join(map(str, sys.version_info[:2]))
        raise AttachError(
            f"attaching to pid {pid} needs Python 3.14 or later here (this is {version}): {_AGENT_HINT}"
        )
    _refuse_disabled(pid)
    directory = tempfile.mkdtemp(prefix="leakcheck-attach-")  # mode 0700, ours alone
    fifo_path = os.path.join(directory, "dump")
    script_path = os.path.join(directory, "dump.py")
    os.mkfifo(fifo_path, 0o600)
    arguments = (fifo_path, script_path, directory, _ROOT, ERROR_KEY)
    script = os.open(script_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(script, "w", encoding="utf-8") as written:
        written.write(_SCRIPT.format(arguments=arguments))
    reader = os.open(fifo_path, os.O_RDONLY | os.O_NONBLOCK)  # now: a writer never waits for a reader
    answered = False
    try:
        try:
            remote_exec(pid, script_path)
        except (RuntimeError, OSError) as problem:
            raise _failure(pid, problem) from None
        body = _read(reader, pid, time.monotonic() + timeout, timeout)
        answered = True
    finally:
        os.close(reader)
        os.unlink(fifo_path)
        if answered:
            shutil.rmtree(directory, ignore_errors=True)
        # Else the script, once the target gets to it, removes itself and the directory.
    return _snapshot(body, pid)


def _refuse_disabled(pid: int) -> None:
    """Refuse a target started with ``-X disable_remote_debug``: it would take the script and never run it."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            arguments = cmdline.read().split(b"\0")
    except OSError:
        return  # no /proc: sys.remote_exec says what it can
    if b"disable_remote_debug" in arguments:
        raise AttachError(_disabled(pid))


def _disabled(pid: int) -> str:
    return (
        f"pid {pid} has remote debugging turned off (PYTHON_DISABLE_REMOTE_DEBUG, -X disable_remote_debug, "
        f"or a Python built without it): {_AGENT_HINT}"
    )


def _failure(pid: int, problem: BaseException) -> AttachError:
    text = str(problem)
    if isinstance(problem, PermissionError) or getattr(problem, "errno", None) == 1:
        return AttachError(
            f"not allowed to attach to pid {pid} ({text}): it runs as another user, or ptrace is restricted "
            f"(see /proc/sys/kernel/yama/ptrace_scope); {_AGENT_HINT}"
        )
    if "not enabled" in text:
        return AttachError(_disabled(pid))
    if isinstance(problem, ProcessLookupError):
        return AttachError(f"no process has pid {pid}")
    return AttachError(
        f"pid {pid} is not a CPython 3.14+ process, or its version cannot be read ({text}): {_AGENT_HINT}"
    )


def _read(reader: int, pid: int, deadline: float, timeout: float) -> bytes:
    poller = select.poll()
    poller.register(reader, select.POLLIN | select.POLLHUP)
    chunks: List[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            raise AttachError(
                f"pid {pid} did not run the dump within {timeout:g} s: its main thread runs no Python code "
                f"(blocked in C code, or a long C call), or it exited. An agent answers from a thread of its "
                f"own: {_AGENT_HINT}"
            )
        try:
            chunk = os.read(reader, 1 << 16)
        except BlockingIOError:  # the script is still writing
            continue
        if not chunk:  # the script closed the FIFO
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY:
            raise AttachError(f"pid {pid} answered with more than {MAX_BODY} bytes")


def _snapshot(body: bytes, pid: int) -> Snapshot:
    if body.startswith(b'{"' + ERROR_KEY.encode() + b'"'):  # json.dumps writes the script's error so
        try:
            error = str(json.loads(body).get(ERROR_KEY))
        except (ValueError, AttributeError):
            error = repr(body[:200])
        raise AttachError(f"taking the snapshot in pid {pid} failed: {error[:500]}")
    try:
        return Snapshot.from_json(body)
    except ValueError as problem:
        raise AttachError(f"pid {pid} did not answer with a leakcheck snapshot: {problem}") from None
