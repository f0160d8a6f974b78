"""``snapshot()``: every thread and task of the process, with stacks."""

from __future__ import annotations

import os
import time

from ..records import Snapshot
from .compare import PROBES, TASKS, THREADS, take_census


def snapshot() -> Snapshot:
    """Capture every live thread and asyncio task (on any loop) with its stack.

    The calling thread is included, without leakcheck's own frames;
    leakcheck's helper threads are not.  The result holds no frames and can
    be kept freely.  It also serves as the baseline for :func:`find_leaks`.
    """
    census = take_census(PROBES)
    return Snapshot(
        threads=tuple(THREADS.describe(THREADS.live())),
        tasks=tuple(TASKS.describe(TASKS.live())),
        pid=os.getpid(),
        taken_at=time.time(),
        _census=census,
    )
