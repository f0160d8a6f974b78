"""Keyword assertions on live stacks: find_stacks, assert_stack_match, assert_no_stack_match."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import pytest
from helpers import JOIN_TIMEOUT, create_task_on, loop_in_thread, parked_threads

from leakcheck import (
    LeakError,
    TaskInfo,
    ThreadInfo,
    assert_no_stack_match,
    assert_stack_match,
    find_stacks,
)

LONG_WAIT = 5.0  # for things that happen on their own: the assertions return as soon as they have


def follow_logs(release: threading.Event) -> None:
    release.wait()


def follow_later(release: threading.Event) -> None:
    time.sleep(0.05)
    follow_logs(release)


def drain_queue_briefly() -> None:
    time.sleep(0.05)


async def stream_events() -> None:
    await asyncio.get_running_loop().create_future()


async def flush_soon() -> None:
    await asyncio.sleep(0.05)


# --- find_stacks ---------------------------------------------------------------------------------------------------


def test_find_stacks_returns_the_matching_threads():
    with parked_threads() as threads:
        thread = threads.start(follow_logs, name="log-follower")
        threads.start(name="bystander")
        found = find_stacks("follow_logs")
    assert [(type(info), info.name, info.ident) for info in found] == [(ThreadInfo, "log-follower", thread.ident)]
    assert "follow_logs" in found[0].stack


def test_find_stacks_returns_nothing_when_nothing_matches():
    with parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        assert find_stacks("no_such_function_anywhere") == []


def test_find_stacks_accepts_compiled_patterns_and_matches_the_header():
    with parked_threads() as threads:
        threads.start(name="log-follower-3")
        found = find_stacks(re.compile(r"Thread 'log-follower-\d+'"))
    assert [info.name for info in found] == ["log-follower-3"]


def test_find_stacks_matches_any_of_several_patterns():
    with parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        threads.start(name="heartbeat")
        found = find_stacks("no_such_function_anywhere", re.compile("^Thread 'heartbeat'", re.M), "follow_logs")
    assert sorted(info.name for info in found) == ["heartbeat", "log-follower"]


def test_find_stacks_returns_tasks_on_any_loop():
    with loop_in_thread() as loop:
        create_task_on(loop, stream_events(), "event-stream")
        found = find_stacks("stream_events")
    assert [(type(info), info.name) for info in found] == [(TaskInfo, "event-stream")]


def test_find_stacks_never_includes_the_callers_own_stack():
    assert find_stacks("test_find_stacks_never_includes_the_callers_own_stack") == []


def test_find_stacks_never_includes_the_calling_task():
    async def find_stacks_from_a_task() -> list:
        return find_stacks("find_stacks_from_a_task")

    assert asyncio.run(find_stacks_from_a_task()) == []


# --- assert_stack_match --------------------------------------------------------------------------------------------


def test_assert_stack_match_passes_and_returns_the_matches():
    with parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        found = assert_stack_match("follow_logs")
    assert [info.name for info in found] == ["log-follower"]


def test_assert_stack_match_fails_when_nothing_matches():
    with parked_threads() as threads:
        threads.start(name="bystander")
        with pytest.raises(AssertionError) as excinfo:
            assert_stack_match("follow_logs")
    assert "follow_logs" in str(excinfo.value)
    assert "bystander" in str(excinfo.value), "the failure lists the live stacks"


def test_assert_stack_match_with_timeout_fails_when_nothing_appears():
    with pytest.raises(AssertionError, match="follow_logs"):
        assert_stack_match("follow_logs", timeout=0.05)


def test_assert_stack_match_waits_for_a_stack_that_appears_later():
    with parked_threads() as threads:
        threads.start(follow_later, name="late-follower")
        found = assert_stack_match("follow_logs", timeout=LONG_WAIT)
        assert [info.name for info in found] == ["late-follower"]


def test_assert_stack_match_accepts_compiled_patterns():
    with parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        found = assert_stack_match(re.compile(r"in \S*follow_l[o]gs"))
    assert [info.name for info in found] == ["log-follower"]


# --- assert_no_stack_match -----------------------------------------------------------------------------------------


def test_assert_no_stack_match_passes_when_nothing_matches():
    with parked_threads() as threads:
        threads.start(name="bystander")
        assert_no_stack_match("follow_logs")


def test_assert_no_stack_match_raises_listing_every_matching_stack():
    with parked_threads() as threads:
        threads.start(follow_logs, name="follower-1")
        threads.start(follow_logs, name="follower-2")
        threads.start(name="bystander")
        with pytest.raises(LeakError) as excinfo:
            assert_no_stack_match("follow_logs")
    message = str(excinfo.value)
    assert "follower-1" in message and "follower-2" in message
    assert "follow_logs" in message
    assert "bystander" not in message
    assert sorted(info.name for info in excinfo.value.report.forbidden) == ["follower-1", "follower-2"]


def test_assert_no_stack_match_with_timeout_still_raises_for_a_stuck_thread():
    with parked_threads() as threads:
        threads.start(follow_logs, name="log-follower")
        with pytest.raises(LeakError) as excinfo:
            assert_no_stack_match(re.compile("follow_logs"), timeout=0.05)
    assert "log-follower" in str(excinfo.value)


def test_assert_no_stack_match_with_timeout_returns_once_the_thread_ends():
    thread = threading.Thread(target=drain_queue_briefly, name="drainer")
    thread.start()
    try:
        assert_no_stack_match("drain_queue_briefly", timeout=LONG_WAIT)
        assert not thread.is_alive()
    finally:
        thread.join(JOIN_TIMEOUT)


def test_assert_no_stack_match_sees_tasks_on_other_loops():
    with loop_in_thread() as loop:
        create_task_on(loop, stream_events(), "event-stream")
        with pytest.raises(LeakError) as excinfo:
            assert_no_stack_match("stream_events")
    assert [info.name for info in excinfo.value.report.forbidden] == ["event-stream"]


def test_assert_no_stack_match_with_timeout_waits_for_a_task_on_another_loop():
    with loop_in_thread() as loop:
        task = create_task_on(loop, flush_soon(), "flusher")
        assert_no_stack_match("flush_soon", timeout=LONG_WAIT)
        assert task.done()


def test_follow_logs_caller_is_never_matched():
    """The caller's stack holds this very test, whose name contains the keyword."""
    assert_no_stack_match("follow_logs")
    assert_no_stack_match("test_follow_logs_caller_is_never_matched")


def test_calling_task_is_never_matched():
    async def follow_logs_from_a_task() -> None:
        assert_no_stack_match("follow_logs_from_a_task")

    asyncio.run(follow_logs_from_a_task())


# --- arguments -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("assertion", [find_stacks, assert_stack_match, assert_no_stack_match])
def test_no_patterns_is_an_error(assertion):
    with pytest.raises(TypeError):
        assertion()


@pytest.mark.parametrize("assertion", [find_stacks, assert_stack_match, assert_no_stack_match])
@pytest.mark.parametrize(
    "pattern, error",
    [(42, TypeError), (None, TypeError), (b"follow_logs", TypeError), (re.compile(b"x"), TypeError), ("", ValueError)],
)
def test_bad_patterns_are_rejected(assertion, pattern, error):
    with pytest.raises(error):
        assertion(pattern)


@pytest.mark.parametrize("assertion", [assert_stack_match, assert_no_stack_match])
@pytest.mark.parametrize("timeout, error", [(-1, ValueError), (float("nan"), ValueError), ("1", TypeError)])
def test_bad_timeouts_are_rejected(assertion, timeout, error):
    with pytest.raises(error):
        assertion("follow_logs", timeout=timeout)
