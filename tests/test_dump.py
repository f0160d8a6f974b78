"""The text dump and JSON forms of a Snapshot, and their parsers."""

from __future__ import annotations

import asyncio
import gc
import json
import math
import threading
import time
import warnings
from pathlib import Path

import helpers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leakcheck
from leakcheck import Frame, Snapshot, TaskInfo, ThreadInfo, parse_dump, snapshot
from leakcheck.kinds.tasks import task_stack
from leakcheck.records import format_frames
from leakcheck.reporting.dump import MAX_INT

# -- strategies: any text anywhere; odd text is escaped in the dump and reads back exactly

ANY_TEXT = st.text(max_size=30)
QUALNAME = st.from_regex(r"[A-Za-z_<>][A-Za-z0-9_.<>]{0,30}", fullmatch=True)
# Text crafted to pass for the fields of a task header that follow the coroutine or the state.
HEADER_TAILS = [
    "], loop_thread=5) [",
    "x, loop_thread=5) [pending",
    "x, loop_thread=None) [done]:",
    "x, loop=not running) [pending]:",
    "a, b",
    "x) [y",
    "]:",
    "\\'pending'",
    "\\'x', loop_thread=1) [\\'y'",
]
# Mostly the usual, sometimes the crafted: a line break, a fake frame, a bracket, quotes, a leading backslash.
AWKWARD = st.sampled_from(
    ['x\n  File "y", line 1, in z', "a]b", "\\n", " padded ", "", '"', "\x85", "\u2028", *HEADER_TAILS]
)
NAME_LIKE = QUALNAME | ANY_TEXT | AWKWARD
IDENT = st.integers(min_value=0, max_value=MAX_INT)
# Any text, with crafted header fields spliced in.
HEADER_TEXT = st.lists(ANY_TEXT | st.sampled_from(HEADER_TAILS), max_size=4).map("".join)


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
        coro=draw(NAME_LIKE | HEADER_TEXT),
        state=draw(st.sampled_from(["pending", "cancelling", "done"]) | NAME_LIKE | HEADER_TEXT),
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


def _readme_dump_example() -> str:
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("### The dump format") :]
    return section[section.index("```text\n") + len("```text\n") : section.index("```\n", 1)]


def test_the_dump_example_of_the_readme_is_what_the_parser_reads_and_the_writer_writes():
    example = _readme_dump_example()
    parsed = parse_dump(example)
    assert [info.name for info in (*parsed.threads, *parsed.tasks)] == ["MainThread", "follow-logs", "flush-metrics"]
    assert [task.thread_ident for task in parsed.tasks] == [140207, None]
    assert str(parsed) == example


def test_a_task_whose_loop_is_not_running_says_so_and_reads_back():
    task = TaskInfo(
        id=0x7F3A9E,
        name="flush-metrics",
        coro="app.flush_metrics",
        state="pending",
        thread_ident=None,
        frames=(),
        awaiting="Future",
        stack=task_stack((), "Future"),
    )
    text = str(Snapshot(threads=(), tasks=(task,), pid=1, taken_at=2.0))
    assert "Task 'flush-metrics' (id=0x7f3a9e, coro=app.flush_metrics, loop=not running) [pending]:\n" in text
    assert "None" not in text
    assert parse_dump(text).tasks == (task,)
    assert Snapshot.from_json(parse_dump(text).to_json()).tasks[0].thread_ident is None


def test_an_older_dump_saying_loop_thread_none_still_reads_back():
    older = (
        "leakcheck snapshot of pid 4242 (taken at 1764201301.25): 0 threads, 1 task\n\n"
        "Task 'follow-logs' (id=0x7f3a2c, coro=app.follow_logs, loop_thread=None) [pending]:\n"
        '  File "/srv/app.py", line 30, in app.follow_logs\n'
        "    line = await queue.get()\n"
        "  Awaiting Future\n"
    )
    (task,) = parse_dump(older).tasks
    assert (task.name, task.id, task.coro, task.thread_ident, task.state) == (
        "follow-logs",
        0x7F3A2C,
        "app.follow_logs",
        None,
        "pending",
    )
    assert task.frames == (Frame("/srv/app.py", 30, "app.follow_logs", "line = await queue.get()"),)
    assert str(parse_dump(older)) == older.replace("loop_thread=None", "loop=not running")


