"""The registry of kinds, and how every entry point spells them.

A kind is one module, ``leakcheck.kinds.<name>``, plus one line in
:class:`~leakcheck.kinds.registry.KindOptions`.  These tests hold the rest of
the library to that: the options, their validation and their errors, the
accessors of snapshots and reports, the order of a report, the dump and
pickling all follow the registry, and ``forbid=`` and the keyword assertions
look at every kind with stacks and at no other.
"""

from __future__ import annotations

import _thread
import asyncio
import contextlib
import importlib
import json
import pickle
import re
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Dict, Hashable, Iterator, List, Mapping, Optional

import helpers
import pytest

import leakcheck
from leakcheck import Frame, LeakError, LeakReport, Snapshot, TaskInfo, ThreadInfo
from leakcheck.engine.options import FIND_OPTION_NAMES, OPTION_NAMES, FindOptions, NoLeaksOptions, make_options
from leakcheck.kinds.base import InfoRecord, Kind
from leakcheck.kinds.registry import DEFAULT_KINDS, KIND_NAMES, KindOptions, flag_kinds, kind
from leakcheck.kinds.tasks import task_stack
from leakcheck.records import format_frames

ROOT = Path(__file__).resolve().parent.parent
JOIN_TIMEOUT = 10.0
OPT_IN = tuple(name for name in KIND_NAMES if name not in DEFAULT_KINDS)


def names_every_kind(message: str) -> bool:
    return all(name in message for name in KIND_NAMES)


# -- sample records, one per kind

FRAMES = (Frame("/srv/app.py", 12, "app.main", "server.serve_forever()"),)


def sample(name: str) -> InfoRecord:
    """A record of the kind ``name``, built by hand (no live resource)."""
    if name == "threads":
        return ThreadInfo(
            ident=140207, native_id=4242, name="worker", daemon=True, frames=FRAMES, stack=format_frames(FRAMES)
        )
    if name == "tasks":
        return TaskInfo(
            id=0x7F3A2C,
            name="follow-logs",
            coro="app.follow_logs",
            state="pending",
            thread_ident=140207,
            frames=FRAMES,
            awaiting="Future",
            stack=task_stack(FRAMES, "Future"),
        )
    if name == "processes":
        from leakcheck.kinds.processes import ProcessInfo

        return ProcessInfo(pid=4321, name="sleep", state="sleeping", command="sleep 60")
    if name == "fds":
        from leakcheck.kinds.fds import FdInfo

        return FdInfo(fd=7, type="file", target="/srv/app.log", mode="w")
    if name == "os_threads":
        from leakcheck.kinds.os_threads import OsThreadInfo

        return OsThreadInfo(native_id=4243, ident=140208, name="python", python=True, frames=FRAMES)
    if name == "probes":
        from leakcheck.kinds.probes import ProbeInfo

        return ProbeInfo("pool", "'conn-1'", "checked out by handler")
    raise AssertionError(f"no sample record for the kind {name!r}: add one here")


# -- the registry


@pytest.mark.parametrize("name", KIND_NAMES)
def test_every_registered_name_is_a_module_whose_kind_has_that_name(name: str) -> None:
    module = importlib.import_module(f"leakcheck.kinds.{name}")
    found = module.KIND
    assert isinstance(found, Kind)
    assert found.name == name
    assert kind(name) is found
    info_type = found.info_type
    assert issubclass(info_type, InfoRecord) and info_type is not InfoRecord
    assert info_type.kind and info_type.plural and info_type.header_word
    assert isinstance(info_type.HEADER, re.Pattern)
    assert type(sample(name)) is info_type


def test_a_name_that_is_no_kind_is_a_value_error_naming_the_kinds() -> None:
    with pytest.raises(ValueError, match="unknown kind 'sockets'") as raised:
        kind("sockets")
    assert names_every_kind(str(raised.value))


