"""``python -m leakcheck run``: why is my program still running?

The program's main code runs in this process, as ``python script.py`` or
``python -m module`` would run it.  When it has finished, whatever would keep
the interpreter from exiting (threads that are not daemons, and the tasks
still pending on their loops) gets a short grace period to end; what is left
is printed to stderr with its stacks.  Then the process waits for it, as
Python always does, or, with ``--fail``, exits at once with status 1.

A program that cannot be found (no such file, no such module, a package
without ``__main__``) is a usage error; an error the program raises, even an
``ImportError`` while it imports, is its own and is shown as Python shows it.
"""

from __future__ import annotations

import importlib.util
import os
import runpy
import sys
import threading
import time
import traceback
from typing import List, Optional, Sequence

from ..engine.snapshot import snapshot
from ..engine.wait import backoff_deadlines
from ..kinds.base import InfoRecord, describe_block
from ..kinds.stack_top import waits_for_work
from ..kinds.thread_pools import executor_of
from ..kinds.threads import ThreadKind, live_threads


def _blockers() -> List[threading.Thread]:
    """The threads Python's exit would wait for: not daemons, and not idle pool workers.

    At exit, ``concurrent.futures`` tells the workers of every
    ``ThreadPoolExecutor`` to stop once the queued jobs are done, so a worker
    waiting for a job ends by itself; one still running a job does not.
    """
    main = threading.main_thread()
    found = [t for t in live_threads() if t is not main and not t.daemon and t.is_alive()]
    workers = [t for t in found if executor_of(t) is not None]
    if workers:
        idle = {info.ident for info in ThreadKind().describe(workers) if waits_for_work(info)}
        found = [t for t in found if t.ident not in idle]
    return found


def keeping_alive(timeout: float) -> List[InfoRecord]:
    """What would still keep the process alive after ``timeout`` seconds: threads, and the tasks pending on any loop."""
    deadline = time.monotonic() + timeout
    for slice_deadline in backoff_deadlines(deadline, first=0.005, cap=0.05):
        blockers = _blockers()
        if not blockers or time.monotonic() >= deadline:
            break
        blockers[0].join(max(0.0, slice_deadline - time.monotonic()))  # a worker may fall idle meanwhile
    idents = {thread.ident for thread in blockers}
    if not idents:
        return []
    taken = snapshot()
    threads: List[InfoRecord] = [info for info in taken.threads if info.ident in idents]
    tasks: List[InfoRecord] = [info for info in taken.tasks if info.state == "pending"]
    return threads + tasks


def _report(blockers: List[InfoRecord], fail: bool) -> str:
    threads = sum(1 for info in blockers if info.kind == "thread")
    tasks = len(blockers) - threads
    counts = f"{threads} non-daemon thread{'' if threads == 1 else 's'}"
    if tasks:
        counts += f" and {tasks} pending task{'' if tasks == 1 else 's'}"
    then = "exiting now (--fail)" if fail else "waiting for them, as Python does"
    blocks = "\n".join(describe_block(info) for info in blockers)
    keep = "keeps" if len(blockers) == 1 else "keep"
    return f"leakcheck: the main code has finished, but {counts} {keep} the process alive; {then}:\n\n{blocks}"


class NotRunnable(Exception):
    """The module to run cannot be found: a usage error, with Python's own words for it."""


def _find_module(name: str) -> None:
    """Raise :class:`NotRunnable` where ``python -m name`` would say that it cannot find the module to run.

    The same steps as ``runpy`` takes, with public calls only.  Like Python,
    this imports the parent packages of ``name``: an error raised by their
    code (but an ``ImportError`` naming a missing parent) is the program's
    own and propagates.
    """
    if not name:
        raise NotRunnable("run -m needs a module name")
    if name.startswith("."):
        raise NotRunnable("Relative module names not supported")
    parent = name.rpartition(".")[0]
    if parent:
        try:
            __import__(parent)
        except ImportError as error:  # a missing parent is found missing below; any other error is the program's
            if error.name is None or (error.name != parent and not parent.startswith(error.name + ".")):
                raise
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, AttributeError, TypeError, ValueError) as error:
        hint = f". Try using '{name[:-3]}' instead of '{name}' as the module name." if name.endswith(".py") else ""
        raise NotRunnable(
            f"Error while finding module specification for {name!r} ({type(error).__name__}: {error}){hint}"
        ) from None
    if spec is None:
        raise NotRunnable(f"No module named {name}")
    if spec.submodule_search_locations is not None:  # a package: run its __main__
        if name == "__main__" or name.endswith(".__main__"):
            raise NotRunnable("Cannot use package as __main__ module")
        try:
            _find_module(f"{name}.__main__")
        except NotRunnable as problem:
            if name not in sys.modules:
                raise
            raise NotRunnable(f"{problem}; {name!r} is a package and cannot be directly executed") from None
        return
    if spec.loader is None:
        raise NotRunnable(f"{name!r} is a namespace package and cannot be executed")


def run_program(program: str, args: Sequence[str], module: bool, fail: bool, timeout: float) -> int:
    """Run ``program`` (a script path, or a module name if ``module``) as ``__main__``; its exit status.

    Raises :class:`NotRunnable` when there is no module ``program`` to run.
    """
    sys.argv = [program, *args]
    status = 0
    try:
        if module:
            _find_module(program)
            runpy.run_module(program, run_name="__main__", alter_sys=True)
        else:
            sys.path.insert(0, os.path.dirname(os.path.abspath(program)))
            runpy.run_path(program, run_name="__main__")
    except NotRunnable:
        raise
    except SystemExit as exit_request:
        status = _exit_status(exit_request.code)
    except BaseException:  # the program's own error: shown as Python would show it
        traceback.print_exc()
        status = 1
    blockers = keeping_alive(timeout)
    if blockers:
        print(_report(blockers, fail), file=sys.stderr, flush=True)
        if fail:
            _release_agent()
            sys.stdout.flush()
            os._exit(1)  # sys.exit() would wait for the very threads reported
    return status


def _release_agent() -> None:
    # os._exit() skips atexit, which would remove the agent's socket.
    agent = sys.modules.get("leakcheck.remote.agent")
    if agent is not None:
        agent.stop_agent()


def _exit_status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def check_program(program: Optional[str]) -> Optional[str]:
    """Why ``program`` cannot be run as a script, or ``None``."""
    if program is None:
        return "run needs a script (or -m MODULE) to run"
    if not os.path.isfile(program):
        return f"can't open file {program!r}: no such file"
    return None
