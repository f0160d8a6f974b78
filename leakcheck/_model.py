"""The data leakcheck hands out: frames, thread and task descriptions, snapshots.

Everything here is plain immutable data.  Nothing holds a frame, a thread or a
task, so a report can be kept for as long as anyone likes without pinning the
locals of the code it describes.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple, Optional, Tuple, Union


class Frame(NamedTuple):
    """One line of a stack, innermost frames come last in a stack."""

    filename: str
    lineno: int
    function: str
    """The module-qualified name, e.g. ``"socketserver.BaseServer.serve_forever"``."""
    line: str
    """The stripped source line, or ``""`` when the source is not available."""


def format_frames(frames: Tuple[Frame, ...]) -> str:
    """Render frames the way a traceback does, innermost last."""
    parts = []
    for frame in frames:
        parts.append(f'  File "{frame.filename}", line {frame.lineno}, in {frame.function}\n')
        if frame.line:
            parts.append(f"    {frame.line}\n")
    return "".join(parts)


@dataclasses.dataclass(frozen=True)
class ThreadInfo:
    """A thread as it was when it was captured."""

    ident: int
    native_id: Optional[int]
    name: str
    daemon: bool
    frames: Tuple[Frame, ...] = dataclasses.field(repr=False)
    stack: str = dataclasses.field(repr=False)
    """Traceback-style text, innermost frame last."""

    kind = "thread"

    @property
    def state(self) -> str:
        # Python cannot tell a blocked thread from a busy one, and a thread with
        # no Python frame yet is still in its bootstrap.
        return "running" if self.frames else "starting"

    @property
    def header(self) -> str:
        """The dump line that introduces this thread's stack."""
        return (
            f"Thread {self.name!r} (ident={self.ident}, native_id={self.native_id}, "
            f"daemon={self.daemon}) [{self.state}]:"
        )


@dataclasses.dataclass(frozen=True)
class TaskInfo:
    """An asyncio task as it was when it was captured."""

    id: int
    """``id()`` of the task object, stable for as long as the task lives."""
    name: str
    coro: str
    """The qualified name of the task's coroutine."""
    state: str
    """``"pending"``, ``"cancelling"`` or ``"done"``."""
    thread_ident: Optional[int]
    """The thread running the task's event loop, when known."""
    frames: Tuple[Frame, ...] = dataclasses.field(repr=False)
    awaiting: str = dataclasses.field(repr=False)
    """What the innermost coroutine waits on, e.g. ``"Future"``, or ``""``."""
    stack: str = dataclasses.field(repr=False)

    kind = "task"

    @property
    def header(self) -> str:
        return (
            f"Task {self.name!r} (id=0x{self.id:x}, coro={self.coro}, "
            f"loop_thread={self.thread_ident}) [{self.state}]:"
        )


Info = Union[ThreadInfo, TaskInfo]
"""What ignore matchers and stack patterns are applied to."""


def describe_block(info: Info) -> str:
    """One dump block: the header line followed by the stack."""
    return f"{info.header}\n{info.stack}"


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Every thread and task of the process at one moment, with their stacks.

    ``str(snapshot)`` is a dump in the spirit of Go's ``?debug=2`` goroutine
    dump: one block per thread or task, separated by blank lines.
    """

    threads: Tuple[ThreadInfo, ...]
    tasks: Tuple[TaskInfo, ...]
    pid: int
    taken_at: float
    """``time.time()`` when the snapshot was taken."""
    _census: object = dataclasses.field(default=None, repr=False, compare=False)
    """Identity tokens for :func:`find_leaks`; only for snapshots taken live."""

    def __str__(self) -> str:
        infos: Tuple[Info, ...] = (*self.threads, *self.tasks)
        blocks = [describe_block(info) for info in infos]
        threads = f"{len(self.threads)} thread{'' if len(self.threads) == 1 else 's'}"
        tasks = f"{len(self.tasks)} task{'' if len(self.tasks) == 1 else 's'}"
        head = f"leakcheck snapshot of pid {self.pid}: {threads}, {tasks}\n\n"
        return head + "\n".join(blocks)