def test_header_words_are_unique_single_words() -> None:
    words = [kind(name).info_type.header_word for name in KIND_NAMES]
    assert len(set(words)) == len(words), words
    for name in KIND_NAMES:
        # The dump tells kinds apart by the first word of a block's header.
        word = kind(name).info_type.header_word
        assert re.fullmatch(r"\w+", word), word
        assert sample(name).header.split(" ", 1)[0] == word


def test_nouns_and_plurals_are_unique_across_kinds() -> None:
    nouns = [kind(name).info_type.kind for name in KIND_NAMES]
    plurals = [kind(name).info_type.plural for name in KIND_NAMES]
    every = nouns + plurals
    assert len(set(every)) == len(every), every


def test_flag_kinds_are_every_kind_but_probes() -> None:
    assert flag_kinds() == tuple(name for name in KIND_NAMES if name != "probes")


def test_the_default_kinds_are_threads_and_tasks() -> None:
    assert DEFAULT_KINDS == ("threads", "tasks")
    assert [found.name for found in make_options().kinds] == ["threads", "tasks"]
    assert [found.name for found in leakcheck.no_leaks().options.kinds] == ["threads", "tasks"]
    assert leakcheck.snapshot().kinds == ("threads", "tasks")


def test_the_kinds_with_stacks_are_threads_tasks_and_os_threads() -> None:
    assert [name for name in KIND_NAMES if kind(name).has_stacks] == ["threads", "tasks", "os_threads"]


OPT_IN_IMPORTED = f"""
import sys
import leakcheck

OPT_IN = {[f"leakcheck.kinds.{name}" for name in OPT_IN]!r}

def loaded():
    return [name for name in OPT_IN if name in sys.modules]

seen = {{"import": loaded()}}
leakcheck.no_leaks()
seen["no_leaks()"] = loaded()
with leakcheck.no_leaks():
    pass
seen["with no_leaks()"] = loaded()
leakcheck.find_leaks(leakcheck.snapshot())
seen["find_leaks(snapshot())"] = loaded()
leakcheck.no_leaks(fds=True)
seen["no_leaks(fds=True)"] = loaded()
print(__import__("json").dumps(seen))
"""


def test_importing_and_using_leakcheck_imports_no_opt_in_kind_until_asked() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", OPT_IN_IMPORTED], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen == {
        "import": [],
        "no_leaks()": [],
        "with no_leaks()": [],
        "find_leaks(snapshot())": [],
        "no_leaks(fds=True)": ["leakcheck.kinds.fds"],  # only the kind asked for
    }


# -- the options come from the registry


def test_the_options_are_the_kinds_then_the_others() -> None:
    assert OPTION_NAMES[: len(KIND_NAMES)] == KIND_NAMES
    assert not set(OPTION_NAMES[len(KIND_NAMES) :]) & set(KIND_NAMES)
    assert len(set(OPTION_NAMES)) == len(OPTION_NAMES)


def test_the_typed_options_are_the_option_names() -> None:
    # get_type_hints() cannot resolve them at run time (Probe is imported for type checkers only): the keys will do.
    assert set(KindOptions.__optional_keys__) == set(KIND_NAMES)
    assert tuple(KindOptions.__annotations__) == KIND_NAMES
    assert set(NoLeaksOptions.__optional_keys__) == set(OPTION_NAMES)
    assert tuple(NoLeaksOptions.__annotations__)[: len(KIND_NAMES)] == KIND_NAMES
    assert set(FindOptions.__optional_keys__) == set(FIND_OPTION_NAMES)
    assert NoLeaksOptions.__required_keys__ == FindOptions.__required_keys__ == frozenset()
    assert set(OPTION_NAMES) - set(FIND_OPTION_NAMES) == {"on_leak"}


def test_the_marker_takes_every_option() -> None:
    from leakcheck.integrations.pytest_settings import MARKER_KEYS

    assert set(MARKER_KEYS) == {"enabled", *OPTION_NAMES}


