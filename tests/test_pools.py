"""Idle workers of pools that outlive a check are capacity, not leaks; busy ones and orphans are leaks."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from typing import Any, Iterator

import pytest
from helpers import JOIN_TIMEOUT

from leakcheck import LeakError, no_leaks

GRACE = 0.05


def nothing() -> None:
    pass


# --- default executors of event loops -------------------------------------------------------------------------------


def test_idle_default_executor_worker_of_an_open_loop_that_is_not_running_is_not_a_leak():
    """The state of a test runner's loop between tests (pytest-asyncio, anyio), and of a loop left open."""
    loop = asyncio.new_event_loop()
    try:
        with no_leaks(timeout=GRACE):  # raises LeakError on a leak
            loop.run_until_complete(loop.run_in_executor(None, nothing))
        assert not loop.is_running()
        assert loop._default_executor is not None and loop._default_executor._threads  # type: ignore[attr-defined]
    finally:
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_busy_default_executor_worker_of_an_open_loop_is_reported():
    loop = asyncio.new_event_loop()
    started, release = threading.Event(), threading.Event()

    def busy_job() -> None:
        started.set()
        release.wait()

    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            loop.run_in_executor(None, busy_job)
            assert started.wait(JOIN_TIMEOUT)
        assert "busy_job" in str(excinfo.value)
        assert len(excinfo.value.report.threads) == 1
    finally:
        release.set()
        loop.run_until_complete(loop.shutdown_default_executor())
        loop.close()


def test_busy_default_executor_worker_does_not_cost_the_whole_grace_period():
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        started = threading.Event()
        finish = threading.Event()

        def job() -> None:
            started.set()
            finish.wait()

        future = loop.run_in_executor(None, job)
        await loop.run_in_executor(None, started.wait)
        began = time.monotonic()
        async with no_leaks(timeout=30):
            loop.call_soon(finish.set)  # the worker turns idle right after the block
        elapsed = time.monotonic() - began
        await future
        return elapsed

    assert asyncio.run(scenario()) < 15  # it used to wait out all 30 s


def test_default_executor_worker_still_alive_after_its_loop_is_closed_is_reported():
    loop = asyncio.new_event_loop()
    started, release = threading.Event(), threading.Event()

    def busy_job() -> None:
        started.set()
        release.wait()

    executor = None
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            loop.run_in_executor(None, busy_job)
            assert started.wait(JOIN_TIMEOUT)
            executor = loop._default_executor  # type: ignore[attr-defined]
            loop.close()  # shuts the executor down without waiting: the worker is now an orphan
        assert "busy_job" in str(excinfo.value)
    finally:
        release.set()
        if executor is not None:
            executor.shutdown(wait=True)


# --- other pools held by a module: trio's thread cache, say --------------------------------------------------------


POOL_MODULE = """
import threading

class Worker:
    def __init__(self, pool):
        self.pool = pool
        self.jobs = []
        self.wake = threading.Lock()
        self.wake.acquire()
        self.thread = threading.Thread(target=self.work, name="pool-worker", daemon=True)

    def work(self):
        while True:
            self.wake.acquire()  # idle here: waits in C, so work() is the top frame
            job = self.jobs.pop()
            if job is None:
                return
            job()

class Pool:
    __slots__ = ("idle",)  # as trio's ThreadCache: no __dict__ to look into

    def __init__(self):
        self.idle = {}

    def run(self, job):
        worker = next(iter(self.idle), None)
        if worker is None:
            worker = Worker(self)
            self.idle[worker] = None
            worker.thread.start()
        worker.jobs.append(job)
        worker.wake.release()
        return worker

    def close(self):
        for worker in list(self.idle):
            worker.jobs.append(None)
            worker.wake.release()
            worker.thread.join()
        self.idle.clear()

POOL = Pool()
"""


@pytest.fixture
def pool_module() -> Iterator[types.ModuleType]:
    """A library module with a lazily started, module-level pool of worker threads."""
    module = types.ModuleType("fake_thread_cache")
    sys.modules[module.__name__] = module
    exec(POOL_MODULE, module.__dict__)
    try:
        yield module
    finally:
        module.POOL.close()
        del sys.modules[module.__name__]


def test_idle_worker_of_a_module_level_pool_is_not_a_leak(pool_module):
    done = threading.Event()
    with no_leaks(timeout=2.0):  # raises LeakError on a leak; the worker turns idle within the grace period
        pool_module.POOL.run(done.set)
        assert done.wait(JOIN_TIMEOUT)
    (worker,) = pool_module.POOL.idle
    assert worker.thread.is_alive()


def test_busy_worker_of_a_module_level_pool_is_reported_with_its_job(pool_module):
    started, release = threading.Event(), threading.Event()

    def long_job() -> None:
        started.set()
        release.wait()

    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            pool_module.POOL.run(long_job)
            assert started.wait(JOIN_TIMEOUT)
        assert "long_job" in str(excinfo.value)
        assert [info.name for info in excinfo.value.report.threads] == ["pool-worker"]
    finally:
        release.set()


def test_worker_of_a_pool_the_block_made_and_dropped_is_reported(pool_module):
    """Reachable from no module global: the pool is the block's own."""
    done = threading.Event()
    pool: Any = pool_module.Pool()
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            pool.run(done.set)
            assert done.wait(JOIN_TIMEOUT)
        assert [info.name for info in excinfo.value.report.threads] == ["pool-worker"]
    finally:
        pool.close()


# --- threads a module starts when it is imported --------------------------------------------------------------------


REFRESHER_MODULE = """
import threading

stop = threading.Event()

def refresh_forever():
    stop.wait()

refresher = threading.Thread(target=refresh_forever, name="cache-refresher", daemon=True)
refresher.start()
"""


def test_a_thread_started_at_import_gets_a_hint_with_the_line_that_silences_it():
    module = types.ModuleType("fake_cache_library")
    sys.modules[module.__name__] = module
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            exec(REFRESHER_MODULE, module.__dict__)  # what importing it does
        text = str(excinfo.value)
        assert "module global fake_cache_library.refresher holds it" in text
        assert "leakcheck.ignore_globally(leakcheck.ignore_name('^cache-refresher$'))" in text
    finally:
        module.stop.set()
        module.refresher.join(JOIN_TIMEOUT)
        del sys.modules[module.__name__]


# --- tasks stranded on a closed loop: nobody can end them, and only cycles hold them -------------------------------


async def parked() -> None:
    await asyncio.get_running_loop().create_future()


async def fails() -> None:
    raise ValueError("one child fails")


def test_tasks_stranded_on_a_closed_loop_that_only_cycles_hold_are_not_leaks():
    """gather's other children, once one failed: asyncio itself does not warn about them."""

    async def main() -> None:
        with pytest.raises(ValueError):
            await asyncio.gather(fails(), parked())

    with no_leaks(timeout=GRACE):  # raises LeakError on a leak
        loop = asyncio.new_event_loop()
        loop.run_until_complete(main())
        loop.close()


def test_a_task_on_a_closed_loop_that_something_holds_is_reported_and_says_the_loop_is_closed():
    held = []
    with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        loop = asyncio.new_event_loop()
        held.append(loop.create_task(parked(), name="held-on-closed-loop"))
        loop.run_until_complete(asyncio.sleep(0))
        loop.close()
    (info,) = excinfo.value.report.tasks
    assert info.name == "held-on-closed-loop"
    assert info.state == "pending, loop closed"
    assert "[pending, loop closed]" in str(excinfo.value)
    held[0]._log_destroy_pending = False  # it can never run again
