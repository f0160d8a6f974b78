"""Leaks that a check of threads and tasks cannot see: a child process, a log file, a ``_thread`` thread.

The scenario: ``start_worker()`` launches a helper process, opens the log it
writes to, and starts a watchdog with ``_thread.start_new_thread`` (as some
libraries still do) that waits for the worker to be stopped.  ``start_worker``
returns, and nobody ever stops the worker: the process keeps running, the log
stays open, and the watchdog waits forever.  None of the three is a
``threading.Thread`` or an asyncio task.

This script shows:

1. the three leaks caught by ``no_leaks(processes=True, fds=True,
   os_threads=True)``, in one report: the child's pid and command line, the
   file's path, and the watchdog's stack;
2. the fix, ``worker()``: a context manager that stops the process, waits for
   it, closes the log and lets the watchdog end, so the same check passes.

Run it with ``python examples/worker_leaks.py``: it exits 0 when the leaks were
caught and the fix passed.  Linux only (the kinds read ``/proc``).
"""

from __future__ import annotations

import _thread
import contextlib
import os
import subprocess
import sys
import tempfile
from typing import IO, Iterator, Tuple

from leakcheck import LeakError, no_leaks

LEAK_GRACE = 0.2
FIXED_GRACE = 2.0
WORKER = [sys.executable, "-c", "import sys; sys.stdin.read()"]  # runs until its stdin is closed


def watch(stopped: _thread.LockType) -> None:
    """The watchdog: waits until the worker is stopped."""
    stopped.acquire()


def start_worker(log_path: str) -> Tuple[subprocess.Popen[bytes], IO[str], _thread.LockType]:
    """Start the worker, open its log, start its watchdog, and forget to stop any of them: the bug."""
    process = subprocess.Popen(WORKER, stdin=subprocess.PIPE)
    log = open(log_path, "a", encoding="utf-8")  # noqa: SIM115 - the leak this example is about
    stopped = _thread.allocate_lock()
    stopped.acquire()
    _thread.start_new_thread(watch, (stopped,))
    return process, log, stopped


@contextlib.contextmanager
def worker(log_path: str) -> Iterator[subprocess.Popen[bytes]]:
    """The fix: the same worker, stopped, waited for and closed when the block ends."""
    process, log, stopped = start_worker(log_path)
    try:
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()
        log.close()
        stopped.release()  # the watchdog returns; it cannot be joined, so the check's grace period waits for it


def main() -> int:
    log_path = os.path.join(tempfile.mkdtemp(prefix="worker-"), "worker.log")
    print("=== the leaky worker ===")
    try:
        with no_leaks(processes=True, fds=True, os_threads=True, timeout=LEAK_GRACE):
            process, log, stopped = start_worker(log_path)
    except LeakError as error:
        print(error)
        caught = True
    else:
        caught = False
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait()
        log.close()
        stopped.release()
    print("=== the fixed worker ===")
    with no_leaks(processes=True, fds=True, os_threads=True, timeout=FIXED_GRACE), worker(log_path):
        pass
    print("no leaks")
    return 0 if caught else 1


if __name__ == "__main__":
    sys.exit(main())