def test_a_live_task_on_a_loop_that_is_not_running_says_so_and_reads_back():
    async def flush_metrics(never: asyncio.Event) -> None:
        await never.wait()

    loop = asyncio.new_event_loop()
    try:
        task = loop.create_task(flush_metrics(asyncio.Event()), name="idle-loop-task")
        loop.run_until_complete(asyncio.sleep(0))  # one step: the task waits on its event, the loop stops
        taken = snapshot()
    finally:
        task.cancel()
        loop.run_until_complete(asyncio.gather(task, return_exceptions=True))
        loop.close()
    info = next(info for info in taken.tasks if info.name == "idle-loop-task")
    assert info.thread_ident is None
    assert ", loop=not running) [pending]:" in info.header
    assert parse_dump(str(taken)) == taken


# -- crafted coroutine and state text: no field passes for another


@pytest.mark.parametrize("thread_ident", [140207, None])
@pytest.mark.parametrize("field", ["coro", "state"])
@pytest.mark.parametrize("text", HEADER_TAILS)
def test_crafted_coroutine_or_state_text_reads_back_exactly(text, field, thread_ident):
    fields = {"coro": "app.follow_logs", "state": "pending", field: text}
    task = TaskInfo(
        id=0x7F3A2C,
        name="follow-logs",
        thread_ident=thread_ident,
        frames=(),
        awaiting="",
        stack="",
        **fields,
    )
    parsed = parse_dump(str(Snapshot(threads=(), tasks=(task,), pid=1, taken_at=2.0)))
    (back,) = parsed.tasks
    assert (back.coro, back.state, back.thread_ident) == (task.coro, task.state, thread_ident)
    assert back == task


def test_a_state_holding_a_fake_loop_thread_keeps_the_real_one():
    # The case of the report: the state came back as "b'", the loop thread as 5, the coroutine as the rest.
    task = TaskInfo(
        id=1, name="n", coro="c", state="a], loop_thread=5) [b", thread_ident=1, frames=(), awaiting="", stack=""
    )
    (back,) = parse_dump(str(Snapshot(threads=(), tasks=(task,), pid=1, taken_at=1.0))).tasks
    assert (back.coro, back.state, back.thread_ident) == ("c", "a], loop_thread=5) [b", 1)


@given(coro=HEADER_TEXT, state=HEADER_TEXT, thread_ident=st.none() | IDENT)
@settings(max_examples=300)
def test_any_coroutine_and_state_text_reads_back_exactly(coro, state, thread_ident):
    task = TaskInfo(id=1, name="n", coro=coro, state=state, thread_ident=thread_ident, frames=(), awaiting="", stack="")
    assert parse_dump(str(Snapshot(threads=(), tasks=(task,), pid=1, taken_at=1.0))).tasks == (task,)


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


NUMBERS = (
    "leakcheck snapshot of pid {pid} (taken at {time}): {threads} thread, 1 task\n\n"
    "Thread 'w' (ident={ident}, native_id={native_id}, daemon=True) [running]:\n"
    '  File "w.py", line {lineno}, in w.run\n'
    "\n"
    "Task 't' (id=0x{id}, coro=t.run, loop_thread={loop}) [pending]:\n"
)
FITTING = {"pid": 1, "time": "2.0", "threads": 1, "ident": 1, "native_id": 2, "lineno": 3, "id": "10", "loop": 1}


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("time", "nan", "line 1: bad time 'nan'"),
        ("time", "inf", "line 1: bad time 'inf'"),
        ("time", "-inf", "line 1: bad time '-inf'"),
        ("time", "1e999", "line 1: bad time '1e999'"),  # float() reads it as inf
        ("time", "1" + "0" * 309, "line 1: bad time '1000"),
        ("time", " 2.0", "line 1: bad time ' 2.0'"),  # float() would take it
        ("pid", "1" + "0" * 20, "line 1: pid out of range: 1000"),
        ("pid", "-" + "9" * 5000, "line 1: pid out of range: -999"),  # int() refuses so many digits, or is slow
        ("threads", "9" * 5000, "line 1: thread count out of range: 999"),
        ("ident", str(2**64), "line 3: ident out of range: 18446744073709551616"),
        ("native_id", "9" * 5000, "line 3: native_id out of range: 999"),
        ("lineno", "1" + "0" * 25, "line 4: line number out of range: 1000"),
        ("id", "1" + "0" * 16, "line 6: id out of range: 1000"),
        ("loop", str(2**64), "line 6: loop_thread out of range: 18446744073709551616"),
    ],
)
def test_a_number_no_snapshot_holds_is_a_value_error_naming_the_line(field, value, message):
    assert len(parse_dump(NUMBERS.format(**FITTING)).tasks) == 1
    with pytest.raises(ValueError, match="not a leakcheck dump") as raised:
        parse_dump(NUMBERS.format(**{**FITTING, field: value}))
    assert message in str(raised.value)
    assert len(str(raised.value)) < 200


