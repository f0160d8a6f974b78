"""Capture of asyncio tasks on every loop: census, await-chain stacks, waiting."""

from __future__ import annotations

import re
import sys
import threading
import time
import weakref
from typing import AbstractSet, Any, Dict, Hashable, List, Optional, Sequence, Tuple

from ..records import ESCAPED, LITERAL, Frame, format_frames, shown
from . import asyncio_compat as compat
from .base import InfoRecord, JsonFields, Kind, TextFields
from .creation import Created, add_boundary, record
from .frames import as_text, attribute, coroutine_frames, safely
from .ownership import Owner, report_lost, set_task_owner
from .tracking import Patch, when_imported

_AWAITING = "Awaiting "


class TaskInfo(InfoRecord):
    """An asyncio task as it was when it was captured."""

    _compared = ("id", "name", "coro", "state", "thread_ident", "frames", "awaiting", "stack")
    __slots__ = _compared
    _shown = ("id", "name", "coro", "state", "thread_ident")
    kind = "task"
    plural = "tasks"
    header_word = "Task"
    # A plain coroutine holds no comma, a plain state no "]", and escaped text ends with its literal:
    # no text can pass for another field, and matching is linear in the length of the line.
    HEADER = re.compile(
        rf"Task (?P<name>{LITERAL}) \(id=0x(?P<id>[0-9a-f]+), coro=(?P<coro>{ESCAPED}|[^,\\][^,]*), "
        r"(?:loop_thread=(?P<thread_ident>None|\d+)|loop=not running)\) "  # loop_thread=None: older dumps
        rf"\[(?P<state>{ESCAPED}|[^\]]*)\]:"
    )

    id: int
    """``id()`` of the task object, stable for as long as the task lives."""
    name: str
    coro: str
    """The qualified name of the task's coroutine."""
    state: str
    """``"pending"``, ``"cancelling"`` or ``"done"``."""
    thread_ident: Optional[int]
    """The thread running the task's event loop, when known."""
    frames: Tuple[Frame, ...]
    awaiting: str
    """What the innermost coroutine waits on, e.g. ``"Future"``, or ``""``."""
    stack: str

    def __init__(
        self,
        id: int,
        name: str,
        coro: str,
        state: str,
        thread_ident: Optional[int],
        frames: Tuple[Frame, ...],
        awaiting: str,
        stack: str,
    ) -> None:
        self._init(
            id=id,
            name=name,
            coro=coro,
            state=state,
            thread_ident=thread_ident,
            frames=frames,
            awaiting=awaiting,
            stack=stack,
        )

    @property
    def header(self) -> str:
        """The dump line that introduces this task's stack.

        A coroutine is shown plain only without a comma, a state only without
        ``]``: crafted text in either can never pass for another field.
        """
        loop = "loop=not running" if self.thread_ident is None else f"loop_thread={self.thread_ident}"
        return (
            f"Task {self.name!r} (id=0x{self.id:x}, coro={shown(self.coro, ',')}, {loop}) "
            f"[{shown(self.state, ']')}]:"
        )

    @property
    def advice(self) -> str:
        if self.state == DESTROYED_PENDING:
            return (
                "keep a reference to it and await it (or cancel and await it) before the block ends: "
                "the event loop holds tasks only weakly, so one nothing references is collected while pending"
            )
        return "cancel it and await it before the block ends (task.cancel(); await task), or use a TaskGroup"

    def sort_key(self) -> Tuple[Any, ...]:
        return (self.name, self.coro)

    def to_json(self) -> Dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "coro": self.coro,
            "state": self.state,
            "thread_ident": self.thread_ident,
            "awaiting": self.awaiting,
            "frames": [frame._asdict() for frame in self.frames],
            "stack": self.stack,
        }

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> TaskInfo:
        awaiting = ""
        for detail in details:
            if not detail.startswith(_AWAITING) or awaiting:
                raise fields.error(f"a task has no line {detail[:80]!r}")
            awaiting = fields.text(detail[len(_AWAITING) :])
        return cls(
            id=fields.integer(header["id"], "id", base=16),
            name=fields.name(header["name"]),
            coro=fields.text(header["coro"]),
            state=fields.text(header["state"]),
            thread_ident=fields.optional_integer(header["thread_ident"], "loop_thread"),
            frames=frames,
            awaiting=awaiting,
            stack=task_stack(frames, awaiting),
        )

    @classmethod
    def from_json(cls, fields: JsonFields) -> TaskInfo:
        frames = fields.frames()
        awaiting = fields.field("awaiting", (str,))
        return cls(
            id=fields.field("id", (int,)),
            name=fields.field("name", (str,)),
            coro=fields.field("coro", (str,)),
            state=fields.field("state", (str,)),
            thread_ident=fields.field("thread_ident", (int, type(None))),
            frames=frames,
            awaiting=awaiting,
            stack=task_stack(frames, awaiting),
        )


