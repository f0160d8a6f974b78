"""The os_threads kind: threads without a threading.Thread object (``_thread`` threads, native threads)."""

from __future__ import annotations

import _thread
import ast
import contextlib
import faulthandler
import os
import re
import threading
import time
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import leakcheck
from leakcheck.kinds import os_threads
from leakcheck.kinds.os_threads import KIND, OsThread, OsThreadInfo
from leakcheck.kinds.registry import DEFAULT_KINDS
from leakcheck.records import Frame

pytestmark = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc/self/task")


class Stuck:
    """``_thread`` threads blocked in :func:`stuck_in_thread_module` until :meth:`release`."""

    def __init__(self, count: int = 1, comm: Optional[bytes] = None) -> None:
        self.ids: List[Tuple[int, int]] = []  # (ident, native_id), as each thread saw itself
        self._gate = _thread.allocate_lock()
        self._gate.acquire()
        self._ended: List[Any] = []
        for _ in range(count):
            started, ended = _thread.allocate_lock(), _thread.allocate_lock()
            started.acquire()
            ended.acquire()
            _thread.start_new_thread(stuck_in_thread_module, (self, started, ended, comm))
            started.acquire()  # it has recorded its ids and is about to block on the gate
            self._ended.append(ended)

    @property
    def tids(self) -> List[int]:
        return [tid for _, tid in self.ids]

    def release(self) -> None:
        """Let every thread end, and wait until each has left Python (the OS thread exits right after)."""
        if self._gate.locked():
            self._gate.release()
        for ended in self._ended:
            ended.acquire()
            ended.release()


def stuck_in_thread_module(stuck: Stuck, started: Any, ended: Any, comm: Optional[bytes]) -> None:
    try:
        native_id = threading.get_native_id()  # not threading.current_thread(): that makes a _DummyThread
        if comm is not None:
            with open(f"/proc/self/task/{native_id}/comm", "wb") as file:
                file.write(comm)
        stuck.ids.append((_thread.get_ident(), native_id))
        started.release()
        stuck._gate.acquire()
        stuck._gate.release()  # the next one may end too
    finally:
        ended.release()


@contextlib.contextmanager
def stuck_threads(count: int = 1, comm: Optional[bytes] = None) -> Iterator[Stuck]:
    stuck = Stuck(count, comm)
    try:
        yield stuck
    finally:
        stuck.release()
        objs = [thread for thread in KIND.live() if thread.tid in stuck.tids]
        KIND.wait(objs, time.monotonic() + 10)


def ours(objs: List[OsThread], stuck: Stuck) -> List[OsThread]:
    """The threads among ``objs`` that ``stuck`` started (other tests' threads may come and go)."""
    idents = {ident for ident, _ in stuck.ids}
    return [obj for obj in objs if obj.tid in stuck.tids or obj.ident in idents]


# -- census, pairing, description


def test_a_thread_module_thread_is_found_paired_and_described() -> None:
    before = KIND.census()
    with stuck_threads() as stuck:
        new = KIND.new_since(before)
        objs = KIND.resolve(new)
        [(ident, tid)] = stuck.ids
        assert ("tid", tid, os_threads._starttime(tid)) in new and ("ident", ident) in new
        [obj] = ours(objs, stuck)
        assert (obj.ident, obj.tid) == (ident, tid)  # one thread, once, though it has two new tokens
        assert KIND.is_alive(obj) and not KIND.is_exempt(obj)
        [info] = KIND.describe([obj])
        assert info.python and info.native_id == tid and info.ident == ident
        assert info.frames[-1].function.endswith("stuck_in_thread_module")
        assert "stuck_in_thread_module" in info.stack and "in tests." not in info.name
        assert info.header == f"OSThread {info.name!r} (native_id={tid}, ident={ident}, python=True):"
        assert "_thread.start_new_thread cannot be joined" in info.advice
        assert not any(frame.function.startswith("leakcheck.") for frame in info.frames)


def test_several_thread_module_threads_are_each_paired_with_their_own_tid() -> None:
    before = KIND.census()
    with stuck_threads(4) as stuck:
        objs = ours(KIND.resolve(KIND.new_since(before)), stuck)
        assert sorted((obj.ident, obj.tid) for obj in objs) == sorted(stuck.ids)
        infos = KIND.describe(objs)
        assert sorted((info.ident, info.native_id) for info in infos) == sorted(stuck.ids)
        assert all(info.python and "stuck_in_thread_module" in info.stack for info in infos)