def test_the_largest_numbers_read_back_in_both_forms():
    frame = Frame("w.py", MAX_INT, "w.run", "")
    thread = ThreadInfo(
        ident=MAX_INT, native_id=MAX_INT, name="w", daemon=True, frames=(frame,), stack=format_frames((frame,))
    )
    task = TaskInfo(
        id=MAX_INT, name="t", coro="t.run", state="pending", thread_ident=MAX_INT, frames=(), awaiting="", stack=""
    )
    for pid, taken_at in ((MAX_INT, 1.7976931348623157e308), (-MAX_INT, -1.7976931348623157e308), (0, 5e-324)):
        largest = Snapshot(threads=(thread,), tasks=(task,), pid=pid, taken_at=taken_at)
        assert parse_dump(str(largest)) == largest
        assert Snapshot.from_json(largest.to_json()) == largest


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("Thread '\\i' (ident=1, native_id=None, daemon=True) [running]:", "line 3: bad name '\\i'"),
        ("Thread '\\777' (ident=1, native_id=None, daemon=True) [running]:", "line 3: bad name '\\777'"),
        ("Task 't' (id=0x1, coro=\\'\\q', loop_thread=1) [pending]:", "line 3: bad escaped text \\'\\q'"),
        ("Task 't' (id=0x1, coro=c, loop_thread=1) [\\'\\N{NO SUCH NAME}']:", "line 3: bad escaped text"),
    ],
)
def test_an_escape_repr_never_writes_is_a_value_error_and_no_warning(line, message):
    # literal_eval reads "\i" as a backslash and an i, with a warning (an error under -W error).
    text = f"leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\n{line}\n"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(ValueError, match="not a leakcheck dump") as raised:
            parse_dump(text)
    assert message in str(raised.value)
    assert [str(warning.message) for warning in caught] == []


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


SAMPLE_FRAMES = (Frame("/srv/app.py", 30, "app.follow_logs", "line = await queue.get()"),)
SAMPLE = Snapshot(
    threads=(
        ThreadInfo(
            ident=140207,
            native_id=4242,
            name="MainThread",
            daemon=False,
            frames=SAMPLE_FRAMES,
            stack=format_frames(SAMPLE_FRAMES),
        ),
    ),
    tasks=(
        TaskInfo(
            id=0x7F3A2C,
            name="follow-logs",
            coro="app.follow_logs",
            state="pending",
            thread_ident=140207,
            frames=SAMPLE_FRAMES,
            awaiting="Future",
            stack=task_stack(SAMPLE_FRAMES, "Future"),
        ),
    ),
    pid=4242,
    taken_at=1764201301.25,
)


def _valid_document() -> dict:
    assert Snapshot.from_json(SAMPLE.to_json()) == SAMPLE
    return json.loads(SAMPLE.to_json())


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda doc: doc.pop("format"), 'no "format": "leakcheck-snapshot"'),
        (lambda doc: doc.update(version=3), "unsupported leakcheck snapshot version 3"),
        (lambda doc: doc.pop("pid"), "snapshot has no 'pid'"),
        (lambda doc: doc.update(pid=True), "snapshot.pid is bool"),
        (lambda doc: doc["threads"][0].update(name=3), "threads[0].name is int"),
        (lambda doc: doc["threads"][0]["frames"].append({"filename": "f"}), "has no 'lineno'"),
        (lambda doc: doc.update(tasks={}), "snapshot.tasks is dict"),
        (lambda doc: doc.update(version=True), "unsupported leakcheck snapshot version True"),
        # numbers no snapshot holds: too long for a float, NaN, infinite, negative, past 64 bits
        (lambda doc: doc.update(taken_at=10**309), "snapshot.taken_at is out of range: 1000000000"),
        (lambda doc: doc.update(taken_at=math.nan), "snapshot.taken_at is out of range: NaN"),
        (lambda doc: doc.update(taken_at=math.inf), "snapshot.taken_at is out of range: Infinity"),
        (lambda doc: doc.update(taken_at=-math.inf), "snapshot.taken_at is out of range: -Infinity"),
        (lambda doc: doc.update(pid=10**20), "snapshot.pid is out of range: 100000000000000000000"),
        (lambda doc: doc.update(pid=-(2**64)), "snapshot.pid is out of range: -18446744073709551616"),
        (lambda doc: doc["threads"][0].update(ident=-1), "threads[0].ident is out of range: -1"),
        (lambda doc: doc["threads"][0].update(ident=2**64), "threads[0].ident is out of range: 18446744073709551616"),
        (lambda doc: doc["threads"][0].update(native_id=-1), "threads[0].native_id is out of range: -1"),
        (lambda doc: doc["threads"][0].update(ident=1.5), "threads[0].ident is float"),
        (lambda doc: doc["threads"][0]["frames"][0].update(lineno=10**30), "frames[0].lineno is out of range: 1000"),
        (lambda doc: doc["tasks"][0].update(id=-1), "tasks[0].id is out of range: -1"),
        (lambda doc: doc["tasks"][0].update(thread_ident=2**64), "tasks[0].thread_ident is out of range"),
        (lambda doc: doc["tasks"][0]["frames"][0].update(lineno=math.nan), "frames[0].lineno is out of range: NaN"),
    ],
)
def test_json_that_is_not_a_snapshot_is_a_value_error_saying_what_is_wrong(change, message):
    document = _valid_document()
    change(document)
    with pytest.raises(ValueError, match="snapshot") as raised:
        Snapshot.from_json(json.dumps(document))
    assert message in str(raised.value)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1" + "0" * 309, "1" + "0" * 5000, "NaN", "Infinity"])