def _no_leaks(**options: Any) -> Any:
    return leakcheck.no_leaks(**options)


def _find_leaks(**options: Any) -> Any:
    return leakcheck.find_leaks(leakcheck.snapshot(), **options)


ENTRY_POINTS = [pytest.param(_no_leaks, id="no_leaks"), pytest.param(_find_leaks, id="find_leaks")]


@pytest.mark.parametrize("call", ENTRY_POINTS)
@pytest.mark.parametrize("option", ["sockets", "thread", "fd", "Threads"])
def test_an_unknown_keyword_is_an_unknown_option_naming_the_kinds(call: Any, option: str) -> None:
    with pytest.raises(leakcheck.UnknownOption) as raised:
        call(**{option: True})
    error = raised.value
    assert isinstance(error, TypeError) and isinstance(error, ValueError)
    assert type(error).__module__ == "leakcheck"
    message = str(error)
    assert repr(option) in message
    assert names_every_kind(message), message


def test_on_leak_is_no_option_of_find_leaks() -> None:
    with pytest.raises(leakcheck.UnknownOption, match="'on_leak'") as raised:
        _find_leaks(on_leak="warn")
    assert names_every_kind(str(raised.value))


@pytest.mark.parametrize("option", ["sockets", "timeout", "on_leak"])
def test_snapshot_takes_only_kinds_and_names_them(option: str) -> None:
    with pytest.raises(ValueError, match=repr(option)) as raised:
        leakcheck.snapshot(**{option: True})
    assert names_every_kind(str(raised.value))


ENTRY_POINTS_AND_SNAPSHOT = [
    *ENTRY_POINTS,
    pytest.param(lambda **options: leakcheck.snapshot(**options), id="snapshot"),
]


@pytest.mark.parametrize("call", ENTRY_POINTS_AND_SNAPSHOT)
@pytest.mark.parametrize("name", flag_kinds())
@pytest.mark.parametrize("value", ["yes", 1, 0, None, [True]])
def test_a_flag_kind_that_is_not_a_bool_is_a_type_error(call: Any, name: str, value: object) -> None:
    with pytest.raises(TypeError, match=f"^{name} must be True or False, not {re.escape(repr(value))}$"):
        call(**{name: value})


@pytest.mark.parametrize("call", ENTRY_POINTS_AND_SNAPSHOT)
@pytest.mark.parametrize("value", ["pool", True, None, object()])
def test_probes_that_are_not_a_list_of_probes_are_a_type_error(call: Any, value: object) -> None:
    with pytest.raises(TypeError, match="probes"):
        call(probes=value)


def test_snapshot_with_every_kind_off_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="captures nothing") as raised:
        leakcheck.snapshot(threads=False, tasks=False)
    assert names_every_kind(str(raised.value))


@pytest.mark.parametrize("call", ENTRY_POINTS)
def test_no_kind_and_no_forbid_leave_nothing_to_check(call: Any) -> None:
    with pytest.raises(ValueError, match=r"^threads=False and tasks=False leave nothing to check") as raised:
        call(threads=False, tasks=False)
    assert names_every_kind(str(raised.value))


def test_an_opt_in_kind_alone_is_something_to_check(tmp_path: Path) -> None:
    check = leakcheck.no_leaks(threads=False, tasks=False, fds=True, timeout=0.1)
    assert [found.name for found in check.options.kinds] == ["fds"]
    with check, open(tmp_path / "closed.log", "w") as f:
        f.write("x")
    with pytest.raises(LeakError) as raised, leakcheck.no_leaks(threads=False, tasks=False, fds=True, timeout=0.1):
        leaked = open(tmp_path / "alone.log", "w")  # noqa: SIM115 - the leak under test
    try:
        assert str(tmp_path / "alone.log") in str(raised.value)
        assert raised.value.report.kinds == ("fds",)
    finally:
        leaked.close()


# -- the accessors


