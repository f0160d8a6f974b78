"""The text dump and JSON forms of a Snapshot, and their parsers."""

from __future__ import annotations

import asyncio
import json
import threading

import helpers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from leakcheck import Frame, Snapshot, TaskInfo, ThreadInfo, parse_dump, snapshot
from leakcheck._model import format_frames, task_stack

# -- strategies: any text anywhere; odd text is escaped in the dump and reads back exactly

ANY_TEXT = st.text(max_size=30)
QUALNAME = st.from_regex(r"[A-Za-z_<>][A-Za-z0-9_.<>]{0,30}", fullmatch=True)
# Mostly the usual, sometimes the crafted: a line break, a fake frame, a bracket, quotes, a leading backslash.
AWKWARD = st.sampled_from(['x\n  File "y", line 1, in z', "a]b", "\\n", " padded ", "", '"', "\x85", "\u2028"])
NAME_LIKE = QUALNAME | ANY_TEXT | AWKWARD
IDENT = st.integers(min_value=0, max_value=2**64)


@st.composite
def frames(draw: st.DrawFn) -> tuple:
    return tuple(
        Frame(draw(NAME_LIKE), draw(st.integers(0, 10**6)), draw(NAME_LIKE), draw(NAME_LIKE))
        for _ in range(draw(st.integers(0, 4)))
    )


@st.composite
def thread_infos(draw: st.DrawFn) -> ThreadInfo:
    stack = draw(frames())
    return ThreadInfo(
        ident=draw(IDENT),
        native_id=draw(st.none() | IDENT),
        name=draw(st.text(max_size=20)),
        daemon=draw(st.booleans()),
        frames=stack,
        stack=format_frames(stack),
    )


@st.composite
def task_infos(draw: st.DrawFn) -> TaskInfo:
    stack = draw(frames())
    awaiting = draw(st.sampled_from(["", "Future", "Task 'other'", "Event.wait()"]) | NAME_LIKE)
    return TaskInfo(
        id=draw(IDENT),
        name=draw(st.text(max_size=20)),
        coro=draw(NAME_LIKE),
        state=draw(st.sampled_from(["pending", "cancelling", "done"]) | NAME_LIKE),
        thread_ident=draw(st.none() | IDENT),
        frames=stack,
        awaiting=awaiting,
        stack=task_stack(stack, awaiting),
    )


snapshots = st.builds(
    Snapshot,
    threads=st.lists(thread_infos(), max_size=4).map(tuple),
    tasks=st.lists(task_infos(), max_size=4).map(tuple),
    pid=st.integers(0, 2**31),
    taken_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)


@given(snapshots)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_the_text_dump_reads_back_as_the_same_snapshot(original):
    parsed = parse_dump(str(original))
    assert parsed == original
    assert [info.name for info in parsed.threads] == [info.name for info in original.threads]
    assert [info.stack for info in parsed.tasks] == [info.stack for info in original.tasks]


@given(snapshots)
@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
def test_json_reads_back_as_the_same_snapshot(original):
    assert Snapshot.from_json(original.to_json()) == original
    assert Snapshot.from_json(original.to_json().encode()) == original


# -- live snapshots


def test_a_live_snapshot_with_awkward_names_reads_back(monkeypatch):
    names = ["log-follower", "quote ' and \" both", "line\nbreak", "tab\tand ünïcode ✓"]
    with helpers.parked_threads() as parked:
        for name in names:
            parked.start(name=name)
        taken = snapshot()
    parsed = parse_dump(str(taken))
    assert parsed == taken
    assert set(names) <= {info.name for info in parsed.threads}
    follower = next(info for info in parsed.threads if info.name == "log-follower")
    assert any(frame.function == "helpers.park" for frame in follower.frames)


def test_a_crafted_function_name_cannot_pass_for_more_frames():
    fake = 'follow_logs\n  File "/srv/app.py", line 7, in app.innocent\n    pass'
    started, release = threading.Event(), threading.Event()

    def wait() -> None:
        started.set()
        release.wait()

    wait.__code__ = wait.__code__.replace(co_name=fake)
    wait.__qualname__ = fake  # where Python < 3.11 finds the qualified name
    if hasattr(wait.__code__, "co_qualname"):
        wait.__code__ = wait.__code__.replace(co_qualname=fake)
    worker = threading.Thread(target=wait, name="crafted")
    worker.start()
    try:
        started.wait()
        taken = snapshot()
    finally:
        release.set()
        worker.join()
    crafted = next(info for info in taken.threads if info.name == "crafted")
    text = str(taken)
    assert not any(line.startswith('  File "/srv/app.py"') for line in text.split("\n"))  # stays inside one line
    parsed = parse_dump(text)
    assert parsed == taken
    back = next(info for info in parsed.threads if info.name == "crafted")
    assert len(back.frames) == len(crafted.frames)
    assert not any(frame.function == "app.innocent" for frame in back.frames)
    assert any("follow_logs" in frame.function for frame in back.frames)


