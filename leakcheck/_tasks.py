"""Capture of asyncio tasks on every loop: census, await-chain stacks, waiting."""

from __future__ import annotations

import threading
import time
import weakref
from typing import AbstractSet, Any, Hashable, List, Sequence

from . import _asyncio_compat as compat
from ._frames import coroutine_frames
from ._model import TaskInfo, format_frames


def _coro_name(coro: object) -> str:
    name = getattr(coro, "__qualname__", None)
    return name if isinstance(name, str) else type(coro).__name__


def can_progress_elsewhere(task: Any) -> bool:
    """Whether ``task`` can finish while the calling thread blocks.

    Only a task whose loop is running in another thread can; the caller's own
    loop is stuck behind the caller, and a stopped loop runs nothing.
    """
    loop = task.get_loop()
    return bool(loop.is_running()) and loop is not compat.running_loop()


class TaskProbe:
    option = "tasks"

    def census(self) -> AbstractSet[Hashable]:
        return compat.task_tokens()

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        return compat.new_task_tokens(before)

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        live = []
        for token in tokens:
            task = token() if isinstance(token, weakref.ref) else None
            if task is not None and not task.done():
                live.append(task)
        return live

    def live(self) -> List[Any]:
        return compat.all_tasks()

    def is_alive(self, obj: Any) -> bool:
        return not obj.done()

    def describe(self, objs: Sequence[Any]) -> List[TaskInfo]:
        infos: List[TaskInfo] = []
        for task in objs:
            coro = task.get_coro()
            frames = coroutine_frames(coro)
            awaiting = compat.awaited_by(task)
            stack = format_frames(frames) + (f"  Awaiting {awaiting}\n" if awaiting else "")
            infos.append(
                TaskInfo(
                    id=id(task),
                    name=task.get_name(),
                    coro=_coro_name(coro),
                    state=compat.task_state(task),
                    thread_ident=compat.loop_thread_ident(task.get_loop()),
                    frames=frames,
                    awaiting=awaiting,
                    stack=stack,
                )
            )
        return infos

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
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
