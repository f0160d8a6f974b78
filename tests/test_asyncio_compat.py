"""leakcheck.kinds.asyncio_compat: the one place that knows CPython's private task registries."""

from __future__ import annotations

import asyncio
import gc
import re
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from leakcheck.kinds import asyncio_compat as compat


async def parked_job() -> None:
    await asyncio.get_running_loop().create_future()


async def quick_job() -> str:
    return "done"


async def waits_for(other: asyncio.Task[None]) -> None:
    await other


@pytest.fixture
def loop_in_thread():
    """An event loop running forever in its own thread, stopped and closed afterwards."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="compat-loop", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result(5)  # the loop is running now
    try:
        yield loop, thread
    finally:

        async def cancel_everything() -> None:
            tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(cancel_everything(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def start_parked_task(loop: asyncio.AbstractEventLoop, name: str) -> asyncio.Task[None]:
    """Create a task parked forever on ``loop``, which runs in another thread."""

    async def create() -> asyncio.Task[None]:
        task = asyncio.create_task(parked_job(), name=name)
        await asyncio.sleep(0)
        return task

    return asyncio.run_coroutine_threadsafe(create(), loop).result(5)


# task_tokens() and all_tasks()


@pytest.mark.asyncio
async def test_all_tasks_finds_tasks_on_the_running_loop():
    task = asyncio.create_task(parked_job(), name="on-running-loop")
    await asyncio.sleep(0)
    try:
        assert task in compat.all_tasks()
        assert weakref.ref(task) in compat.task_tokens()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task not in compat.all_tasks()


def test_all_tasks_finds_tasks_on_a_loop_in_another_thread(loop_in_thread):
    loop, thread = loop_in_thread
    task = start_parked_task(loop, "in-other-thread")
    assert compat.running_loop() is None
    assert task in compat.all_tasks()
    assert weakref.ref(task) in compat.task_tokens()
    assert compat.loop_thread_ident(task.get_loop()) == thread.ident


def test_all_tasks_finds_tasks_left_pending_on_a_stopped_loop():
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(parked_job(), name="left-on-stopped-loop")
        loop.run_until_complete(asyncio.sleep(0))
        assert not loop.is_running()
        assert not task.done()
        assert task in compat.all_tasks()
        assert weakref.ref(task) in compat.task_tokens()
        assert compat.loop_thread_ident(loop) is None
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


@pytest.mark.asyncio
async def test_new_task_tokens_are_the_tasks_created_since_the_census():
    old = asyncio.create_task(parked_job(), name="old")
    await asyncio.sleep(0)
    before = compat.task_tokens()
    new = asyncio.create_task(parked_job(), name="new")
    await asyncio.sleep(0)
    try:
        assert weakref.ref(old) in before
        found = compat.new_task_tokens(before)
        assert weakref.ref(new) in found
        assert weakref.ref(old) not in found
    finally:
        for task in (old, new):
            task.cancel()
        await asyncio.gather(old, new, return_exceptions=True)


def test_new_task_tokens_finds_a_task_created_on_a_loop_in_another_thread(loop_in_thread):
    loop, _ = loop_in_thread
    before = compat.task_tokens()
    task = start_parked_task(loop, "new-elsewhere")
    assert weakref.ref(task) in compat.new_task_tokens(before)


def test_new_task_tokens_is_empty_without_new_tasks(loop_in_thread):
    loop, _ = loop_in_thread
    start_parked_task(loop, "old-elsewhere")
    assert not compat.new_task_tokens(compat.task_tokens())


@pytest.mark.asyncio
async def test_all_tasks_excludes_done_tasks():
    task = asyncio.create_task(quick_job(), name="quick")
    assert await task == "done"
    assert task.done()
    assert task not in compat.all_tasks()


@pytest.mark.asyncio
async def test_all_tasks_excludes_cancelled_tasks():
    task = asyncio.create_task(parked_job(), name="cancelled")
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()
    assert task not in compat.all_tasks()


def test_task_tokens_are_weak_references():
    """Tokens must not keep a task alive, or dropping a finished task would never free it."""

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(quick_job())
        loop.run_until_complete(task)
        tokens = compat.task_tokens()
        assert all(isinstance(token, weakref.ref) for token in tokens)
        probe = weakref.ref(task)
        del task
    finally:
        loop.close()
    gc.collect()
    assert probe() is None


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12")
@pytest.mark.asyncio
async def test_all_tasks_finds_eager_tasks_during_and_after_their_first_step():
    seen_in_first_step = []

    async def eager_job() -> None:
        me = asyncio.current_task()
        seen_in_first_step.append(me in compat.all_tasks() and weakref.ref(me) in compat.task_tokens())
        await asyncio.get_running_loop().create_future()

    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        task = asyncio.create_task(eager_job(), name="eager")
    finally:
        loop.set_task_factory(None)
    try:
        assert seen_in_first_step == [True]
        assert task in compat.all_tasks()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


@pytest.mark.skipif(sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12")
@pytest.mark.asyncio
async def test_an_eager_task_finished_in_its_first_step_is_not_listed():
    loop = asyncio.get_running_loop()
    loop.set_task_factory(asyncio.eager_task_factory)
    try:
        task = asyncio.create_task(quick_job(), name="eager-quick")
    finally:
        loop.set_task_factory(None)
    assert task.done()
    assert task not in compat.all_tasks()


def test_nothing_is_found_and_asyncio_is_not_imported_when_the_program_never_imported_it():
    code = textwrap.dedent(
        """
        import sys
        from leakcheck.kinds import asyncio_compat as compat
        assert "asyncio" not in sys.modules
        assert compat.task_tokens() == frozenset()
        assert compat.all_tasks() == []
        assert compat.running_loop() is None
        assert compat.current_task() is None
        assert "asyncio" not in sys.modules, "the compat layer imported asyncio"
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# Every kind of loop and task, on every version