def test_escaped_text_in_the_dump_is_a_backslash_and_a_literal():
    frame = Frame('/tmp/odd"name.py', 3, "line\nbreak", "\\leading backslash")
    assert format_frames((frame,)) == (
        "  File \\'/tmp/odd\"name.py', line 3, in \\'line\\nbreak'\n    \\'\\\\leading backslash'\n"
    )
    plain = Frame("C:\\src\\app.py", 3, "app.main", 'print("a\\n")')
    assert format_frames((plain,)) == '  File "C:\\src\\app.py", line 3, in app.main\n    print("a\\n")\n'


def test_a_live_snapshot_with_a_task_reads_back_in_both_forms():
    async def follow_logs(never: asyncio.Event) -> None:
        await never.wait()

    async def main() -> Snapshot:
        never = asyncio.Event()
        task = asyncio.create_task(follow_logs(never), name="follow-task")
        await asyncio.sleep(0)
        try:
            return snapshot()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    taken = asyncio.run(main())
    for parsed in (parse_dump(str(taken)), Snapshot.from_json(taken.to_json())):
        assert parsed == taken
        task = next(info for info in parsed.tasks if info.name == "follow-task")
        assert task.coro.endswith("follow_logs")
        assert any(frame.function.endswith("follow_logs") for frame in task.frames)
        assert task.state == "pending"


def test_the_dump_format_documented_in_the_readme():
    info = ThreadInfo(
        ident=140207,
        native_id=4242,
        name="MainThread",
        daemon=False,
        frames=(Frame("/srv/app.py", 12, "app.main", "server.serve_forever()"),),
        stack='  File "/srv/app.py", line 12, in app.main\n    server.serve_forever()\n',
    )
    text = str(Snapshot(threads=(info,), tasks=(), pid=4242, taken_at=1764201301.25))
    assert text == (
        "leakcheck snapshot of pid 4242 (taken at 1764201301.25): 1 thread, 0 tasks\n\n"
        "Thread 'MainThread' (ident=140207, native_id=4242, daemon=False) [running]:\n"
        '  File "/srv/app.py", line 12, in app.main\n'
        "    server.serve_forever()\n"
    )


# -- bad input


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected 'leakcheck snapshot of pid"),
        ("hello\n", "line 1: expected 'leakcheck snapshot of pid"),
        ("leakcheck snapshot of pid 1 (taken at 2.0): 0 threads, 0 tasks\nextra", "line 2: expected a blank line"),
        ("leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\nGoroutine 1:\n", "line 3: expected a"),
        ("leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\n", "the head counts 1 threads"),
        ("leakcheck snapshot of pid 1 (taken at x): 0 threads, 0 tasks\n\n", "line 1: bad time 'x'"),
        (
            "leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\n"
            "Thread 'w' (ident=1, native_id=None, daemon=True) [running]:\n",
            "a running thread cannot have 0 frames",
        ),
    ],
)
def test_text_that_is_not_a_dump_is_a_value_error_naming_the_line(text, message):
    with pytest.raises(ValueError, match="not a leakcheck dump") as raised:
        parse_dump(text)
    assert message in str(raised.value)


def test_parse_dump_takes_only_str():
    with pytest.raises(TypeError, match="as str, not bytes"):
        parse_dump(b"leakcheck snapshot")  # type: ignore[arg-type]


@given(st.text(max_size=300))
@settings(max_examples=200)
def test_random_text_is_parsed_or_refused_with_a_value_error(text):
    try:
        parse_dump("leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\n" + text)
    except ValueError:
        pass


def _valid_document() -> dict:
    return json.loads(snapshot().to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc.pop("format"), 'no "format": "leakcheck-snapshot"'),
        (lambda doc: doc.update(version=2), "unsupported leakcheck snapshot version 2"),
        (lambda doc: doc.pop("pid"), "snapshot has no 'pid'"),
        (lambda doc: doc.update(pid=True), "snapshot.pid is bool"),
        (lambda doc: doc["threads"][0].update(name=3), "threads[0].name is int"),
        (lambda doc: doc["threads"][0]["frames"].append({"filename": "f"}), "has no 'lineno'"),
        (lambda doc: doc.update(tasks={}), "snapshot.tasks is dict"),
    ],
)
def test_json_that_is_not_a_snapshot_is_a_value_error_saying_what_is_wrong(change, message):
    document = _valid_document()
    change(document)
    with pytest.raises(ValueError, match="snapshot") as raised:
        Snapshot.from_json(json.dumps(document))
    assert message in str(raised.value)


@pytest.mark.parametrize("text", ["", "{", "[]", "null", b"\xff\xfe"])
def test_malformed_json_is_a_value_error(text):
    with pytest.raises(ValueError, match="not a leakcheck snapshot"):
        Snapshot.from_json(text)


def test_from_json_takes_only_text_or_bytes():
    with pytest.raises(TypeError, match="as str or bytes, not dict"):
        Snapshot.from_json({})  # type: ignore[arg-type]


def test_a_parsed_snapshot_is_not_live():
    taken = snapshot()
    assert taken._census is not None
    assert parse_dump(str(taken))._census is None
    assert threading.main_thread().name in {info.name for info in parse_dump(str(taken)).threads}