def task_stack(frames: Tuple[Frame, ...], awaiting: str) -> str:
    """A task's stack text: its frames, then what the innermost coroutine awaits, if known."""
    return format_frames(frames) + (f"  {_AWAITING}{shown(awaiting)}\n" if awaiting else "")


def _coro_name(coro: object) -> str:
    name = attribute(coro, "__qualname__")
    return name if isinstance(name, str) else type(coro).__name__


DESTROYED_PENDING = "destroyed while pending"
"""The state of a task that was collected as garbage before it was done (see ``call_exception_handler``)."""


def _describe(task: Any, state: Optional[str] = None, with_frames: bool = True) -> TaskInfo:
    """Describe one task as far as it lets itself be described: a Task subclass or a
    coroutine object whose methods raise gets a placeholder for that part, never an error."""
    name = safely(lambda: as_text(task.get_name()), "<get_name() failed>")
    coro = safely(task.get_coro, None)
    frames: Tuple[Frame, ...] = safely(lambda: coroutine_frames(coro), ()) if with_frames else ()
    awaiting = safely(lambda: compat.awaited_by(task), "")
    return TaskInfo(
        id=id(task),
        name=name,
        coro=safely(lambda: _coro_name(coro), type(coro).__name__),
        state=state or safely(lambda: compat.task_state(task), "unknown"),
        thread_ident=safely(lambda: compat.loop_thread_ident(task.get_loop()), None),
        frames=frames,
        awaiting=awaiting,
        stack=task_stack(frames, awaiting),
    )


def is_on_closed_loop(task: Any) -> bool:
    return safely(lambda: bool(task.get_loop().is_closed()), False)


def can_progress_elsewhere(task: Any) -> bool:
    """Whether ``task`` can finish while the calling thread blocks.

    Only a task whose loop is running in another thread can; the caller's own
    loop is stuck behind the caller, and a stopped loop runs nothing.
    """
    loop = task.get_loop()
    return bool(loop.is_running()) and loop is not compat.running_loop()


# Loops that a check may run while they stand idle, and the thread allowed to.
_drivable: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def allow_driving(loop: Any) -> None:
    """Let checks in the calling thread run ``loop`` while it is idle.

    Meant for the loops of test runners (pytest-asyncio, anyio), which stand
    still between tests: running them is the only way the tasks left on
    them can use their grace period before the runner cancels them.
    """
    try:
        _drivable[loop] = threading.get_ident()
    except TypeError:  # a loop type without weak references: it just is not driven
        pass


def drivable_loops() -> List[Any]:
    """The loops of test runners that checks may drive: loops leakcheck knows of."""
    loops = (ref() for ref in list(_drivable.keyrefs()))
    return [loop for loop in loops if loop is not None]


def _drivable_here(loop: Any) -> bool:
    try:
        owner = _drivable.get(loop)
    except TypeError:
        return False
    return owner == threading.get_ident() and not loop.is_running() and not loop.is_closed()