def test_all_tasks_finds_tasks_on_a_loop_that_never_ran():
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(parked_job(), name="never-ran")
        assert task in compat.all_tasks()
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


def test_new_task_tokens_finds_a_task_on_a_loop_created_after_the_census():
    before = compat.task_tokens()
    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(parked_job(), name="new-loop")
        loop.run_until_complete(asyncio.sleep(0))
        assert weakref.ref(task) in compat.new_task_tokens(before)
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()


def test_tasks_of_asyncio_run_and_of_a_task_group_are_seen_from_another_thread():
    """asyncio.run's main task, and a TaskGroup's child (a plain task on 3.10)."""
    started = threading.Event()
    release = threading.Event()
    names: list[set[str]] = []

    async def child() -> None:
        started.set()
        await asyncio.get_running_loop().run_in_executor(None, release.wait)

    async def main() -> None:
        if sys.version_info < (3, 11):
            await asyncio.create_task(child(), name="group-child")
            return
        async with asyncio.TaskGroup() as group:
            group.create_task(child(), name="group-child")

    def look() -> None:
        assert started.wait(10)
        names.append({task.get_name() for task in compat.all_tasks()})
        release.set()

    looker = threading.Thread(target=look)
    looker.start()
    asyncio.run(main())
    looker.join(10)
    assert names and {"group-child"} <= names[0]
    assert any(name.startswith("Task-") for name in names[0])  # asyncio.run's main task


def test_tasks_that_are_not_native_are_seen():
    """Pure-Python tasks live in asyncio.tasks._scheduled_tasks, even on 3.14+."""
    loop = asyncio.new_event_loop()

    class SubTask(asyncio.Task):  # type: ignore[type-arg]
        pass

    try:
        python_task = asyncio.tasks._PyTask(parked_job(), loop=loop, name="python-task")  # type: ignore[attr-defined]
        sub_task = SubTask(parked_job(), loop=loop, name="sub-task")
        loop.run_until_complete(asyncio.sleep(0))
        assert {python_task, sub_task} <= set(compat.all_tasks())
    finally:
        for task in (python_task, sub_task):
            task.cancel()
        loop.run_until_complete(asyncio.gather(python_task, sub_task, return_exceptions=True))
        loop.close()


def test_a_closed_loop_with_a_pending_task_is_still_seen():
    loop = asyncio.new_event_loop()
    task = loop.create_task(parked_job(), name="on-closed-loop")
    loop.run_until_complete(asyncio.sleep(0))
    loop.close()
    assert task in compat.all_tasks()
    task._log_destroy_pending = False  # type: ignore[attr-defined]  # it can never be cancelled now