def test_report_of_gives_any_kind_and_keeps_threads_and_tasks() -> None:
    thread, fd = sample("threads"), sample("fds")
    report = LeakReport(records={"fds": (fd,), "threads": [thread]})
    assert report.kinds == ("threads", "fds")
    assert report.of("fds") == (fd,)
    assert report.of("threads") == report.threads == (thread,)
    assert report.tasks == () and report.of("tasks") == ()
    assert report.of("processes") == ()
    assert report.leaks == (thread, fd)
    assert bool(report)
    old = LeakReport(threads=[thread], tasks=[sample("tasks")])
    assert old.of("threads") == (thread,) and old.of("tasks") == (sample("tasks"),)
    assert old == LeakReport(records={"threads": (thread,), "tasks": (sample("tasks"),)})


@pytest.mark.parametrize("make", [LeakReport, Snapshot, leakcheck.snapshot], ids=["report", "snapshot", "live"])
def test_of_a_name_that_is_no_kind_is_a_value_error_naming_the_kinds(make: Any) -> None:
    with pytest.raises(ValueError, match="unknown kind 'nope'") as raised:
        make().of("nope")
    assert names_every_kind(str(raised.value))


@pytest.mark.parametrize("make", [LeakReport, Snapshot], ids=["report", "snapshot"])
def test_records_of_a_kind_that_is_not_registered_are_refused(make: Any) -> None:
    with pytest.raises(ValueError, match="unknown kind 'sockets'") as raised:
        make(records={"sockets": ()})
    assert names_every_kind(str(raised.value))


def test_snapshot_of_gives_any_kind_and_keeps_threads_and_tasks() -> None:
    thread, task, process = sample("threads"), sample("tasks"), sample("processes")
    snap = Snapshot(records={"processes": (process,), "tasks": (task,), "threads": (thread,)}, pid=1, taken_at=2.0)
    assert snap.kinds == ("threads", "tasks", "processes")
    assert snap.of("processes") == (process,)
    assert snap.threads == snap.of("threads") == (thread,)
    assert snap.tasks == snap.of("tasks") == (task,)
    assert snap.of("fds") == ()


def test_the_old_snapshot_constructor_equals_the_records_form() -> None:
    thread, task = sample("threads"), sample("tasks")
    old = Snapshot(threads=(thread,), tasks=(task,), pid=42, taken_at=1764201301.25)
    positional = Snapshot((thread,), (task,), 42, 1764201301.25)
    new = Snapshot(records={"threads": (thread,), "tasks": (task,)}, pid=42, taken_at=1764201301.25)
    as_pairs = Snapshot(records=(("threads", (thread,)), ("tasks", (task,))), pid=42, taken_at=1764201301.25)
    assert old == positional == new == as_pairs
    assert old.kinds == ("threads", "tasks")
    assert str(old) == str(new)
    assert Snapshot().kinds == ("threads", "tasks")  # what a snapshot held before kinds


def test_a_live_snapshot_holds_the_kinds_asked_for(tmp_path: Path) -> None:
    assert leakcheck.snapshot(threads=False).kinds == ("tasks",)
    with open(tmp_path / "seen.log", "w") as f:
        snap = leakcheck.snapshot(fds=True, processes=True)
        assert snap.kinds == ("threads", "tasks", "processes", "fds")
        assert str(tmp_path / "seen.log") in [info.target for info in snap.of("fds")]  # type: ignore[attr-defined]
        assert f.fileno() in [info.fd for info in snap.of("fds")]  # type: ignore[attr-defined]


# -- pickling