def test_a_time_no_float_holds_is_a_value_error_naming_it(number):
    text = SAMPLE.to_json()
    assert '"taken_at":1764201301.25,' in text
    with pytest.raises(ValueError, match=r"^not a leakcheck snapshot: snapshot\.taken_at is out of range: ") as raised:
        Snapshot.from_json(text.replace('"taken_at":1764201301.25,', f'"taken_at":{number},'))
    assert len(str(raised.value)) < 200


def test_to_json_never_writes_what_from_json_refuses():
    with pytest.raises(ValueError):
        Snapshot(threads=(), tasks=(), pid=1, taken_at=math.nan).to_json()


def _paths(value: object, path: tuple = ()):
    """The path of every value in a JSON document, as keys and indexes."""
    yield path
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        yield from _paths(item, (*path, key))


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
PATHS = list(_paths(_valid_document()))[1:]
NUMBERS_AT = ("version", "pid", "taken_at", "ident", "native_id", "lineno", "id", "thread_ident")
NUMBER_PATHS = [path for path in PATHS if path[-1] in NUMBERS_AT]
EXTREME_NUMBERS = [10**309, -(10**309), 10**30, 2**64, -1, -(2**64), 1e308, -0.0, math.nan, math.inf, -math.inf]


def _read_or_refused(path: tuple, value: object) -> None:
    document = _valid_document()
    *parents, last = path
    target = document
    for key in parents:
        target = target[key]
    target[last] = value
    try:
        Snapshot.from_json(json.dumps(document))  # NaN and Infinity too: json.dumps writes them
    except ValueError:
        pass


@pytest.mark.parametrize("value", EXTREME_NUMBERS)
def test_an_extreme_number_in_any_numeric_field_is_read_or_refused_with_a_value_error(value):
    assert len(NUMBER_PATHS) == 9  # each of NUMBERS_AT, and the line number of a task frame too
    for path in NUMBER_PATHS:
        _read_or_refused(path, value)


@given(path=st.sampled_from(PATHS), value=JSON_VALUES)
@settings(max_examples=300)
def test_any_value_anywhere_in_the_json_is_read_or_refused_with_a_value_error(path, value):
    _read_or_refused(path, value)


SPLICED = st.text(alphabet="0123456789-+.eEinfaNx,()[]:'\"\\ \n", max_size=40) | st.text(max_size=20)


@given(st.data())
@settings(max_examples=400)
def test_a_dump_with_any_text_spliced_in_is_read_or_refused_with_a_value_error(data):
    text = str(SAMPLE)
    start = data.draw(st.integers(0, len(text)))
    end = data.draw(st.integers(start, min(len(text), start + 30)))
    try:
        parse_dump(text[:start] + data.draw(SPLICED) + text[end:])
    except ValueError:
        pass


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


# -- reading takes time linear in the length of the text, whatever the text