def test_each_version_has_its_own_census():
    expected = "_RegistryCensus" if sys.version_info < (3, 14) else "_LoopCensus"
    assert type(compat._census()).__name__ == expected


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-W", "always", "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=60
    )


def test_a_loop_made_before_the_first_census_is_seen():
    """On 3.14+ the first census finds the loops that already exist."""
    result = run_python(
        """
        import asyncio
        async def parked():
            await asyncio.get_running_loop().create_future()
        class OwnLoop(asyncio.SelectorEventLoop):  # a class of the program's own: found from its class too
            pass
        class NotALoop:  # an object that only claims to be one
            pass
        impostor = NotALoop()
        impostor.__class__ = NotALoop
        loops = [asyncio.new_event_loop(), OwnLoop()]
        tasks = [loop.create_task(parked(), name=f"early-{number}") for number, loop in enumerate(loops)]
        for loop in loops:
            loop.run_until_complete(asyncio.sleep(0))
        from leakcheck.kinds import asyncio_compat as compat
        print(sorted(t.get_name() for t in compat.all_tasks()))
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['early-0', 'early-1']"


def test_importing_leakcheck_sets_up_nothing():
    result = run_python(
        """
        import asyncio, sys
        import leakcheck
        if sys.version_info >= (3, 14):
            assert all(sys.monitoring.get_tool(i) is None for i in range(6)), "a tool id was taken at import"
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


@pytest.mark.skipif(sys.version_info < (3, 14), reason="the loop registry is the 3.14+ census")
def test_without_a_free_monitoring_tool_id_the_census_warns_and_is_still_exact():
    result = run_python(
        """
        import asyncio, sys
        for tool_id in (3, 4):
            sys.monitoring.use_tool_id(tool_id, "someone else")
        from leakcheck.kinds import asyncio_compat as compat
        before = compat.task_tokens()
        async def parked():
            await asyncio.get_running_loop().create_future()
        loop = asyncio.new_event_loop()
        task = loop.create_task(parked(), name="late")
        print([t().get_name() for t in compat.new_task_tokens(before)])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['late']"
    assert "no sys.monitoring tool id is free" in result.stderr


@pytest.mark.skipif(sys.version_info < (3, 14), reason="the loop registry is the 3.14+ census")
def test_closed_loops_without_tasks_are_dropped_from_the_registry():
    loop = asyncio.new_event_loop()
    compat.task_tokens()
    assert loop in compat._LOOPS.loops()
    loop.close()
    compat.task_tokens()
    assert loop not in compat._LOOPS.loops()


@pytest.mark.parametrize(
    ("name", "value"),
    [("_scheduled_tasks", None), ("_eager_tasks", ["not", "a", "set"])]
    if sys.version_info >= (3, 12)
    else [("_all_tasks", None)],
)
def test_unrecognised_internals_make_every_census_raise_naming_the_version(monkeypatch, name, value):
    monkeypatch.setattr(asyncio.tasks, name, value)
    monkeypatch.setattr(compat, "_cache", (None, None))
    version = ".".join(map(str, sys.version_info[:3]))
    for _ in range(2):  # not just the first: a check must never pass because it saw nothing
        with pytest.raises(RuntimeError, match=rf"Python {re.escape(version)}.*{name}"):
            compat.task_tokens()
    monkeypatch.undo()
    compat._cache = (None, None)
    compat.task_tokens()


@pytest.mark.skipif(sys.version_info < (3, 14), reason="asyncio.capture_call_graph is new in Python 3.14")
@pytest.mark.asyncio
async def test_await_chains_agree_with_capture_call_graph_and_go_further_into_async_generators():
    from leakcheck.kinds.frames import coroutine_frames

    async def middle() -> None:
        await parked_job()

    async def outer() -> None:
        await middle()

    async def ticks():  # type: ignore[no-untyped-def]
        while True:
            yield await asyncio.get_running_loop().create_future()

    async def consumer() -> None:
        async for _ in ticks():
            pass

    chained = asyncio.create_task(outer(), name="chained")
    looping = asyncio.create_task(consumer(), name="looping")
    await asyncio.sleep(0)
    try:
        graph = asyncio.capture_call_graph(chained)
        public = [entry.frame.f_code.co_qualname for entry in reversed(graph.call_stack)]
        ours = [frame.function.rsplit(".", 1)[-1] for frame in coroutine_frames(chained.get_coro())]
        assert public[-3:] == [
            "test_await_chains_agree_with_capture_call_graph_and_go_further_into_async_generators.<locals>.outer",
            "test_await_chains_agree_with_capture_call_graph_and_go_further_into_async_generators.<locals>.middle",
            "parked_job",
        ]
        assert ours == ["outer", "middle", "parked_job"]
        public_looping = asyncio.capture_call_graph(looping).call_stack
        ours_looping = coroutine_frames(looping.get_coro())
        assert len(public_looping) == 1  # capture_call_graph stops at the async generator
        assert [frame.function.rsplit(".", 1)[-1] for frame in ours_looping] == ["consumer", "ticks"]
    finally:
        for task in (chained, looping):
            task.cancel()
        await asyncio.gather(chained, looping, return_exceptions=True)

# loop_thread_ident, running_loop, current_task


@pytest.mark.asyncio
async def test_loop_thread_ident_of_the_running_loop_is_this_thread():
    assert compat.loop_thread_ident(asyncio.get_running_loop()) == threading.get_ident()


def test_loop_thread_ident_of_a_loop_that_never_ran_is_none():
    loop = asyncio.new_event_loop()
    try:
        assert compat.loop_thread_ident(loop) is None
    finally:
        loop.close()


@pytest.mark.asyncio
async def test_running_loop_and_current_task():
    assert compat.running_loop() is asyncio.get_running_loop()
    assert compat.current_task() is asyncio.current_task()


def test_running_loop_and_current_task_outside_a_loop():
    assert compat.running_loop() is None
    assert compat.current_task() is None


# task_state


@pytest.mark.asyncio
async def test_task_state_pending_then_done():
    task = asyncio.create_task(parked_job(), name="state")
    await asyncio.sleep(0)
    assert compat.task_state(task) == "pending"
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert compat.task_state(task) == "done"


@pytest.mark.asyncio
async def test_task_state_done_after_returning():
    task = asyncio.create_task(quick_job())
    await task
    assert compat.task_state(task) == "done"


@pytest.mark.asyncio
async def test_task_state_of_a_task_cancelled_before_its_first_step_is_cancelling():
    task = asyncio.create_task(parked_job(), name="cancel-early")
    task.cancel()
    try:
        assert compat.task_state(task) == "cancelling"
    finally:
        await asyncio.gather(task, return_exceptions=True)
    assert compat.task_state(task) == "done"


@pytest.mark.asyncio
async def test_task_state_of_a_suspended_task_being_cancelled_is_cancelling():
    """Before 3.11, Task.cancel() on a suspended task only cancels the future it awaits."""
    task = asyncio.create_task(parked_job(), name="cancel-suspended")
    await asyncio.sleep(0)
    task.cancel()
    try:
        assert compat.task_state(task) == "cancelling"
    finally:
        await asyncio.gather(task, return_exceptions=True)


# awaited_by


@pytest.mark.asyncio
async def test_awaited_by_names_the_awaited_task():
    inner = asyncio.create_task(parked_job(), name="inner-task")
    outer = asyncio.create_task(waits_for(inner), name="outer-task")
    await asyncio.sleep(0)
    try:
        assert compat.awaited_by(outer) == "Task 'inner-task'"
        assert compat.awaited_by(inner) == "Future"
    finally:
        inner.cancel()
        await asyncio.gather(outer, inner, return_exceptions=True)


@pytest.mark.asyncio
async def test_awaited_by_is_empty_for_tasks_not_suspended_on_anything():
    task = asyncio.create_task(quick_job())
    assert compat.awaited_by(task) == ""  # created, not started yet
    await task
    assert compat.awaited_by(task) == ""


# default_executor_threads


@pytest.mark.asyncio
async def test_default_executor_threads_lists_the_workers_of_the_running_loop():
    loop = asyncio.get_running_loop()
    assert compat.default_executor_threads(loop) == frozenset()
    worker = await loop.run_in_executor(None, threading.current_thread)
    try:
        assert worker in compat.default_executor_threads(loop)
    finally:
        await loop.shutdown_default_executor()
    assert not worker.is_alive()