@pytest.mark.parametrize("name", list(KIND_NAMES))
def test_a_snapshot_a_report_and_a_leak_error_pickle_with_records_of_every_kind(name: str) -> None:
    info = sample(name)
    assert pickle.loads(pickle.dumps(info)) == info
    snap = Snapshot(records={name: (info,)}, pid=7, taken_at=2.5)
    assert pickle.loads(pickle.dumps(snap)) == snap
    report = LeakReport(records={name: (info,)}, waited=0.5, timeout=1.0)
    again = pickle.loads(pickle.dumps(report))
    assert again == report and again.of(name) == (info,) and str(again) == str(report)
    error = pickle.loads(pickle.dumps(LeakError(report)))
    assert error.report == report and str(error) == str(report)


def test_a_live_snapshot_pickles_without_its_census() -> None:
    snap = leakcheck.snapshot()
    again = pickle.loads(pickle.dumps(snap))
    assert again == snap
    assert again.kinds == ("threads", "tasks")
    with pytest.raises(ValueError, match="taken in this process"):
        leakcheck.find_leaks(again)  # its identity tokens did not travel


# -- find_leaks and the baseline's kinds


@pytest.mark.parametrize("name", ["fds", "processes"])
def test_find_leaks_of_a_kind_the_baseline_did_not_capture_says_how_to_take_it(name: str) -> None:
    with pytest.raises(ValueError, match="baseline") as raised:
        leakcheck.find_leaks(leakcheck.snapshot(), **{name: True})
    assert f"snapshot({name}=" in str(raised.value)


def test_find_leaks_with_fds_reports_an_open_file_and_nothing_once_closed(tmp_path: Path) -> None:
    baseline = leakcheck.snapshot(fds=True)
    with open(tmp_path / "closed.log", "w") as f:
        f.write("x")
    clean = leakcheck.find_leaks(baseline, fds=True, timeout=0.1)
    assert not clean and clean.leaks == ()

    baseline = leakcheck.snapshot(fds=True)
    leaked = open(tmp_path / "leaked.log", "w")  # noqa: SIM115 - the leak under test
    try:
        report = leakcheck.find_leaks(baseline, fds=True, timeout=0.1)
        assert report.kinds == ("fds",)
        assert str(tmp_path / "leaked.log") in str(report)
        assert [info.fd for info in report.of("fds")] == [leaked.fileno()]  # type: ignore[attr-defined]
    finally:
        leaked.close()
    assert not leakcheck.find_leaks(baseline, fds=True, timeout=0.1)


# -- the order of a report


def test_a_report_lists_kinds_in_the_registry_order_whatever_the_order_given() -> None:
    samples = {name: sample(name) for name in KIND_NAMES}
    report = LeakReport(records={name: (samples[name],) for name in reversed(KIND_NAMES)}, timeout=1.0)
    assert report.kinds == KIND_NAMES
    assert report.leaks == tuple(samples[name] for name in KIND_NAMES)
    counts = ", ".join(f"1 leaked {kind(name).info_type.kind}" for name in KIND_NAMES)
    head = str(report).split("\n", 1)[0]
    assert head == f"leakcheck: {counts} (waited 0.00s of a 1.00s grace period)"
    two = LeakReport(records={"fds": (samples["fds"], samples["fds"]), "threads": (samples["threads"],)})
    assert str(two).startswith(f"leakcheck: 1 leaked thread, 2 leaked {kind('fds').info_type.plural} (")


# -- forbid= and the keyword assertions look at every kind with stacks, and only those

KEYWORD = "kinds_keyword_"


def kinds_keyword_thread(release: threading.Event) -> None:
    release.wait()


async def kinds_keyword_task(release: asyncio.Event) -> None:
    await release.wait()


class OsThread:
    """A thread started with ``_thread.start_new_thread``: no ``threading.Thread`` object."""

    def __init__(self) -> None:
        self.started = _thread.allocate_lock()
        self.release = _thread.allocate_lock()
        self.done = _thread.allocate_lock()
        for lock in (self.started, self.release, self.done):
            lock.acquire()
        _thread.start_new_thread(self.kinds_keyword_os_thread, ())
        assert self.started.acquire(timeout=JOIN_TIMEOUT), "the _thread thread did not start"

    def kinds_keyword_os_thread(self) -> None:
        self.started.release()
        self.release.acquire()
        self.done.release()

    def stop(self) -> None:
        self.release.release()
        assert self.done.acquire(timeout=JOIN_TIMEOUT), "the _thread thread did not end"