_TASK_DUMP = "leakcheck snapshot of pid 1 (taken at 2.0): 0 threads, 1 task\n\n"
_THREAD_DUMP = (
    "leakcheck snapshot of pid 1 (taken at 2.0): 1 thread, 0 tasks\n\n"
    "Thread 'w' (ident=1, native_id=None, daemon=True) [running]:\n"
)
# Each makes a crafted dump of k repeats. A pattern that backtracks over a whole field, or a loop that
# copies the rest of the text at each line, takes time in proportion to the square of the length.
CRAFTED = {
    "fake task fields": lambda k: _TASK_DUMP + "Task 'x' (id=0x1, coro=" + ", loop_thread=1) [" * k + "x",
    "fake task fields, closed": lambda k: _TASK_DUMP + "Task 'x' (id=0x1, coro=c" + ", loop_thread=1) [" * k + "]]:",
    "unclosed escaped state": lambda k: _TASK_DUMP + "Task 'x' (id=0x1, coro=c, loop_thread=1) [\\'" + "]:" * k,
    "unclosed escaped coroutine": lambda k: _TASK_DUMP + "Task 'x' (id=0x1, coro=\\'" + "', loop_thread=1) [" * k,
    "unclosed name": lambda k: _TASK_DUMP + "Task '" + "\\'" * k,
    "unclosed file name": lambda k: _THREAD_DUMP + '  File "' + '", line 1, in ' * k,
    "unclosed escaped file name": lambda k: _THREAD_DUMP + "  File \\'" + "', line 1, in \\'" * k,
    "long escaped function": lambda k: _THREAD_DUMP + '  File "a", line 1, in \\\'' + "x\\n" * k + "'\n",
    "long pid": lambda k: "leakcheck snapshot of pid " + "1" * k + " (taken at 2.0): 0 threads, 0 tasks\n",
    "long time": lambda k: "leakcheck snapshot of pid 1 (taken at " + "1" * k + "): 0 threads, 0 tasks\n",
    "many frames": lambda k: _THREAD_DUMP + '  File "a", line 1, in f\n' * k,
    "many blank lines": lambda k: "leakcheck snapshot of pid 1 (taken at 2.0): 0 threads, 0 tasks\n" + "\n" * k,
}


def _cpu_seconds(text: str) -> float:
    """The CPU time of this thread reading ``text``: other processes on a busy machine do not count."""
    gc.disable()  # a collection of the whole test process would count too
    try:
        start = time.thread_time()
        try:
            parse_dump(text)
        except ValueError:
            pass
        return time.thread_time() - start
    finally:
        gc.enable()


@pytest.mark.parametrize("crafted", CRAFTED.values(), ids=CRAFTED.keys())
def test_reading_a_crafted_dump_takes_time_linear_in_its_length(crafted):
    """A coarse guard against quadratic time; benchmarks/ is the place for the speed itself.

    Four times the text should take four times as long; eight times, plus 50 ms, is allowed, where a
    quadratic reader takes sixteen (1 MB of the first case once took 190 s). The best of three runs
    leaves out the noise of a shared machine.
    """
    k = 1
    while len(crafted(k)) < 64_000:
        k *= 2
    small, large = crafted(k), crafted(4 * k)
    assert len(large) > 3.9 * len(small)
    small_seconds = min(_cpu_seconds(small) for _ in range(3))
    allowed = 8 * small_seconds + 0.05
    runs = []
    for _ in range(3):
        runs.append(_cpu_seconds(large))
        if runs[-1] < allowed or runs[-1] > 2 * allowed:  # passed, or far too slow to be noise
            break
    assert min(runs) < allowed, f"{len(small)} characters took {small_seconds:.4f} s, {len(large)} took {runs} s"


# -- kinds: every registered kind in both forms, and the kinds the head and the JSON name

from leakcheck.kinds.registry import KIND_NAMES as _KIND_NAMES  # noqa: E402


def _one_record_of(name: str):
    """A record of the kind ``name``, built by hand."""
    if name == "threads":
        return SAMPLE.threads[0]
    if name == "tasks":
        return SAMPLE.tasks[0]
    if name == "processes":
        from leakcheck.kinds.processes import ProcessInfo

        return ProcessInfo(pid=4321, name="sleep", state="sleeping", command="sleep 60")
    if name == "fds":
        from leakcheck.kinds.fds import FdInfo

        return FdInfo(fd=7, type="file", target="/srv/app.log", mode="w")
    if name == "os_threads":
        from leakcheck.kinds.os_threads import OsThreadInfo

        return OsThreadInfo(native_id=4243, ident=140208, name="python", python=True, frames=SAMPLE_FRAMES)
    if name == "probes":
        from leakcheck.kinds.probes import ProbeInfo

        return ProbeInfo("pool", "'conn-1'", "checked out by handler")
    raise AssertionError(f"no sample record for the kind {name!r}: add one here")


