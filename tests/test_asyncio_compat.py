"""leakcheck._asyncio_compat: the one place that knows CPython's private task registries."""

from __future__ import annotations

import asyncio
import gc
import subprocess
import sys
import textwrap
import threading
import weakref

import pytest

from leakcheck import _asyncio_compat as compat


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
        from leakcheck import _asyncio_compat as compat
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


# The fallback for interpreters without the registries (3.14 and later)


@pytest.fixture
def no_registries(monkeypatch):
    monkeypatch.setattr(compat, "_registries", lambda *args: None)


@pytest.mark.asyncio
async def test_fallback_finds_tasks_on_the_running_loop(no_registries):
    task = asyncio.create_task(parked_job(), name="fallback-running")
    await asyncio.sleep(0)
    try:
        assert task in compat._fallback_all_tasks()
        assert task in compat.all_tasks()
        assert weakref.ref(task) in compat.task_tokens()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task not in compat.all_tasks()


def test_fallback_finds_tasks_on_a_loop_running_in_another_thread(no_registries, loop_in_thread):
    loop, _ = loop_in_thread
    task = start_parked_task(loop, "fallback-other-thread")
    assert compat.running_loop() is None
    assert task in compat._fallback_all_tasks()
    assert task in compat.all_tasks()
    assert weakref.ref(task) in compat.task_tokens()


@pytest.mark.asyncio
async def test_fallback_new_task_tokens_are_the_tasks_created_since_the_census(no_registries):
    old = asyncio.create_task(parked_job(), name="fallback-old")
    await asyncio.sleep(0)
    before = compat.task_tokens()
    new = asyncio.create_task(parked_job(), name="fallback-new")
    await asyncio.sleep(0)
    try:
        found = compat.new_task_tokens(before)
        assert weakref.ref(new) in found
        assert weakref.ref(old) not in found
    finally:
        for task in (old, new):
            task.cancel()
        await asyncio.gather(old, new, return_exceptions=True)


def test_fallback_finds_nothing_without_any_loop(no_registries):
    assert compat.all_tasks() == []
    assert compat.task_tokens() == frozenset()


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