@contextlib.contextmanager
def os_thread_if_supported() -> Iterator[Optional[OsThread]]:
    """An ``OsThread``, or ``None`` while ``leakcheck.kinds.os_threads`` cannot be imported."""
    try:
        importlib.import_module("leakcheck.kinds.os_threads")
    except ImportError:
        yield None
        return
    thread = OsThread()
    try:
        yield thread
    finally:
        thread.stop()


class KeywordProbe:
    name = "kinds-pool"

    def snapshot(self) -> Mapping[Hashable, str]:
        return {"conn": f"{KEYWORD}probe resource"}


@contextlib.contextmanager
def resources_that_match(tmp_path: Path) -> Iterator[Dict[str, Any]]:
    """A resource of every kind, each showing ``KEYWORD``, alive until the block ends."""
    with helpers.parked_threads() as parked, helpers.loop_in_thread("kinds-loop") as loop:
        parked.start(kinds_keyword_thread, name="kinds-thread")
        release: asyncio.Event = asyncio.run_coroutine_threadsafe(_new_event(), loop).result(JOIN_TIMEOUT)
        helpers.create_task_on(loop, kinds_keyword_task(release), name="kinds-task")
        with (
            os_thread_if_supported() as os_thread,
            open(tmp_path / f"{KEYWORD}file.log", "w") as f,
            subprocess.Popen(
                [sys.executable, "-c", "import sys; sys.stdin.read()", f"{KEYWORD}child"], stdin=subprocess.PIPE
            ) as child,
        ):
            try:
                yield {"os_thread": os_thread, "file": f, "child": child}
            finally:
                child.stdin.close()  # type: ignore[union-attr]
                child.wait(JOIN_TIMEOUT)
                loop.call_soon_threadsafe(release.set)


async def _new_event() -> asyncio.Event:
    return asyncio.Event()


def _kinds_of(infos: Any) -> List[str]:
    return sorted({type(info).__name__ for info in infos})


def test_the_keyword_assertions_see_every_kind_with_stacks_and_no_other(tmp_path: Path) -> None:
    with resources_that_match(tmp_path) as found:
        with_stacks = ["TaskInfo", "ThreadInfo"] + (["OsThreadInfo"] if found["os_thread"] else [])
        assert _kinds_of(leakcheck.find_stacks(KEYWORD)) == sorted(with_stacks)
        assert [info.name for info in leakcheck.find_stacks(f"{KEYWORD}thread")] == ["kinds-thread"]
        assert [info.name for info in leakcheck.find_stacks(f"{KEYWORD}task")] == ["kinds-task"]
        if found["os_thread"] is not None:
            (info,) = leakcheck.assert_stack_match(f"{KEYWORD}os_thread")
            assert type(info).__name__ == "OsThreadInfo"
            assert "OsThread.kinds_keyword_os_thread" in info.stack
        # The file's path, the child's command line and the probe's description are no stacks.
        for text in ("file.log", "child", "probe"):
            assert leakcheck.find_stacks(f"{KEYWORD}{text}") == []
        leakcheck.assert_no_stack_match(f"{KEYWORD}file", f"{KEYWORD}child")
        with pytest.raises(LeakError) as raised:
            leakcheck.assert_no_stack_match(KEYWORD, timeout=0)
        assert _kinds_of(raised.value.report.forbidden) == sorted(with_stacks)
        assert "kinds-thread" in str(raised.value) and "kinds-task" in str(raised.value)
        with pytest.raises(AssertionError, match="no live stack matches"):
            leakcheck.assert_stack_match(f"{KEYWORD}file", f"{KEYWORD}child")