def test_threads_found_before_the_baseline_are_not_new() -> None:
    with stuck_threads(2) as stuck:
        before = KIND.census()
        assert ours(KIND.resolve(KIND.new_since(before)), stuck) == []
        assert sorted((obj.ident, obj.tid) for obj in ours(KIND.live(), stuck)) == sorted(stuck.ids)


def test_a_threading_thread_is_not_an_os_thread() -> None:
    before = KIND.census()
    event = threading.Event()
    thread = threading.Thread(target=event.wait, name="a-threading-thread")
    thread.start()
    try:
        objs = KIND.resolve(KIND.new_since(before))
        assert [obj for obj in objs if obj.tid == thread.native_id or obj.ident == thread.ident] == []
        assert [obj for obj in KIND.live() if obj.tid == thread.native_id or obj.ident == thread.ident] == []
    finally:
        event.set()
        thread.join()


def test_a_thread_that_calls_current_thread_stays_a_suspect_and_new_censuses_leave_it_to_threads() -> None:
    """Its _DummyThread makes it threading's for every later census; a suspect already found stays alive here,
    or a leak whose thread logs (logging calls current_thread()) during its grace period would go unreported."""
    go, adopted, finish = _thread.allocate_lock(), _thread.allocate_lock(), _thread.allocate_lock()
    for lock in (go, adopted, finish):
        lock.acquire()
    seen: List[int] = []

    def becomes_a_dummy_thread() -> None:
        seen.append(threading.get_native_id())
        adopted.release()
        go.acquire()
        threading.current_thread()  # a _DummyThread: from now on threading knows it
        adopted.release()
        finish.acquire()

    before = KIND.census()
    _thread.start_new_thread(becomes_a_dummy_thread, ())
    adopted.acquire()
    [obj] = [obj for obj in KIND.resolve(KIND.new_since(before)) if obj.tid == seen[0]]
    assert KIND.is_alive(obj)
    go.release()
    adopted.acquire()
    try:
        assert KIND.is_alive(obj)
        assert [obj for obj in KIND.live() if obj.tid == seen[0]] == []
        assert len([t for t in threading.enumerate() if t.native_id == seen[0]]) == 1
    finally:
        finish.release()


def test_a_thread_that_ends_is_not_alive_and_wait_returns_at_once() -> None:
    before = KIND.census()
    with stuck_threads(2) as stuck:
        objs = ours(KIND.resolve(KIND.new_since(before)), stuck)
        assert len(objs) == 2
        stuck.release()
        started = time.monotonic()
        KIND.wait(objs, started + 30)
        assert time.monotonic() - started < 5
        assert not any(KIND.is_alive(obj) for obj in objs)
        assert ours(KIND.resolve(KIND.new_since(before)), stuck) == []
        first, _ = KIND.describe(objs)  # ended meanwhile: still described
        assert first.python and first.frames == ()


def test_wait_returns_at_the_deadline_for_a_thread_that_does_not_end() -> None:
    before = KIND.census()
    with stuck_threads() as stuck:
        objs = ours(KIND.resolve(KIND.new_since(before)), stuck)
        started = time.monotonic()
        KIND.wait(objs, started + 0.05)
        assert 0.04 < time.monotonic() - started < 2
        assert KIND.is_alive(objs[0])


def test_a_native_thread_has_its_tid_and_name_and_no_frames() -> None:
    before = KIND.census()
    faulthandler.dump_traceback_later(3600)  # starts faulthandler's watchdog: a C thread, no Python frames
    try:
        objs = KIND.resolve(KIND.new_since(before))
        natives = [obj for obj in objs if obj.ident is None]
        assert len(natives) == 1, objs
        [info] = KIND.describe(natives)
        with open(f"/proc/self/task/{info.native_id}/comm", "rb") as comm:
            name = comm.read().rstrip(b"\n").decode()
        assert not info.python and info.ident is None and info.frames == () and info.name == name
        assert info.stack == "  Native code only (no Python frames)\n"
        assert info.header == f"OSThread {name!r} (native_id={info.native_id}, ident=None, python=False):"
        assert "C extension" in info.advice
    finally:
        faulthandler.cancel_dump_traceback_later()  # ends the watchdog thread, and waits for it
    KIND.wait(natives, time.monotonic() + 10)
    assert not KIND.is_alive(natives[0])