def _head(counts: str) -> str:
    return f"leakcheck snapshot of pid 1 (taken at 2.0): {counts}\n\n"


def test_a_snapshot_of_every_kind_reads_back_in_both_forms_with_its_head_in_registry_order():
    from leakcheck.kinds.registry import KIND_NAMES, kind

    records = {name: (_one_record_of(name),) for name in reversed(KIND_NAMES)}
    every = Snapshot(records=records, pid=4242, taken_at=1764201301.25)
    assert every.kinds == KIND_NAMES
    text = str(every)
    counts = ", ".join(f"1 {kind(name).info_type.kind}" for name in KIND_NAMES)
    assert text.split("\n", 1)[0] == f"leakcheck snapshot of pid 4242 (taken at 1764201301.25): {counts}"
    assert parse_dump(text) == every
    assert Snapshot.from_json(every.to_json()) == every
    assert json.loads(every.to_json())["kinds"] == list(KIND_NAMES)


@pytest.mark.parametrize("name", _KIND_NAMES)
def test_a_dump_counting_none_of_one_kind_reads_back_as_that_kind_alone(name):
    from leakcheck.kinds.registry import kind

    info_type = kind(name).info_type
    for counts in (f"0 {info_type.plural}", f"1 {info_type.kind}"):
        blocks = f"{_one_record_of(name).header}\n{_one_record_of(name).stack}" if counts.startswith("1") else ""
        parsed = parse_dump(_head(counts) + blocks)
        assert parsed.kinds == (name,)
        assert parsed.of(name) == (() if not blocks else (_one_record_of(name),))


def test_a_dump_with_a_file_descriptor_block_reads_back():
    from leakcheck.kinds.fds import FdInfo

    info = FdInfo(fd=7, type="file", target="/srv/app.log", mode="w")
    snap = Snapshot(records={"threads": (), "tasks": (), "fds": (info,)}, pid=4242, taken_at=1.5)
    text = str(snap)
    assert text == (
        f"leakcheck snapshot of pid 4242 (taken at 1.5): 0 threads, 0 tasks, 1 {FdInfo.kind}\n\n"
        "FD 7 (type=file) [open]:\n"
        "  Target: /srv/app.log\n"
        "  Mode: w\n"
    )
    parsed = parse_dump(text)
    assert parsed == snap
    assert parsed.kinds == ("threads", "tasks", "fds")
    assert parsed.of("fds") == (info,) and parsed.threads == () and parsed.tasks == ()
    assert Snapshot.from_json(snap.to_json()) == snap


def test_a_version_1_json_document_still_reads():
    document = json.loads(SAMPLE.to_json())
    assert document["version"] == 2 and document["kinds"] == ["threads", "tasks"]
    document["version"] = 1
    del document["kinds"]
    old = Snapshot.from_json(json.dumps(document))
    assert old == SAMPLE
    assert old.kinds == ("threads", "tasks")
    document.pop("tasks")
    with pytest.raises(ValueError, match="snapshot has no 'tasks'"):
        Snapshot.from_json(json.dumps(document))


def test_an_unknown_header_word_is_a_value_error_naming_every_header():
    from leakcheck.kinds.registry import KIND_NAMES, kind

    with pytest.raises(ValueError, match="not a leakcheck dump: line 3: expected a header") as raised:
        parse_dump(_head("1 thread, 0 tasks") + "Goroutine 1 [running]:\n")
    message = str(raised.value)
    for name in KIND_NAMES:
        assert f"'{kind(name).info_type.header_word} ...'" in message, message
    assert "'Goroutine 1 [running]:'" in message


@pytest.mark.parametrize(
    "counts", ["0 threads, 1 goroutine", "1 socket", "0 thread descriptors", "0 Threads", "threads"]
)
def test_an_unknown_noun_in_the_head_is_a_value_error_naming_every_kind(counts):
    from leakcheck.kinds.registry import KIND_NAMES, kind

    with pytest.raises(ValueError, match="not a leakcheck dump: line 1: expected counts of") as raised:
        parse_dump(_head(counts))
    message = str(raised.value)
    for name in KIND_NAMES:
        assert kind(name).info_type.plural in message, message