def test_forbid_sees_every_kind_with_stacks_and_no_other(tmp_path: Path) -> None:
    with resources_that_match(tmp_path) as found:
        with_stacks = ["TaskInfo", "ThreadInfo"] + (["OsThreadInfo"] if found["os_thread"] else [])
        every_kind: Dict[str, Any] = {"processes": True, "fds": True, "probes": [KeywordProbe()]}
        if found["os_thread"] is not None:
            every_kind["os_threads"] = True
        with pytest.raises(LeakError) as raised, leakcheck.no_leaks(forbid=KEYWORD, timeout=0.05, **every_kind):
            pass
        report = raised.value.report
        assert report.leaks == ()  # all of them were there before the block
        assert _kinds_of(report.forbidden) == sorted(with_stacks)
        text = str(report)
        assert f"stacks matching {KEYWORD!r}" in text
        assert "kinds-thread" in text and "kinds-task" in text
        assert "file.log" not in text and f"{KEYWORD}child" not in text and "probe resource" not in text
        # Nothing with a stack matches: only the stackless resources show the keyword.
        with leakcheck.no_leaks(forbid=f"{KEYWORD}file", timeout=0.05, **every_kind):
            pass


# -- a leak of several kinds at once


def kinds_mixed_worker(release: threading.Event) -> None:
    release.wait()


def test_one_report_names_a_leaked_thread_child_process_and_file(tmp_path: Path) -> None:
    path = tmp_path / "mixed.log"
    release = threading.Event()
    thread: Optional[threading.Thread] = None
    child: Optional[subprocess.Popen[bytes]] = None
    leaked = None
    try:
        with pytest.raises(LeakError) as raised, leakcheck.no_leaks(processes=True, fds=True, timeout=0.1):
            thread = threading.Thread(target=kinds_mixed_worker, args=(release,), name="mixed-worker")
            thread.start()
            child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
            leaked = open(path, "w")  # noqa: SIM115 - the leak under test
        assert thread is not None and child is not None and child.stdin is not None
        report = raised.value.report
        text = str(raised.value)
        assert "thread 'mixed-worker' in test_kinds.kinds_mixed_worker" in text
        assert f"pid={child.pid}" in text
        assert str(path) in text
        # One report, its kinds in the registry's order; the pipe to the child's stdin is a leaked fd too.
        assert report.kinds == ("threads", "processes", "fds")
        assert [info.ident for info in report.of("threads")] == [thread.ident]  # type: ignore[attr-defined]
        assert [info.pid for info in report.of("processes")] == [child.pid]  # type: ignore[attr-defined]
        fds = sorted(info.fd for info in report.of("fds"))  # type: ignore[attr-defined]
        assert fds == sorted([leaked.fileno(), child.stdin.fileno()])
        assert report.leaks == (*report.of("threads"), *report.of("processes"), *report.of("fds"))
        fd_plural = kind("fds").info_type.plural
        head = text.split("\n", 1)[0]
        assert head.startswith(f"leakcheck: 1 leaked thread, 1 leaked process, 2 leaked {fd_plural} (waited "), head
    finally:
        release.set()
        if thread is not None:
            thread.join(JOIN_TIMEOUT)
        if child is not None:
            child.stdin.close()  # type: ignore[union-attr]
            child.wait(JOIN_TIMEOUT)
        if leaked is not None:
            leaked.close()
    assert thread is not None and not thread.is_alive()


def test_the_same_block_is_clean_when_everything_is_given_back(tmp_path: Path) -> None:
    with leakcheck.no_leaks(processes=True, fds=True, timeout=5):
        release = threading.Event()
        thread = threading.Thread(target=kinds_mixed_worker, args=(release,), name="mixed-worker")
        thread.start()
        with subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE):
            pass  # closes stdin, waits
        with open(tmp_path / "mixed.log", "w") as f:
            f.write("x")
        release.set()
        thread.join(JOIN_TIMEOUT)