def _drive_idle_loops(tasks: Sequence[Any], deadline: float) -> None:
    """Run the calling thread's drivable idle loops until ``tasks`` finish or ``deadline``."""
    if not _drivable or compat.running_loop() is not None:
        return
    by_loop: Dict[Any, List[Any]] = {}
    for task in tasks:
        loop = task.get_loop()
        if not task.done() and _drivable_here(loop):
            by_loop.setdefault(loop, []).append(task)
    if not by_loop:
        return
    import asyncio

    for loop, pending in by_loop.items():
        timeout = deadline - time.monotonic()
        if timeout <= 0:
            return
        loop.run_until_complete(asyncio.wait(pending, timeout=timeout))


# -- creation tracking

_TaskEntry = Tuple["weakref.ref[Any]", int, Created]
"""A tracked task: a weak reference to it, the id of its coroutine, and what created it."""
_tracked: Dict[int, _TaskEntry] = {}
"""By ``id(task)``: no attribute can be added to a C task, and a weak dictionary would lose the entry
before a collected task's finalizer runs, which is when it matters."""
_PRUNE_FLOOR = 1024
_prune_at = _PRUNE_FLOOR
_DESTROYED_MESSAGE = "Task was destroyed but it is pending!"
"""What asyncio's task finalizer tells the loop's exception handler (C and Python tasks, 3.10-3.15)."""


def _prune() -> None:
    """Drop the entries of tasks that are gone, once the table has doubled: a bound, at a constant cost per task.

    A pending task collected as garbage was reported before its entry goes.
    """
    global _prune_at
    for key, entry in list(_tracked.items()):
        if entry[0]() is None:
            _tracked.pop(key, None)
    _prune_at = max(_PRUNE_FLOOR, 2 * len(_tracked))


def _create_task_hook(original: Any, patch: Patch) -> Any:
    def create_task(self: Any, coro: Any, **kwargs: Any) -> Any:  # keyword-only options, on every version
        # Recorded before the task exists: once it does, a check in another thread may see it, and an
        # eager task runs its first step inside the call.
        created = record(1) if patch.active else None
        task = original(self, coro, **kwargs) if kwargs else original(self, coro)  # ** costs, even empty
        if created is not None:
            # Inline, not a call: this runs for every task made while tracking is on.
            try:
                _tracked[id(task)] = (weakref.ref(task), id(coro), created)
            except TypeError:  # a task type without weak references stays untracked
                return task
            if len(_tracked) > _prune_at:
                _prune()
        return task

    create_task.__doc__ = original.__doc__
    create_task.__wrapped__ = original  # type: ignore[attr-defined]
    return create_task


def _current_task_owner() -> Tuple[bool, Optional[Owner]]:
    """Whether tracking saw the running task made, and the block that made it."""
    task = compat.current_task()
    entry = _tracked.get(id(task)) if task is not None else None
    if entry is None or entry[0]() is not task:
        return False, None
    return True, entry[2].owner


def _note_destroyed(context: Any) -> None:
    """Report a tracked task that asyncio says was destroyed while pending; never raises (finalizers call it)."""
    try:
        if not isinstance(context, dict) or context.get("message") != _DESTROYED_MESSAGE:
            return
        task = context.get("task")
        entry = _tracked.pop(id(task), None)
        if entry is None or entry[1] != id(safely(task.get_coro, None)):  # type: ignore[union-attr]
            return  # created untracked, at an address a tracked task once had
        # Without its frames: whether its coroutine still has them depends on the order in which the
        # collector finalizes the two, which no report should.
        report_lost("tasks", entry[2], _describe(task, DESTROYED_PENDING, with_frames=False))
    except Exception:
        pass


def _exception_handler_hook(original: Any, patch: Patch) -> Any:
    def call_exception_handler(self: Any, context: Any) -> Any:
        if patch.active:
            _note_destroyed(context)
        return original(self, context)

    call_exception_handler.__doc__ = original.__doc__
    call_exception_handler.__wrapped__ = original  # type: ignore[attr-defined]
    return call_exception_handler


_patches: List[Patch] = []


