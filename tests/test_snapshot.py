"""snapshot(): every thread and task of the process, as plain data with traceback-style stacks."""

from __future__ import annotations

import asyncio
import collections.abc
import gc
import os
import threading
import types
import weakref
from typing import Any, List

from helpers import JOIN_TIMEOUT, NumberedThread, create_task_on, loop_in_thread, parked_threads
from qualname_fixture import Pool, Server

from leakcheck import Frame, Snapshot, TaskInfo, ThreadInfo, find_stacks, snapshot

HERE = __name__


def follow_logs(release: threading.Event) -> None:
    release.wait()


async def level_one() -> None:
    await level_two()


async def level_two() -> None:
    await level_three()


async def level_three() -> None:
    await asyncio.get_running_loop().create_future()


def thread_info(snap: Snapshot, thread: threading.Thread) -> ThreadInfo:
    (info,) = [info for info in snap.threads if info.ident == thread.ident]
    return info


def task_info(snap: Snapshot, name: str) -> TaskInfo:
    (info,) = [info for info in snap.tasks if info.name == name]
    return info


def frame_lines(stack: str) -> List[str]:
    return [line for line in stack.splitlines() if line.startswith('  File "')]


# --- threads -------------------------------------------------------------------------------------------------------


def test_thread_info_fields():
    with parked_threads() as threads:
        daemon = threads.start(follow_logs, name="daemon-follower", daemon=True)
        regular = threads.start(follow_logs, name="regular-follower", daemon=False)
        snap = snapshot()
    for thread in (daemon, regular):
        info = thread_info(snap, thread)
        assert isinstance(info, ThreadInfo)
        assert info.ident == thread.ident
        assert info.native_id == thread.native_id
        assert info.name == thread.name
        assert info.daemon is thread.daemon
    assert thread_info(snap, daemon).daemon is True
    assert thread_info(snap, regular).daemon is False


def test_thread_stack_is_traceback_style_innermost_last():
    with parked_threads() as threads:
        thread = threads.start(follow_logs, name="log-follower")
        info = thread_info(snapshot(), thread)
    lines = frame_lines(info.stack)
    functions = [frame.function for frame in info.frames]
    assert len(lines) == len(info.frames)
    assert f"{HERE}.follow_logs" in functions
    assert functions.index("threading.Thread.run") < functions.index(f"{HERE}.follow_logs")
    assert functions[-1] == "threading.Condition.wait"
    follow = info.frames[functions.index(f"{HERE}.follow_logs")]
    assert isinstance(follow, Frame)
    assert follow.filename == __file__
    assert follow.line == "release.wait()"
    assert f'  File "{__file__}", line {follow.lineno}, in {HERE}.follow_logs\n    release.wait()\n' in info.stack
    assert lines[-1].endswith("in threading.Condition.wait")


