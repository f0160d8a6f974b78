"""The leak report text, and LeakError / LeakWarning as carriers of the report."""

from __future__ import annotations

import asyncio
import pickle
import re
import threading
from typing import List, Tuple

import pytest
from helpers import NumberedThread, parked_threads

from leakcheck import Frame, LeakError, LeakReport, LeakWarning, ThreadInfo, no_leaks

GRACE = 0.05
HERE = __name__


def follow_logs(release: threading.Event) -> None:
    release.wait()


def send_heartbeats(release: threading.Event) -> None:
    release.wait()


async def stream_events(release: asyncio.Event) -> None:
    await release.wait()


def leak_two_threads_and_a_task() -> Tuple[LeakError, List[threading.Thread], asyncio.Task]:
    """Run a block that leaks two threads and a task; everything is released again before returning."""

    async def scenario() -> Tuple[LeakError, List[threading.Thread], asyncio.Task]:
        release = asyncio.Event()
        tasks: List[asyncio.Task[None]] = []
        try:
            with parked_threads() as threads, pytest.raises(LeakError) as excinfo:
                async with no_leaks(timeout=GRACE):
                    threads.start(follow_logs, name="log-follower", daemon=True)
                    threads.start(send_heartbeats, name="heartbeat", daemon=False)
                    tasks.append(asyncio.create_task(stream_events(release), name="event-stream"))
            return excinfo.value, threads.threads, tasks[0]
        finally:
            release.set()
            await asyncio.gather(*tasks)

    return asyncio.run(scenario())


@pytest.fixture(scope="module")
def leak() -> Tuple[LeakError, List[threading.Thread], asyncio.Task]:
    return leak_two_threads_and_a_task()


def blocks_of(text: str) -> List[str]:
    """The dump blocks after the summary: each starts with a 'Thread ' or 'Task ' header line."""
    body = text.split("\n\n", 1)[1]
    return re.split(r"\n(?=(?:Thread|Task) ')", body)


def test_header_gives_counts_and_time_waited(leak):
    error, _, _ = leak
    header = str(error).splitlines()[0]
    assert header.startswith("leakcheck: ")
    assert "2 leaked threads" in header
    assert "1 leaked task" in header
    assert re.search(r"waited \d+\.\d+s", header)
    assert "0.05s" in header


def test_one_summary_line_per_leak_naming_the_culprit_function(leak):
    error, _, _ = leak
    summary = [line for line in str(error).split("\n\n", 1)[0].splitlines()[1:]]
    assert len(summary) == 3
    (follower,) = [line for line in summary if "'log-follower'" in line]
    (heartbeat,) = [line for line in summary if "'heartbeat'" in line]
    (stream,) = [line for line in summary if "'event-stream'" in line]
    assert f"in {HERE}.follow_logs (" in follower
    assert f"in {HERE}.send_heartbeats (" in heartbeat
    assert f"in {HERE}.stream_events (" in stream
    assert follower.lstrip().startswith("- thread")
    assert stream.lstrip().startswith("- task")


def test_each_thread_block_has_its_header_and_full_stack(leak):
    error, threads, _ = leak
    blocks = blocks_of(str(error))
    for thread in threads:
        (block,) = [block for block in blocks if block.startswith(f"Thread {thread.name!r}")]
        header, *stack = block.rstrip("\n").splitlines()
        assert f"ident={thread.ident}" in header
        assert f"native_id={thread.native_id}" in header
        assert f"daemon={thread.daemon}" in header
        assert header.endswith("[running]:")
        files = [line for line in stack if line.startswith('  File "')]
        assert files[0].endswith("in threading.Thread._bootstrap"), "outermost frame first"
        assert files[-1].endswith("in threading.Condition.wait"), "innermost frame last"
    (follower,) = [block for block in blocks if block.startswith("Thread 'log-follower'")]
    assert f'  File "{__file__}", line ' in follower
    assert f"in {HERE}.follow_logs\n    release.wait()\n" in follower


def test_task_block_has_its_header_and_full_await_chain(leak):
    error, _, task = leak
    (block,) = [block for block in blocks_of(str(error)) if block.startswith("Task 'event-stream'")]
    header, *stack = block.rstrip("\n").splitlines()
    assert f"id=0x{id(task):x}" in header
    assert "coro=stream_events" in header
    assert f"loop_thread={threading.get_ident()}" in header
    assert header.endswith("[pending]:")
    files = [line for line in stack if line.startswith('  File "')]
    assert files[0].endswith(f"in {HERE}.stream_events")
    assert files[-1].endswith("in asyncio.locks.Event.wait")
    assert "await release.wait()" in block