@pytest.mark.parametrize(
    "counts",
    [
        "0 threads, 0 tasks, 0 threads",
        "1 thread, 0 threads",
        "0 tasks, 1 task",
        "0 file descriptors, 0 file descriptors",
        "0 processes, 0 threads, 1 process",
    ],
)
def test_a_head_that_counts_a_kind_twice_is_a_value_error(counts):
    with pytest.raises(ValueError, match=r"line 1: the head counts (threads|tasks|fds|processes) twice"):
        parse_dump(_head(counts))


def test_a_block_of_a_kind_the_head_does_not_count_is_a_value_error():
    fd = _one_record_of("fds")
    with pytest.raises(ValueError, match="not a leakcheck dump: line 3: the head counts no file descriptors"):
        parse_dump(_head("0 threads, 0 tasks") + f"{fd.header}\n{fd.stack}")


@pytest.mark.parametrize(
    ("kinds", "message"),
    [
        (["threads", "sockets"], "unknown or repeated kind 'sockets'"),
        (["threads", "tasks", "threads"], "unknown or repeated kind 'threads'"),
        (["Threads"], "unknown or repeated kind 'Threads'"),
        ([3], "unknown or repeated kind 'int'"),
        (["threads", "fds"], "snapshot has no 'fds'"),
        ("threads", "snapshot.kinds is str"),
        (None, "snapshot.kinds is NoneType"),
    ],
)
def test_a_json_kinds_list_naming_an_unknown_or_repeated_kind_is_a_value_error(kinds, message):
    document = json.loads(SAMPLE.to_json())
    document["kinds"] = kinds
    with pytest.raises(ValueError) as raised:
        Snapshot.from_json(json.dumps(document))
    assert str(raised.value).startswith("not a leakcheck snapshot: ")
    assert message in str(raised.value)


def test_a_version_2_document_without_kinds_is_a_value_error():
    document = json.loads(SAMPLE.to_json())
    del document["kinds"]
    with pytest.raises(ValueError, match="snapshot has no 'kinds'"):
        Snapshot.from_json(json.dumps(document))


# -- grouped dumps: identical stacks once, with their count and each one's header line


def same_records(parsed: Snapshot, original: Snapshot) -> bool:
    """The same records of each kind, in any order: grouping puts the biggest group first."""
    return parsed.kinds == original.kinds and all(
        sorted(map(repr, parsed.of(name))) == sorted(map(repr, original.of(name))) for name in original.kinds
    )


# Snapshots whose records often share a stack: each thread or task copies the stack of an earlier one.
alike_snapshots = st.builds(
    lambda threads, tasks, stacks, pid, taken_at: Snapshot(
        threads=tuple(
            ThreadInfo(
                ident=t.ident, native_id=t.native_id, name=t.name, daemon=t.daemon, frames=f, stack=format_frames(f)
            )
            for t, f in zip(threads, stacks, strict=False)
        ),
        tasks=tasks,
        pid=pid,
        taken_at=taken_at,
    ),
    threads=st.lists(thread_infos(), max_size=6).map(tuple),
    tasks=st.lists(task_infos(), max_size=3).flatmap(lambda tasks: st.just(tuple(tasks * 2))),
    stacks=st.lists(st.sampled_from([(), (Frame("w.py", 3, "w.run", "job = jobs.get()"),)]), min_size=6, max_size=6),
    pid=st.integers(0, 2**31),
    taken_at=st.floats(min_value=0, max_value=4e9, allow_nan=False),
)


@given(snapshots | alike_snapshots)
@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
def test_a_grouped_dump_reads_back_as_the_same_records(original):
    grouped = original.dump(group=True)
    assert same_records(parse_dump(grouped), original)
    assert Snapshot.from_json(original.to_json()) == original  # the JSON is never grouped
    assert original.dump(group=False) == str(original)


def test_a_grouped_dump_shows_a_shared_stack_once_with_its_count_and_every_header():
    with helpers.parked_threads() as parked:
        workers = helpers.Gathered(parked, 5, "worker")
        try:
            taken = snapshot(tasks=False)
        finally:
            workers.release()
    ungrouped, grouped = str(taken), taken.dump(group=True)
    blocks = grouped.split("\n\n")[1:]
    # Biggest group first: the five workers, then every other thread alone.
    assert blocks[0].startswith("5 threads with this stack:\n")
    headers = blocks[0].split("\n")[1:6]
    assert [header.split("'")[1] for header in headers] == [f"worker-{number}" for number in range(5)]
    assert all(header.startswith("Thread ") and header.endswith(":") for header in headers)
    assert blocks[0].count("in helpers.Gathered.work") == 1
    assert ungrouped.count("in helpers.Gathered.work") == 5
    assert all(not block[0].isdigit() for block in blocks[1:])
    assert same_records(parse_dump(grouped), taken)