def test_qualnames_of_reexported_classes_and_nested_functions():
    release = threading.Event()
    threads = [
        threading.Thread(target=Server().serve, args=(release,), name="qualname-server", daemon=True),
        threading.Thread(target=Pool().worker, args=(release,), name="qualname-pool", daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        functions = {
            info.name: [frame.function for frame in info.frames if "qualname_fixture" in frame.filename]
            for info in find_stacks("qualname-")
        }
    finally:
        release.set()
        for thread in threads:
            thread.join(5)
    assert functions["qualname-server"] == ["qualname_fixture.impl.Server.serve"]
    assert functions["qualname-pool"] == [
        "qualname_fixture.impl.Pool.worker",
        "qualname_fixture.impl.Pool.worker.<locals>.run",
    ]


def test_snapshot_includes_the_calling_thread_without_leakcheck_frames():
    snap = snapshot()
    info = thread_info(snap, threading.current_thread())
    assert info.frames[-1].function == f"{HERE}.test_snapshot_includes_the_calling_thread_without_leakcheck_frames"
    assert "leakcheck" not in os.path.dirname(info.frames[-1].filename)
    assert snap.pid == os.getpid()


# --- tasks ---------------------------------------------------------------------------------------------------------


def test_task_info_fields_on_a_loop_in_another_thread():
    with loop_in_thread(name="snapshot-loop") as loop:
        task = create_task_on(loop, level_one(), "deep-task")
        loop_thread = next(thread for thread in threading.enumerate() if thread.name == "snapshot-loop")
        info = task_info(snapshot(), "deep-task")
    assert isinstance(info, TaskInfo)
    assert info.coro == "level_one"
    assert info.thread_ident == loop_thread.ident
    assert info.id == id(task)
    assert info.state == "pending"


def test_task_stack_covers_the_whole_await_chain_innermost_last():
    with loop_in_thread() as loop:
        create_task_on(loop, level_one(), "deep-task")
        info = task_info(snapshot(), "deep-task")
    functions = [frame.function for frame in info.frames]
    assert functions == [f"{HERE}.level_one", f"{HERE}.level_two", f"{HERE}.level_three"]
    lines = frame_lines(info.stack)
    assert [line.rsplit(" in ", 1)[1] for line in lines] == functions
    assert "await asyncio.get_running_loop().create_future()" in info.stack
    assert info.stack.index("level_one") < info.stack.index("level_two") < info.stack.index("level_three")


async def wait_for_event(release: asyncio.Event) -> None:
    await asyncio.wait_for(release.wait(), timeout=60)


def test_task_stack_follows_stdlib_coroutines_in_the_chain():
    async def scenario() -> TaskInfo:
        release = asyncio.Event()
        task = asyncio.create_task(wait_for_event(release), name="event-waiter")
        await asyncio.sleep(0)
        try:
            return task_info(snapshot(), "event-waiter")
        finally:
            release.set()
            await task

    info = asyncio.run(scenario())
    functions = [frame.function for frame in info.frames]
    assert functions[0] == f"{HERE}.wait_for_event"
    assert "asyncio.tasks.wait_for" in functions


async def read_lines(release: asyncio.Event) -> Any:
    await release.wait()
    yield "line"


async def consume_lines(release: asyncio.Event) -> None:
    async for _ in read_lines(release):
        pass


def test_task_stack_follows_async_for_into_the_async_generator():
    """``async for`` awaits an async_generator_asend object, which has no attribute leading on."""
    async def scenario() -> TaskInfo:
        release = asyncio.Event()
        task = asyncio.create_task(consume_lines(release), name="line-consumer")
        await asyncio.sleep(0)
        try:
            return task_info(snapshot(), "line-consumer")
        finally:
            release.set()
            await task

    info = asyncio.run(scenario())
    functions = [frame.function for frame in info.frames]
    assert functions == [f"{HERE}.consume_lines", f"{HERE}.read_lines", "asyncio.locks.Event.wait"]


def test_task_on_the_running_loop_has_the_current_thread_ident():
    async def scenario() -> TaskInfo:
        task = asyncio.create_task(level_one(), name="local-deep-task")
        await asyncio.sleep(0)
        try:
            return task_info(snapshot(), "local-deep-task")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    info = asyncio.run(scenario())
    assert info.thread_ident == threading.get_ident()
    assert [frame.function for frame in info.frames][-1] == f"{HERE}.level_three"


def test_snapshot_sees_no_done_tasks():
    async def scenario() -> List[str]:
        task = asyncio.create_task(asyncio.sleep(0), name="finished-task")
        await task
        return [info.name for info in snapshot().tasks]

    assert "finished-task" not in asyncio.run(scenario())


# --- the dump --------------------------------------------------------------------------------------------------------


def test_str_of_snapshot_dumps_every_thread_and_task():
    with loop_in_thread(name="dump-loop") as loop, parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        create_task_on(loop, level_one(), "deep-task")
        snap = snapshot()
    text = str(snap)
    assert {"log-follower", "dump-loop", threading.current_thread().name} <= {info.name for info in snap.threads}
    assert "deep-task" in [info.name for info in snap.tasks]
    for info in (*snap.threads, *snap.tasks):
        assert info.header in text
        assert f"{info.header}\n{info.stack}" in text
    assert f"{HERE}.follow_logs" in text
    assert f"{HERE}.level_three" in text


# --- plain data only ------------------------------------------------------------------------------------------------

_LIVE_TYPES = (
    types.FrameType,
    types.TracebackType,
    types.CoroutineType,
    types.GeneratorType,
    types.AsyncGeneratorType,
    asyncio.Future,  # asyncio.Task included
    asyncio.AbstractEventLoop,
)


def strongly_reachable(root: object) -> List[object]:
    """Everything ``root`` keeps alive through containers and instance dicts.

    Classes, modules, functions and Thread objects are not followed (they lead to
    the whole interpreter), only recorded.
    """
    found: List[object] = []
    seen = set()
    pending = [root]
    while pending:
        obj = pending.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        found.append(obj)
        if isinstance(obj, (type, types.ModuleType, types.FunctionType, threading.Thread, weakref.ref)):
            continue
        pending.extend(gc.get_referents(obj))
    return found


def test_snapshot_holds_no_frames_coroutines_or_tasks():
    with loop_in_thread() as loop, parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        create_task_on(loop, level_one(), "deep-task")
        snap = snapshot()
        reachable = strongly_reachable(snap)
    live = [type(obj).__name__ for obj in reachable if isinstance(obj, _LIVE_TYPES)]
    assert live == []


def test_thread_and_task_infos_are_plain_data():
    plain = (tuple, str, int, float, bool, type(None), dict, type, ThreadInfo, TaskInfo, Frame)
    with loop_in_thread() as loop, parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        create_task_on(loop, level_one(), "deep-task")
        snap = snapshot()
    assert snap.threads and snap.tasks
    reachable = strongly_reachable((snap.threads, snap.tasks))
    assert {type(obj).__name__ for obj in reachable if not isinstance(obj, plain)} == set()


# --- objects that do not let themselves be described ----------------------------------------------------------------


class HostileCoroutine(collections.abc.Coroutine):  # type: ignore[type-arg]
    """A coroutine object whose attribute lookups raise something other than AttributeError."""

    def __init__(self, parked: asyncio.Future[None]) -> None:
        self._parked = parked

    def send(self, value: object) -> Any:
        if not self._parked.done():
            self._parked._asyncio_future_blocking = True  # what `await future` does
            return self._parked
        raise StopIteration

    def throw(self, *args: Any) -> Any:
        raise StopIteration

    def close(self) -> None:
        pass

    def __await__(self) -> Any:
        return self

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no {name} for you")


class NamelessTask(asyncio.Task):  # type: ignore[type-arg]
    def get_name(self) -> str:
        raise RuntimeError("no name for you")


def test_odd_tasks_and_threads_are_described_as_well_as_possible_and_never_break_the_snapshot():
    release = threading.Event()
    with loop_in_thread() as loop:
        parked = asyncio.run_coroutine_threadsafe(_future_on_loop(), loop).result(JOIN_TIMEOUT)
        hostile = create_task_on(loop, HostileCoroutine(parked), "hostile-coroutine")
        nameless = asyncio.run_coroutine_threadsafe(_nameless_task(), loop).result(JOIN_TIMEOUT)
        normal = create_task_on(loop, level_one(), "normal-task")
        numbered = NumberedThread(target=follow_logs, args=(release,), daemon=True)
        numbered.start()
        snap = snapshot()
        text = str(snap)
        try:
            assert task_info(snap, "normal-task").frames  # the others are still captured
            odd = task_info(snap, "hostile-coroutine")
            assert odd.frames == () and odd.coro == "HostileCoroutine"
            assert task_info(snap, "<get_name() failed>").id == id(nameless)
            assert thread_info(snap, numbered).name == "42"
            assert "hostile-coroutine" in text and "normal-task" in text
        finally:
            for task in (hostile, nameless, normal):
                loop.call_soon_threadsafe(task.cancel)
            loop.call_soon_threadsafe(parked.cancel)
            release.set()
            numbered.join(JOIN_TIMEOUT)


async def _future_on_loop() -> asyncio.Future[None]:
    return asyncio.get_running_loop().create_future()


async def _nameless_task() -> NamelessTask:
    task = NamelessTask(level_one(), loop=asyncio.get_running_loop())
    await asyncio.sleep(0)
    return task
