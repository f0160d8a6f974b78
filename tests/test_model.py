"""The data leakcheck hands out: immutable, compared and hashed by value, picklable."""

from __future__ import annotations

import copy
import pickle
import threading

import pytest

from leakcheck import Frame, LeakReport, Snapshot, TaskInfo, ThreadInfo, snapshot

FRAME = Frame("worker.py", 12, "worker.follow_logs", "gate.acquire()")


def thread_info(name: str = "log-follower") -> ThreadInfo:
    return ThreadInfo(ident=1, native_id=2, name=name, daemon=True, frames=(FRAME,), stack="  stack\n")


def task_info(name: str = "follow-task") -> TaskInfo:
    return TaskInfo(
        id=0x10,
        name=name,
        coro="worker.follow",
        state="pending",
        thread_ident=1,
        frames=(FRAME,),
        awaiting="Future",
        stack="  stack\n",
    )


def every_record():
    return [
        thread_info(),
        task_info(),
        Snapshot(threads=(thread_info(),), tasks=(task_info(),), pid=7, taken_at=1.5),
        LeakReport(threads=(thread_info(),), waited=0.25, timeout=1.0),
    ]


@pytest.mark.parametrize("record", every_record(), ids=lambda record: type(record).__name__)
def test_records_compare_and_hash_by_value(record):
    twin = copy.copy(record)
    assert twin == record and hash(twin) == hash(record)
    assert record != object()


def test_a_different_field_makes_a_different_record():
    assert thread_info("a") != thread_info("b")
    assert task_info("a") != task_info("b")
    assert thread_info() != task_info()


@pytest.mark.parametrize("record", every_record(), ids=lambda record: type(record).__name__)
def test_records_are_immutable(record):
    with pytest.raises(AttributeError, match="immutable"):
        record.name = "renamed"
    with pytest.raises(AttributeError, match="immutable"):
        del record.threads


@pytest.mark.parametrize("record", every_record(), ids=lambda record: type(record).__name__)
def test_records_survive_pickle_and_deepcopy(record):
    assert pickle.loads(pickle.dumps(record)) == record
    assert copy.deepcopy(record) == record


def test_repr_names_the_record_without_its_stack():
    text = repr(thread_info())
    assert text.startswith("ThreadInfo(ident=1, native_id=2, name='log-follower', daemon=True")
    assert "stack" not in text and "frames" not in text
    assert repr(task_info()).startswith("TaskInfo(id=16, name='follow-task', coro='worker.follow'")


def test_a_live_snapshot_equals_its_copy_without_identity_tokens():
    taken = snapshot()
    assert threading.main_thread().name in {info.name for info in taken.threads}
    plain = Snapshot(threads=taken.threads, tasks=taken.tasks, pid=taken.pid, taken_at=taken.taken_at)
    assert plain == taken and hash(plain) == hash(taken)


def test_an_empty_report_is_falsy_and_a_leak_is_not():
    assert not LeakReport()
    assert LeakReport(tasks=(task_info(),))


def test_a_pickled_live_snapshot_keeps_its_stacks_and_drops_its_identity_tokens():
    taken = snapshot()
    restored = pickle.loads(pickle.dumps(taken))
    assert restored == taken
    assert restored._census is None


def test_a_task_header_names_the_thread_running_its_loop():
    assert task_info().header == "Task 'follow-task' (id=0x10, coro=worker.follow, loop_thread=1) [pending]:"


def test_a_task_header_says_when_its_loop_is_not_running():
    idle = TaskInfo(
        id=0x10,
        name="follow-task",
        coro="worker.follow",
        state="pending",
        thread_ident=None,
        frames=(FRAME,),
        awaiting="Future",
        stack="  stack\n",
    )
    assert idle.header == "Task 'follow-task' (id=0x10, coro=worker.follow, loop=not running) [pending]:"


@pytest.mark.parametrize(
    ("coro", "state", "shown"),
    [
        ("worker.follow", "pending", "coro=worker.follow, loop_thread=1) [pending]:"),
        ("x, loop_thread=5) [done", "pending", "coro=\\'x, loop_thread=5) [done', loop_thread=1) [pending]:"),
        ("worker.follow", "a], loop_thread=5) [b", "coro=worker.follow, loop_thread=1) [\\'a], loop_thread=5) [b']:"),
        ("<lambda>) [x", "x) [y", "coro=<lambda>) [x, loop_thread=1) [x) [y]:"),  # no comma, no "]": plain
    ],
)
def test_a_task_header_escapes_coroutine_and_state_text_that_could_pass_for_other_fields(coro, state, shown):
    task = TaskInfo(
        id=0x10, name="t", coro=coro, state=state, thread_ident=1, frames=(), awaiting="", stack=""
    )
    assert task.header == f"Task 't' (id=0x10, {shown}"


def test_a_snapshot_holds_at_least_one_kind_and_only_records_of_each() -> None:
    with pytest.raises(ValueError, match="a snapshot holds at least one kind"):
        Snapshot(records={})
    with pytest.raises(TypeError, match="threads holds ThreadInfo records, not int"):
        Snapshot(records={"threads": [1]})  # type: ignore[list-item]
    with pytest.raises(TypeError, match="tasks holds TaskInfo records, not ThreadInfo"):
        LeakReport(tasks=(thread_info(),))  # type: ignore[arg-type]