def test_grouping_keeps_creation_sites_and_tells_apart_stacks_that_differ_only_there():
    frame = Frame("w.py", 3, "w.run", "job = jobs.get()")
    sites = [leakcheck.CreationSite((Frame("app.py", line, "app.start", "t.start()"),), 0) for line in (10, 10, 20)]
    threads = tuple(
        ThreadInfo(
            ident=i + 1, native_id=None, name=f"w{i}", daemon=True, frames=(frame,), stack=format_frames((frame,))
        ).with_created(site)
        for i, site in enumerate(sites)
    )
    taken = Snapshot(records={"threads": threads}, pid=1, taken_at=2.0)
    grouped = taken.dump(group=True)
    assert grouped.count("2 threads with this stack:") == 1 and grouped.count("Created at") == 2
    assert same_records(parse_dump(grouped), taken)


def test_records_without_a_stack_group_as_like_this():
    task = TaskInfo(id=1, name="t", coro="c", state="pending", thread_ident=None, frames=(), awaiting="", stack="")
    twins = (
        task,
        TaskInfo(id=2, name="u", coro="c", state="pending", thread_ident=None, frames=(), awaiting="", stack=""),
    )
    taken = Snapshot(threads=(), tasks=twins, pid=1, taken_at=2.0)
    assert "2 tasks like this:\n" in taken.dump(group=True)
    assert same_records(parse_dump(taken.dump(group=True)), taken)


def test_a_hostile_name_in_a_group_stays_one_escaped_header():
    frame = Frame("w.py", 3, "w.run", "")
    hostile = "x' (ident=9, native_id=None, daemon=True) [running]:\n3 threads with this stack:\nThread 'y"
    threads = tuple(
        ThreadInfo(ident=i + 1, native_id=None, name=name, daemon=True, frames=(frame,), stack=format_frames((frame,)))
        for i, name in enumerate([hostile, "\x1b[2J\x07", "plain"])
    )
    taken = Snapshot(threads=threads, tasks=(), pid=1, taken_at=2.0)
    grouped = taken.dump(group=True)
    assert "\x1b" not in grouped and "\x07" not in grouped
    assert grouped.split("\n")[2] == "3 threads with this stack:" and grouped.count("with this stack:\n") == 1
    assert [info.name for info in parse_dump(grouped).threads] == [hostile, "\x1b[2J\x07", "plain"]


def test_group_takes_only_a_bool():
    taken = Snapshot(threads=(), tasks=(), pid=1, taken_at=2.0)
    with pytest.raises(TypeError, match="group must be True or False, not int"):
        taken.dump(group=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        taken.dump(True)  # type: ignore[call-arg]


GROUP = (
    "leakcheck snapshot of pid 1 (taken at 2.0): {count} thread{s}, 0 tasks\n\n"
    "{head}\n"
    "Thread 'a' (ident=1, native_id=None, daemon=True) [running]:\n"
    "{second}\n"
    '  File "w.py", line 3, in w.run\n'
)
SECOND = "Thread 'b' (ident=2, native_id=None, daemon=True) [running]:"


@pytest.mark.parametrize(
    ("count", "head", "second", "message"),
    [
        (2, "2 threads with this stack:", "Task 't' (id=0x1, coro=c, loop_thread=1) [pending]:", "line 5: expected a"),
        (3, "3 threads with this stack:", SECOND, "line 6: expected a header"),
        (2, "2 thread with this stack:", SECOND, "line 3: expected a group of at least 2 of one kind"),
        (1, "1 threads with this stack:", SECOND, "line 3: expected a group of at least 2"),
        (2, "2 fds with this stack:", SECOND, "line 3: expected a group"),
        (2, "2 gizmos with this stack:", SECOND, "line 3: expected a group"),
        (2, "9" * 30 + " threads with this stack:", SECOND, "line 3: group count out of range"),
        (2, "2 threads with this stack:", "", "line 4: the group counts 2 threads, the headers 1"),
    ],
)
def test_a_malformed_group_is_a_value_error_naming_the_line(count, head, second, message):
    good = GROUP.format(count=2, s="s", head="2 threads with this stack:", second=SECOND)
    assert [info.name for info in parse_dump(good).threads] == ["a", "b"]
    text = GROUP.format(count=count, s="s", head=head, second=second)
    with pytest.raises(ValueError, match="not a leakcheck dump") as raised:
        parse_dump(text)
    assert message in str(raised.value)