def test_report_fields_match_the_text(leak):
    error, _, _ = leak
    report = error.report
    assert sorted(info.name for info in report.threads) == ["heartbeat", "log-follower"]
    assert [info.name for info in report.tasks] == ["event-stream"]
    assert report.leaks == (*report.threads, *report.tasks)
    for info in report.leaks:
        assert info.header in str(report)
        assert info.stack in str(report)


def test_forbidden_stacks_are_listed_with_their_culprit():
    with parked_threads() as threads:
        threads.start(follow_logs, name="old-follower")
        with pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE, forbid="follow_logs"):
            pass
    text = str(excinfo.value)
    header = text.splitlines()[0]
    assert "1 stack matching 'follow_logs'" in header
    assert "leaked" not in header
    assert f"forbidden: thread 'old-follower' in {HERE}.follow_logs (" in text
    assert "Thread 'old-follower'" in text


def test_empty_report_is_falsy():
    report = LeakReport()
    assert not report
    assert report.leaks == ()
    assert str(report) == "leakcheck: no leaks"


def test_leak_error_pickles_with_its_report(leak):
    error, _, _ = leak
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is LeakError
    assert isinstance(copy, AssertionError)
    assert copy.report == error.report
    assert str(copy) == str(error)
    assert "follow_logs" in str(copy)


def test_leak_warning_pickles_with_its_report(leak):
    error, _, _ = leak
    warning = LeakWarning(error.report)
    copy = pickle.loads(pickle.dumps(warning))
    assert type(copy) is LeakWarning
    assert copy.report == error.report
    assert str(copy) == str(error.report)


def test_a_thread_whose_name_is_not_a_str_is_reported_beside_another_leak():
    release = threading.Event()
    numbered = NumberedThread(target=follow_logs, args=(release,), daemon=True)
    try:
        with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
            numbered.start()
            threads.start(send_heartbeats, name="heartbeat")
        assert sorted(info.name for info in excinfo.value.report.threads) == ["42", "heartbeat"]
    finally:
        release.set()
        numbered.join()


def test_the_summary_line_escapes_hostile_function_and_file_names():
    hostile = "evil\x1b]0;pwned\x07\nleakcheck: no leaks\x1b[2J"
    frames = (Frame(hostile + ".py", 7, hostile, "wait()"),)
    info = ThreadInfo(ident=1, native_id=2, name="bad\x1b[31mname\u202e", daemon=True, frames=frames, stack="")
    text = str(LeakReport(threads=(info,), timeout=1.0))
    summary = text.splitlines()[1]
    assert summary.startswith("  - thread ")
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert text.splitlines()[2] == ""  # no forged line after the summary line
    assert "\\x1b" in summary and "\\n" in summary


def test_leaks_with_identical_stacks_are_shown_once_with_their_count_and_names():
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        for number in range(30):
            threads.start(follow_logs, name=f"follower-{number:02}")
        threads.start(send_heartbeats, name="heartbeat")
    text = str(excinfo.value)
    report = excinfo.value.report
    assert len(report.threads) == 31  # the data stays per item
    names = ", ".join(f"'follower-{number:02}'" for number in range(20))
    assert f"  - 30 threads {names} and 10 more in {HERE}.follow_logs (" in text
    assert f"  - thread 'heartbeat' in {HERE}.send_heartbeats (" in text
    assert f"30 threads with this stack: {names} and 10 more\nThread 'follower-00' (" in text
    assert text.count(f"in {HERE}.follow_logs\n") == 1  # one stack for the thirty
    assert text.count(f"in {HERE}.send_heartbeats\n") == 1


def test_the_report_ends_with_what_to_do_spelled_for_each_leak(leak):
    text = str(leak[0])
    hints = text.split("\nWhat to do:\n", 1)[1]
    assert "  * thread 'log-follower': stop it and join() it before the block ends." in hints
    assert "no_leaks(ignore=[ignore_name('^log-follower$')])" in hints
    assert "leakcheck_ignore = name:^log-follower$" in hints
    assert "leakcheck.ignore_globally(leakcheck.ignore_name('^event-stream$'))" in hints
    assert "  * task 'event-stream': cancel it and await it before the block ends" in hints


def test_a_leak_without_a_name_of_its_own_is_spelled_by_its_top_function():
    with parked_threads() as threads, pytest.raises(LeakError) as excinfo, no_leaks(timeout=GRACE):
        thread = threads.start(follow_logs, name="Thread-77 (follow_logs)")
    assert thread.name == "Thread-77 (follow_logs)"
    hints = str(excinfo.value).split("\nWhat to do:\n", 1)[1]
    assert f"no_leaks(ignore=[ignore_top_function('{HERE}.follow_logs')])" in hints
    assert f"leakcheck_ignore = top:{HERE}.follow_logs" in hints