def _hook_loops() -> bool:
    """Hook every asyncio loop's ``create_task`` and ``call_exception_handler``, once asyncio is imported."""
    if not _patches:
        loop = getattr(sys.modules.get("asyncio.base_events"), "BaseEventLoop", None)
        handle = getattr(sys.modules.get("asyncio.events"), "Handle", None)
        if loop is None or handle is None:
            return False  # still being imported
        add_boundary(handle._run.__code__)  # a task's creation stack ends where the loop called it
        _patches.extend(
            [
                Patch(loop, "create_task", _create_task_hook),
                Patch(loop, "call_exception_handler", _exception_handler_hook),
            ]
        )
    for patch in _patches:
        patch.apply()
    return True


class TaskKind(Kind):
    """The asyncio tasks of every event loop, in every thread."""

    name = "tasks"
    info_type = TaskInfo
    has_stacks = True

    # Bound directly, not wrapped: checks call these for every test of a run.
    census = staticmethod(compat.task_tokens)
    new_since = staticmethod(compat.new_task_tokens)

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        live = []
        for token in tokens:
            task = token() if isinstance(token, weakref.ref) else None
            if task is not None and not safely(task.done, False):
                live.append(task)
        return live

    def live(self) -> List[Any]:
        return compat.all_tasks()

    def is_alive(self, obj: Any) -> bool:
        return not safely(obj.done, False)

    def describe(self, objs: Sequence[Any]) -> List[TaskInfo]:
        return [_describe(task) for task in objs]

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        _drive_idle_loops(objs, deadline)
        waitable = [task for task in objs if not task.done() and can_progress_elsewhere(task)]
        if not waitable:
            return
        finished = threading.Event()

        def wake(_task: object) -> None:
            finished.set()

        # add_done_callback is not thread-safe: it has to run on the task's loop.
        for task in waitable:
            _call_on_loop(task, task.add_done_callback, wake)
        try:
            while True:
                pending = [task for task in waitable if not task.done()]
                timeout = deadline - time.monotonic()
                if not pending or timeout <= 0:
                    return
                finished.wait(timeout)
                finished.clear()
        finally:
            for task in waitable:
                if not task.done():
                    _call_on_loop(task, task.remove_done_callback, wake)


    def is_exempt(self, obj: Any) -> bool:
        return obj is compat.current_task()

    def runs_on(self, obj: Any, loop: Any) -> bool:
        return bool(obj.get_loop() is loop)

    def may_be_garbage(self, obj: Any) -> bool:
        # asyncio strands tasks on a closed loop in ordinary ways (the other children of a
        # ``gather`` that one failed child ended, ``run_until_complete``'s wrapper after
        # ``loop.stop()``); it marks them as not worth a warning, and only reference cycles
        # keep them, so one collection frees them.
        return is_on_closed_loop(obj)

    def cancel(self, objs: Sequence[Any]) -> bool:
        for task in objs:
            cancel(task)
        return bool(objs)

    def track(self, on: bool) -> None:
        if on:
            when_imported("asyncio.base_events", _hook_loops)
        else:
            for patch in _patches:
                patch.undo()
        set_task_owner(_current_task_owner if on else None)

    def creation(self, obj: Any) -> Optional[Created]:
        entry = _tracked.get(id(obj))
        return entry[2] if entry is not None and entry[0]() is obj else None


class LoopTaskKind(TaskKind):
    """The tasks of one loop only: for checking a loop that is about to be closed."""

    def __init__(self, loop: Any) -> None:
        self._loop = loop

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        return [task for task in super().resolve(tokens) if task.get_loop() is self._loop]

    def live(self) -> List[Any]:
        return [task for task in super().live() if task.get_loop() is self._loop]


def _call_on_loop(task: Any, function: Any, *args: Any) -> None:
    try:
        task.get_loop().call_soon_threadsafe(function, *args)
    except RuntimeError:  # the loop closed meanwhile; nothing will run there again
        pass


def cancel(task: Any) -> None:
    """Cancel ``task`` from any thread."""
    loop = task.get_loop()
    try:
        if loop.is_running() and loop is not compat.running_loop():
            loop.call_soon_threadsafe(task.cancel)
        else:
            task.cancel()
    except RuntimeError:  # a closed loop: the task can never run again anyway
        pass


KIND = TaskKind()