def test_pairing_by_stack_when_memory_cannot_be_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os_threads, "_MEMORY", "/nonexistent/mem")
    before = KIND.census()
    faulthandler.dump_traceback_later(3600)  # a native thread among them, whose stack is next to theirs
    try:
        with stuck_threads(3) as stuck:
            tokens = KIND.new_since(before)
            watchdog = {token[1] for token in tokens if token[0] == "tid"} - set(stuck.tids)  # type: ignore[index]
            assert len(watchdog) == 1
            objs = KIND.resolve(tokens)
            assert sorted((obj.ident or 0, obj.tid or 0) for obj in ours(objs, stuck)) == sorted(stuck.ids)
            # Native, never paired, even while an old Python thread (one of pytest-xdist's, running just then)
            # cannot be paired.
            [native] = [obj for obj in objs if obj.tid in watchdog]
            assert native.ident is None
    finally:
        faulthandler.cancel_dump_traceback_later()


def no_pairing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os_threads, "_MEMORY", "/nonexistent/mem")
    monkeypatch.setattr(os_threads, "_stack_pointer", lambda tid: None)


def test_one_new_python_thread_and_one_new_tid_are_paired_by_counting(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pairing(monkeypatch)
    before = KIND.census()
    with stuck_threads() as stuck:
        [obj] = ours(KIND.resolve(KIND.new_since(before)), stuck)
        assert [(obj.ident, obj.tid)] == stuck.ids


def test_unpaired_python_threads_are_reported_once_without_tid(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pairing(monkeypatch)
    before = KIND.census()
    with stuck_threads(2) as stuck:
        objs = KIND.resolve(KIND.new_since(before))
        assert sorted(obj.ident or 0 for obj in ours(objs, stuck)) == sorted(ident for ident, _ in stuck.ids)
        assert all(obj.tid is None for obj in ours(objs, stuck))
        assert [obj for obj in objs if obj.tid in stuck.tids] == []  # their TIDs are not also native threads
        infos = KIND.describe(ours(objs, stuck))
        assert all(info.python and info.native_id is None and info.name == "" for info in infos)
        assert all("stuck_in_thread_module" in info.stack for info in infos)
        assert all(KIND.is_alive(obj) for obj in objs if obj.tid is None)


def test_a_new_native_thread_beside_old_unpaired_python_threads_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    no_pairing(monkeypatch)
    with stuck_threads(2) as stuck:
        before = KIND.census()
        faulthandler.dump_traceback_later(3600)
        try:
            tokens = KIND.new_since(before)
            [watchdog] = [token[1] for token in tokens if token[0] == "tid"]  # type: ignore[index]
            objs = KIND.resolve(tokens)
            assert ours(objs, stuck) == []
            [native] = [obj for obj in objs if obj.tid == watchdog]
            assert native.ident is None
        finally:
            faulthandler.cancel_dump_traceback_later()


def test_tid_offset_is_found_again_when_it_stops_matching(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os_threads, "_tid_offset", 4)  # wrong: checked, then found again
    before = KIND.census()
    with stuck_threads() as stuck:
        [obj] = ours(KIND.resolve(KIND.new_since(before)), stuck)
        assert [(obj.ident, obj.tid)] == stuck.ids
        assert os_threads._tid_offset not in (None, 4)


def test_describe_pairs_a_native_thread_that_runs_python_code_by_now() -> None:
    with stuck_threads() as stuck:
        [(ident, tid)] = stuck.ids
        [info] = KIND.describe([OsThread(tid, os_threads._starttime(tid), None, "")])
        assert info.python and info.ident == ident and "stuck_in_thread_module" in info.stack


# -- the record


class TextFields:
    """What parse_dump hands a kind's from_text, for unit tests."""

    def integer(self, digits: str, what: str, base: int = 10) -> int:
        return int(digits, base)

    def optional_integer(self, digits: Optional[str], what: str) -> Optional[int]:
        return None if digits is None or digits == "None" else int(digits)

    def text(self, field: str) -> str:
        return field if not field.startswith("\\") else str(ast.literal_eval(field[1:]))

    def name(self, literal: str) -> str:
        return str(ast.literal_eval(literal))

    def error(self, message: str) -> ValueError:
        return ValueError(message)


class JsonFields:
    def __init__(self, record: Dict[str, Any]) -> None:
        self.record = record

    def field(self, key: str, types: Tuple[type, ...], signed: bool = False) -> Any:
        value = self.record[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"{key} is {type(value).__name__}")
        return value

    def frames(self) -> Tuple[Frame, ...]:
        return tuple(Frame(**frame) for frame in self.record["frames"])

    def error(self, message: str) -> ValueError:
        return ValueError(message)


def from_text(text: str) -> OsThreadInfo:
    """A dump block back into a record, read the way parse_dump reads it."""
    header, *lines = text.rstrip("\n").split("\n")
    found = OsThreadInfo.HEADER.fullmatch(header)
    assert found is not None, header
    frames = []
    while lines and lines[0].startswith("  File "):
        file = re.fullmatch(r'  File "(.*)", line (\d+), in (.*)', lines.pop(0))
        assert file is not None
        line = lines.pop(0)[4:] if lines and lines[0].startswith("    ") else ""
        frames.append(Frame(file[1], int(file[2]), file[3], line))
    return OsThreadInfo.from_text(found, tuple(frames), [line[2:] for line in lines], TextFields())


FRAMES = (Frame("/srv/app.py", 12, "app.stuck_in_thread_module", "lock.acquire()"),)
HOSTILE = ["q'x[1]", "a\"b'c]):", "\\x\n", "", "OSThread 'x' (native_id=1, ident=None, python=False):"]


@pytest.mark.parametrize("name", HOSTILE)
@pytest.mark.parametrize("python", [True, False])
def test_records_round_trip_through_text_and_json(name: str, python: bool) -> None:
    info = OsThreadInfo(
        native_id=4243, ident=140000 if python else None, name=name, python=python, frames=FRAMES if python else ()
    )
    block = f"{info.header}\n{info.stack}"
    assert len(block.split("\n")) == len(info.stack.split("\n")) + 1  # the name spans no lines
    assert from_text(block) == info
    assert OsThreadInfo.from_json(JsonFields(info.to_json())) == info
    assert info == OsThreadInfo(**{k: getattr(info, k) for k in ("native_id", "ident", "name", "python", "frames")})
    assert repr(name) in repr(info)


def test_an_unpaired_python_thread_round_trips() -> None:
    info = OsThreadInfo(native_id=None, ident=7, name="", python=True, frames=FRAMES)
    assert info.header == "OSThread '' (native_id=None, ident=7, python=True):"
    assert from_text(f"{info.header}\n{info.stack}") == info
    assert OsThreadInfo.from_json(JsonFields(info.to_json())) == info


def test_a_live_hostile_thread_name_round_trips() -> None:
    comm = b"q'x[1]\"\xff)"  # comm holds up to 15 bytes of anything
    with stuck_threads(comm=comm) as stuck:
        [obj] = [obj for obj in KIND.live() if obj.tid in stuck.tids]
        [info] = KIND.describe([obj])
        assert info.name == comm.decode("utf-8", "backslashreplace")
        assert from_text(f"{info.header}\n{info.stack}") == info
        assert OsThreadInfo.from_json(JsonFields(info.to_json())) == info


@pytest.mark.parametrize(
    "block, message",
    [
        ("OSThread 'x' (native_id=1, ident=None, python=True):\n", "has an ident"),
        ("OSThread 'x' (native_id=1, ident=5, python=False):\n  Native code only (no Python frames)\n", "no ident"),
        ("OSThread 'x' (native_id=1, ident=None, python=False):\n", "no line"),
        ("OSThread 'x' (native_id=1, ident=None, python=False):\n  Awaiting Future\n", "no line"),
        ("OSThread 'x' (native_id=1, ident=2, python=True):\n  Native code only (no Python frames)\n", "no line"),
    ],
)
def test_inconsistent_blocks_are_refused(block: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        from_text(block)


def test_inconsistent_json_is_refused() -> None:
    good = OsThreadInfo(native_id=1, ident=None, name="n", python=False, frames=()).to_json()
    for changes in ({"ident": 3}, {"python": 1}, {"native_id": True}, {"frames": [FRAMES[0]._asdict()]}):
        with pytest.raises(ValueError):
            OsThreadInfo.from_json(JsonFields({**good, **changes}))


def test_record_is_immutable_and_sorted_python_first() -> None:
    native = OsThreadInfo(native_id=1, ident=None, name="a", python=False, frames=())
    python = OsThreadInfo(native_id=2, ident=3, name="z", python=True, frames=FRAMES)
    with pytest.raises(AttributeError):
        setattr(native, "name", "b")  # noqa: B010 - the record refuses it
    assert sorted([native, python], key=OsThreadInfo.sort_key) == [python, native]


@pytest.mark.parametrize(
    "crafted",
    [
        "OSThread '" + "\\'" * 50_000,
        "OSThread '" + "\\" * 100_000,
        "OSThread " + "'a' " * 25_000,
        "OSThread 'x' (native_id=" + "1" * 100_000,
        "OSThread '" + "x" * 100_000 + "' (native_id=1, ident=None, python=False)",
        "OSThread '" + "', '" * 25_000,
    ],
)
def test_header_regex_is_linear(crafted: str) -> None:
    # 100,000 characters: a linear match takes milliseconds, a quadratic one would take minutes.
    started = time.perf_counter()
    assert OsThreadInfo.HEADER.fullmatch(crafted) is None
    assert time.perf_counter() - started < 2


def test_check_supported_without_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    KIND.check_supported()
    assert KIND.configure(True) is KIND and KIND.configure(False) is None
    monkeypatch.setattr(os_threads, "_TASKS", "/nonexistent/task")
    with pytest.raises(ValueError, match=r"os_threads=True needs /nonexistent/task \(Linux procfs\)"):
        KIND.check_supported()
    with pytest.raises(ValueError, match="os_threads"):
        KIND.configure(True)
    with pytest.raises(TypeError):
        KIND.configure("yes")


def test_kind_attributes() -> None:
    assert (KIND.name, KIND.has_stacks, KIND.info_type) == ("os_threads", True, OsThreadInfo)
    assert "os_threads" not in DEFAULT_KINDS
    assert (OsThreadInfo.kind, OsThreadInfo.plural, OsThreadInfo.header_word) == ("OS thread", "OS threads", "OSThread")


# -- end to end


def test_no_leaks_reports_a_stuck_thread_module_thread() -> None:
    started: List[Stuck] = []
    try:
        with pytest.raises(leakcheck.LeakError) as raised, leakcheck.no_leaks(os_threads=True, timeout=0.1):
            started.append(Stuck())
        [stuck] = started
        leaks = raised.value.report.of("os_threads")
        [info] = [info for info in leaks if getattr(info, "native_id", None) in stuck.tids]
        assert isinstance(info, OsThreadInfo) and info.python and "stuck_in_thread_module" in info.stack
        assert "stuck_in_thread_module" in str(raised.value) and str(info.native_id) in str(raised.value)
    finally:
        for stuck in started:
            stuck.release()


def test_no_leaks_passes_when_the_thread_ends_in_the_block() -> None:
    with leakcheck.no_leaks(os_threads=True):
        stuck = Stuck()
        stuck.release()


def test_no_leaks_passes_for_a_joined_threading_thread() -> None:
    with leakcheck.no_leaks(os_threads=True):
        event = threading.Event()
        thread = threading.Thread(target=event.wait)
        thread.start()
        event.set()
        thread.join()


def test_snapshot_dump_and_json_round_trip() -> None:
    faulthandler.dump_traceback_later(3600)  # and a native thread
    try:
        with stuck_threads(comm=b"o'[dd]") as stuck:
            snap = leakcheck.snapshot(os_threads=True)
    finally:
        faulthandler.cancel_dump_traceback_later()
    [info] = [info for info in snap.of("os_threads") if getattr(info, "native_id", None) in stuck.tids]
    assert info.name == "o'[dd]" and "stuck_in_thread_module" in info.stack
    assert [info for info in snap.of("os_threads") if "Native code only" in info.stack]
    assert "OSThread 'o\\'[dd]'" in str(snap) or 'OSThread "o\'[dd]"' in str(snap)
    assert leakcheck.parse_dump(str(snap)) == snap
    assert leakcheck.Snapshot.from_json(snap.to_json()) == snap


def test_a_thread_that_logs_during_the_grace_period_is_still_reported() -> None:
    """logging calls threading.current_thread(), which gives a _thread thread a _DummyThread: it stays a leak."""
    started, logged, stop = _thread.allocate_lock(), _thread.allocate_lock(), _thread.allocate_lock()
    for lock in (started, logged, stop):
        lock.acquire()

    def logs_then_blocks_in_a_thread_of_its_own() -> None:
        started.release()
        started_wait_for_the_check.acquire()  # until the check's grace period has begun
        threading.current_thread()  # what logging.warning() does first
        logged.release()
        stop.acquire()

    started_wait_for_the_check = _thread.allocate_lock()
    started_wait_for_the_check.acquire()

    original_wait = KIND.wait

    def wait(objs: Any, deadline: float) -> None:
        if started_wait_for_the_check.locked():
            started_wait_for_the_check.release()
            logged.acquire()
        original_wait(objs, deadline)

    try:
        KIND.wait = wait  # type: ignore[method-assign]
        with pytest.raises(leakcheck.LeakError) as excinfo, leakcheck.no_leaks(os_threads=True, timeout=0.2):
            _thread.start_new_thread(logs_then_blocks_in_a_thread_of_its_own, ())
            started.acquire()
    finally:
        del KIND.wait
        stop.release()
    assert "logs_then_blocks_in_a_thread_of_its_own" in str(excinfo.value)
