"""The processes kind: child processes left running, or exited and never reaped, by a block."""

from __future__ import annotations

import ast
import multiprocessing
import os
import re
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Iterator, List, Optional, Tuple

import pytest

import leakcheck
from leakcheck.kinds import processes
from leakcheck.kinds.processes import KIND, ZOMBIE, Child, ProcessInfo
from leakcheck.kinds.registry import DEFAULT_KINDS

# A child that says it has started, runs until its stdin closes, then exits with status 3.
WAITER = "import sys; print('ready', flush=True); sys.stdin.read(); sys.exit(3)"


def start_waiter(marker: str = "leakcheck-test-child") -> subprocess.Popen[bytes]:
    """A waiter that has started: /proc shows its command line (not yet while it is being exec'd)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", f"{WAITER}  # {marker}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    return proc


def end(proc: Optional[subprocess.Popen[bytes]]) -> Optional[int]:
    """Let a waiter exit and reap it."""
    if proc is None:
        return None
    if proc.stdin is not None and not proc.stdin.closed:
        proc.stdin.close()
    status = proc.wait(timeout=60)
    if proc.stdout is not None:
        proc.stdout.close()
    return status


def wait_exited(pid: int) -> None:
    """Block until child ``pid`` has exited, leaving it a zombie: WNOWAIT does not reap."""
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)


def starttime(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rpartition(b")")[2].split()[19])


def only(tokens: Any, pid: int) -> List[Child]:
    """The resolved children of ``tokens`` with this pid (others may come and go under ``pytest -n``)."""
    return [child for child in KIND.resolve(tokens) if child.pid == pid]


@pytest.fixture
def waiter() -> Iterator[subprocess.Popen[bytes]]:
    before = KIND.census()
    proc = start_waiter()
    try:
        assert (proc.pid, starttime(proc.pid)) in KIND.new_since(before)
        yield proc
    finally:
        end(proc)


@pytest.fixture(params=["children files", "scan"])
def census_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each way of listing children: /proc/self/task/*/children, and the scan of every /proc/<pid>/stat."""
    if request.param == "scan":
        monkeypatch.setattr(processes, "_has_children_files", lambda: False)
    elif not processes._has_children_files():
        pytest.skip("this kernel has no /proc/<pid>/task/<tid>/children (CONFIG_PROC_CHILDREN)")
    return str(request.param)


# -- census, resolve, describe


def test_census_sees_a_new_child(census_path: str) -> None:
    before = KIND.census()
    proc = start_waiter()
    try:
        token = (proc.pid, starttime(proc.pid))
        assert token not in before
        assert token in KIND.census()
        assert token in KIND.new_since(before)
    finally:
        end(proc)
    assert token not in KIND.census()
    assert token not in KIND.new_since(before)


def test_census_lists_a_zombie(census_path: str) -> None:
    before = KIND.census()
    proc = start_waiter()
    try:
        proc.stdin.close()  # type: ignore[union-attr]
        wait_exited(proc.pid)
        assert (proc.pid, starttime(proc.pid)) in KIND.new_since(before)
    finally:
        assert end(proc) == 3


def test_describe_gives_pid_command_and_state(waiter: subprocess.Popen[bytes]) -> None:
    [child] = only({(waiter.pid, starttime(waiter.pid))}, waiter.pid)
    assert KIND.is_alive(child)
    [info] = KIND.describe([child])
    assert isinstance(info, ProcessInfo)
    assert info.pid == waiter.pid
    assert info.name == os.path.basename(sys.executable)[:15] or info.name.startswith("python")
    assert info.command == f"{sys.executable} -c {WAITER}  # leakcheck-test-child"
    assert info.state in ("running", "sleeping")
    assert info.frames == ()
    assert info.header == f"Process {info.name!r} (pid={waiter.pid}) [{info.state}]:"
    assert info.stack == f"  Command: {info.command}\n"
    assert "wait for it" in info.advice and "proc.wait()" in info.advice


def test_a_zombie_is_described_and_never_reaped() -> None:
    before = KIND.census()
    proc = start_waiter()
    try:
        children = only(KIND.new_since(before), proc.pid)  # resolved while it runs, as a block's end would
        assert [child.pid for child in children] == [proc.pid]
        proc.stdin.close()  # type: ignore[union-attr]
        wait_exited(proc.pid)
        [info] = KIND.describe(children)
        assert info.state == ZOMBIE == "zombie (exited, not reaped)"
        assert info.pid == proc.pid
        assert "sys.stdin.read()" in info.command  # its command line as resolved, though a zombie has none
        assert KIND.is_alive(children[0])
        started = time.monotonic()
        KIND.wait(children, time.monotonic() + 0.2)  # nobody reaps it: the whole grace period
        assert time.monotonic() - started >= 0.15
        assert KIND.is_alive(children[0])
        assert KIND.describe(children)[0].state == ZOMBIE
    finally:
        # Had leakcheck reaped it, wait() would find no child and say 0.
        assert end(proc) == 3


def test_a_zombie_without_its_command_line_shows_its_short_name() -> None:
    before = KIND.census()
    proc = start_waiter()
    try:
        proc.stdin.close()  # type: ignore[union-attr]
        wait_exited(proc.pid)
        [child] = only(KIND.new_since(before), proc.pid)  # resolved as a zombie: no command line left
        [info] = KIND.describe([child])
        assert info.command == info.name == child.comm
        assert info.command.startswith("python")
    finally:
        assert end(proc) == 3


def test_describe_a_child_reaped_meanwhile() -> None:
    before = KIND.census()
    proc = start_waiter()
    children = only(KIND.new_since(before), proc.pid)
    assert end(proc) == 3
    assert not KIND.is_alive(children[0])
    [info] = KIND.describe(children)
    assert info.state == "exited"
    assert info.pid == proc.pid
    assert "sys.stdin.read()" in info.command
    assert KIND.resolve({children[0].token}) == []


def test_the_token_survives_pid_reuse(waiter: subprocess.Popen[bytes]) -> None:
    start = starttime(waiter.pid)
    assert (waiter.pid, start) in KIND.census()
    # Another process with this pid (started at another time) is not this child, nor this child it.
    assert KIND.resolve({(waiter.pid, start - 1)}) == []
    assert not KIND.is_alive(Child(waiter.pid, start + 1, "python", ""))
    assert KIND.is_alive(Child(waiter.pid, start, "python", ""))
    assert KIND.resolve({"junk", (1, 2, 3), ("1", 2)}) == []


def test_a_child_the_opening_census_missed_is_not_new(monkeypatch: pytest.MonkeyPatch) -> None:
    proc = start_waiter()
    try:
        real = processes._tokens
        monkeypatch.setattr(processes, "_tokens", lambda: [])  # the kernel skipped it in the children files
        monkeypatch.setattr(processes, "_now_ticks", lambda: starttime(proc.pid) + 5)  # 50 ms after its start
        before = KIND.census()
        monkeypatch.setattr(processes, "_tokens", real)
        assert (proc.pid, starttime(proc.pid)) in KIND.census()
        assert (proc.pid, starttime(proc.pid)) not in KIND.new_since(before)
    finally:
        end(proc)


def test_live_lists_every_child(waiter: subprocess.Popen[bytes]) -> None:
    assert waiter.pid in [child.pid for child in KIND.live()]


# -- every way of starting a child


def test_multiprocessing_name() -> None:
    context = multiprocessing.get_context("spawn")
    parent_end, child_end = context.Pipe()
    before = KIND.census()
    # exec() of a line, so the spawned child needs no test module: it says it runs, then waits to be told to end.
    code = "conn.send('ready'); conn.recv()"
    worker = context.Process(target=exec, args=(code, {"conn": child_end}), name="leaky-worker", daemon=True)
    worker.start()
    try:
        assert parent_end.recv() == "ready"
        assert worker.pid is not None
        children = only(KIND.new_since(before), worker.pid)
        [info] = KIND.describe(children)
        assert info.name == "leaky-worker"
        assert info.pid == worker.pid
        assert "multiprocessing" in info.command
        assert info.header.startswith(f"Process 'leaky-worker' (pid={worker.pid}) [")
        assert worker.exitcode is None and worker in multiprocessing.active_children()  # not reaped
    finally:
        parent_end.send(None)
        worker.join(60)
        parent_end.close()
        child_end.close()
    assert worker.exitcode == 0


def test_multiprocessing_names_come_from_unreaped_processes_only() -> None:
    class Popen:
        def __init__(self, pid: int, returncode: Optional[int]) -> None:
            self.pid, self.returncode = pid, returncode

    class Process:
        def __init__(self, name: str, popen: Any) -> None:
            self.name, self._popen = name, popen

    class Odd:
        _popen = Popen(-3, None)

        @property
        def name(self) -> str:
            raise RuntimeError("no name")

    fakes = [Process("live-worker", Popen(-1, None)), Process("old-worker", Popen(-2, 0)), Odd(), Process("x", None)]
    children = sys.modules["multiprocessing.process"]._children  # type: ignore[attr-defined]
    children.update(fakes)
    try:
        names = processes._multiprocessing_names()
    finally:
        children.difference_update(fakes)
    assert names.get(-1) == "live-worker"
    assert -2 not in names  # reaped: its pid may be another child's by now
    assert -3 not in names


def test_os_fork_child() -> None:
    read_end, write_end = os.pipe()
    before = KIND.census()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # fork() with other threads running (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: wait for a byte, then leave at once
        try:
            os.close(write_end)
            os.read(read_end, 1)
        finally:
            os._exit(0)
    try:
        os.close(read_end)
        children = only(KIND.new_since(before), pid)
        [info] = KIND.describe(children)
        assert info.pid == pid
        with open("/proc/self/cmdline", "rb") as own:
            assert info.command == own.read().rstrip(b"\0").replace(b"\0", b" ").decode()[:1000]
        assert info.state in ("running", "sleeping")
    finally:
        os.write(write_end, b"x")
        os.close(write_end)
        assert os.waitpid(pid, 0)[0] == pid


def test_os_posix_spawn_child() -> None:
    stdin_read, stdin_write = os.pipe()
    stdout_read, stdout_write = os.pipe()
    before = KIND.census()
    pid = os.posix_spawn(
        sys.executable,
        [sys.executable, "-c", "import os; os.write(1, b'r'); os.read(0, 1)  # spawned"],
        os.environ,
        file_actions=[(os.POSIX_SPAWN_DUP2, stdin_read, 0), (os.POSIX_SPAWN_DUP2, stdout_write, 1)],
    )
    try:
        os.close(stdin_read)
        os.close(stdout_write)
        assert os.read(stdout_read, 1) == b"r"
        [info] = KIND.describe(only(KIND.new_since(before), pid))
        assert info.pid == pid
        assert info.command == f"{sys.executable} -c import os; os.write(1, b'r'); os.read(0, 1)  # spawned"
    finally:
        os.write(stdin_write, b"x")
        os.close(stdin_write)
        os.close(stdout_read)
        assert os.waitpid(pid, 0) == (pid, 0)


# -- waiting


def test_wait_returns_when_a_child_exits_and_is_reaped_mid_wait(waiter: subprocess.Popen[bytes]) -> None:
    children = only({(waiter.pid, starttime(waiter.pid))}, waiter.pid)
    go = threading.Event()

    def let_it_end() -> None:
        go.wait()
        end(waiter)

    reaper = threading.Thread(target=let_it_end)
    reaper.start()
    started = time.monotonic()
    go.set()
    KIND.wait(children, started + 60)
    elapsed = time.monotonic() - started
    reaper.join()
    assert elapsed < 20, elapsed
    assert not KIND.is_alive(children[0])
    assert waiter.returncode == 3


def test_wait_returns_when_a_zombie_is_reaped_mid_wait() -> None:
    before = KIND.census()
    proc = start_waiter()
    try:
        proc.stdin.close()  # type: ignore[union-attr]
        wait_exited(proc.pid)
        children = only(KIND.new_since(before), proc.pid)
        reaper = threading.Thread(target=proc.wait)
        started = time.monotonic()
        reaper.start()
        KIND.wait(children, started + 60)
        elapsed = time.monotonic() - started
        reaper.join()
        assert elapsed < 20, elapsed
        assert not KIND.is_alive(children[0])
    finally:
        assert end(proc) == 3


def test_wait_without_pidfds(monkeypatch: pytest.MonkeyPatch, waiter: subprocess.Popen[bytes]) -> None:
    def no_pidfds(pid: int, flags: int = 0) -> int:
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(os, "pidfd_open", no_pidfds, raising=False)
    children = only({(waiter.pid, starttime(waiter.pid))}, waiter.pid)
    started = time.monotonic()
    KIND.wait(children, started + 0.2)
    assert 0.15 <= time.monotonic() - started < 20
    reaper = threading.Thread(target=end, args=(waiter,))
    reaper.start()
    KIND.wait(children, time.monotonic() + 60)
    reaper.join()
    assert time.monotonic() - started < 20
    assert not KIND.is_alive(children[0])


def test_wait_for_a_running_child_ends_at_the_deadline(waiter: subprocess.Popen[bytes]) -> None:
    children = only({(waiter.pid, starttime(waiter.pid))}, waiter.pid)
    started = time.monotonic()
    KIND.wait(children, started + 0.2)
    assert 0.15 <= time.monotonic() - started < 20
    assert KIND.is_alive(children[0])
    assert KIND.wait([], time.monotonic() + 60) is None  # nothing to wait for: at once


# -- the record


HOSTILE_COMMAND = "python -c 'a]\n  Command: x, \"y\"' ] , \\ \t end "
HOSTILE_NAME = "w') (pid=1) [running]:\nProcess 'x"


class TextFields:
    """What parse_dump hands a kind's from_text, for unit tests."""

    def integer(self, digits: str, what: str, base: int = 10) -> int:
        return int(digits, base)

    def optional_integer(self, digits: Optional[str], what: str) -> Optional[int]:
        return None if digits in (None, "None") else int(digits)  # type: ignore[arg-type]

    def text(self, field: str) -> str:
        return str(ast.literal_eval(field[1:])) if field.startswith("\\") else field

    def name(self, literal: str) -> str:
        return str(ast.literal_eval(literal))

    def error(self, message: str) -> ValueError:
        return ValueError(message)


class JsonFields:
    def __init__(self, record: Any) -> None:
        self.record = record

    def field(self, key: str, types: Tuple[type, ...], signed: bool = False) -> Any:
        value = self.record[key]
        if not isinstance(value, types):
            raise ValueError(key)
        return value

    def frames(self) -> Tuple[Any, ...]:
        return ()

    def error(self, message: str) -> ValueError:
        return ValueError(message)


def from_text(text: str) -> ProcessInfo:
    header, *rest = text.split("\n")
    found = ProcessInfo.HEADER.fullmatch(header)
    assert found is not None, header
    assert rest[-1] == ""
    details = [line[2:] for line in rest[:-1]]
    assert all(line.startswith("  ") and not line.startswith("   ") for line in rest[:-1])
    return ProcessInfo.from_text(found, (), details, TextFields())


@pytest.mark.parametrize(
    "info",
    [
        ProcessInfo(1234, "sleep", "sleeping", "sleep 60"),
        ProcessInfo(1, "python", ZOMBIE, "python"),
        ProcessInfo(2**22, HOSTILE_NAME, "a]b", HOSTILE_COMMAND),
        ProcessInfo(7, "", "\\'x'", ""),
        ProcessInfo(8, "n", " running", "\\'ls'"),
    ],
)
def test_record_round_trip(info: ProcessInfo) -> None:
    assert ProcessInfo.HEADER.fullmatch(info.header) is not None
    text = f"{info.header}\n{info.stack}"
    assert text.count("\n") == 2  # one header, one detail line: no crafted text makes more
    assert from_text(text) == info
    json_fields = info.to_json()
    assert set(json_fields) == {"pid", "name", "state", "command", "stack"}
    assert ProcessInfo.from_json(JsonFields(json_fields)) == info
    assert hash(info) == hash(from_text(text))
    assert info.frames == () and info.sort_key() == (info.pid, info.name)
    assert "pid=" in repr(info)
    with pytest.raises(AttributeError):
        info.pid = 3  # type: ignore[misc]


def test_hostile_text_cannot_pass_for_another_field() -> None:
    info = ProcessInfo(5, "x", HOSTILE_COMMAND, HOSTILE_COMMAND)
    found = ProcessInfo.HEADER.fullmatch(info.header)
    assert found is not None
    assert found["pid"] == "5"
    assert TextFields().text(found["state"]) == HOSTILE_COMMAND
    assert "\n" not in info.header and info.stack.count("\n") == 1


@pytest.mark.parametrize(
    "details",
    [[], ["Command: a", "Command: b"], ["Awaiting Future"]],
)
def test_from_text_wants_one_command_line(details: List[str]) -> None:
    found = ProcessInfo.HEADER.fullmatch("Process 'x' (pid=1) [running]:")
    assert found is not None
    with pytest.raises(ValueError, match="Command"):
        ProcessInfo.from_text(found, (), details, TextFields())


@pytest.mark.parametrize(
    "header",
    [
        "Process x (pid=1) [running]:",
        "Process 'x' (pid=-1) [running]:",
        "Process 'x' (pid=1) [run]ning]:",
        "Process 'x' (pid=1) []:",
        "Process 'x' (pid=1) [\\bad]:",
        "Thread 'x' (pid=1) [running]:",
    ],
)
def test_header_refuses_malformed_lines(header: str) -> None:
    assert ProcessInfo.HEADER.fullmatch(header) is None


def test_header_matches_in_linear_time() -> None:
    started = time.monotonic()
    crafted_lines = (
        "Process '" + "\\'" * 50_000,
        "Process 'x' (pid=1) [" + "]" * 50_000,
        "Process 'x' (pid=" + "1" * 99_999,
    )
    for crafted in crafted_lines:
        assert ProcessInfo.HEADER.fullmatch(crafted) is None
    assert time.monotonic() - started < 5


def test_the_kind_as_registered() -> None:
    assert KIND.name == "processes"
    assert KIND.info_type is ProcessInfo
    assert "processes" not in DEFAULT_KINDS and KIND.has_stacks is False
    assert ProcessInfo.kind == "process" and ProcessInfo.plural == "processes"
    assert ProcessInfo.header_word == "Process"
    assert KIND.configure(True) is KIND
    assert KIND.configure(False) is None
    with pytest.raises(TypeError):
        KIND.configure(1)


# -- without /proc


def test_without_proc_it_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setattr(processes, "_PROC", str(tmp_path / "no-proc"))
    with pytest.raises(ValueError, match=re.escape("processes=True needs /proc (Linux)")):
        KIND.check_supported()
    with pytest.raises(ValueError, match=re.escape("processes=True needs /proc (Linux)")):
        KIND.configure(True)
    with pytest.raises(ValueError, match="needs /proc"):  # never an empty census
        KIND.census()


def test_importing_starts_and_patches_nothing() -> None:
    code = (
        "import sys, threading, os, leakcheck.kinds.base, leakcheck.kinds.frames; "
        "modules, threads, fork = set(sys.modules), threading.active_count(), os.fork; "
        "import leakcheck.kinds.processes; "
        "assert threading.active_count() == threads and os.fork is fork; "
        "new = set(sys.modules) - modules; "
        "assert new == {'leakcheck.kinds.processes'}, new"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root)


# -- end to end: no_leaks, snapshot, the report


def test_no_leaks_reports_a_running_child() -> None:
    proc = None
    try:
        with pytest.raises(leakcheck.LeakError) as err, leakcheck.no_leaks(processes=True, timeout=0.2):
            proc = start_waiter("e2e-running")
        text = str(err.value)
        assert f"pid={proc.pid}" in text  # type: ignore[union-attr]
        assert "e2e-running" in text
        assert "Process " in text
        [info] = [i for i in err.value.report.of("processes") if i.pid == proc.pid]  # type: ignore[union-attr]
        assert isinstance(info, ProcessInfo)
        assert "e2e-running" in info.command
    finally:
        end(proc)


def test_no_leaks_reports_a_zombie() -> None:
    proc = None
    try:
        with pytest.raises(leakcheck.LeakError) as err, leakcheck.no_leaks(processes=True, timeout=0.2):
            proc = start_waiter("e2e-zombie")
            with open(f"/proc/{proc.pid}/comm") as comm:
                name = comm.read().rstrip("\n")
            proc.stdin.close()  # type: ignore[union-attr]
            wait_exited(proc.pid)
        text = str(err.value)
        assert f"Process {name!r} (pid={proc.pid}) [zombie (exited, not reaped)]:" in text  # type: ignore[union-attr]
        assert f"Command: {name}\n" in text  # a zombie has no command line left: its executable's name
    finally:
        if proc is not None:
            assert end(proc) == 3  # leakcheck did not reap it


def test_no_leaks_clean_with_popen_as_context_manager() -> None:
    with leakcheck.no_leaks(processes=True), start_waiter() as proc:
        pass
    assert proc.returncode == 3


def test_no_leaks_clean_when_reaped_in_the_block() -> None:
    with leakcheck.no_leaks(processes=True):
        proc = start_waiter()
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait()


def test_no_leaks_clean_when_reaped_within_the_grace_period() -> None:
    with leakcheck.no_leaks(processes=True, timeout=30):
        proc = start_waiter()
        # The reaper outlives the block: the grace period waits for the child's exit, then its reaping.
        threading.Thread(target=end, args=(proc,)).start()
    assert proc.returncode == 3


def test_snapshot_dump_and_json() -> None:
    proc = start_waiter("snapshot-child")
    try:
        snap = leakcheck.snapshot(processes=True)
        mine = [info for info in snap.of("processes") if info.pid == proc.pid]
        assert [info.pid for info in mine] == [proc.pid]
        text = str(snap)
        assert f"Process {mine[0].name!r} (pid={proc.pid}) [" in text
        assert "snapshot-child" in text
        assert leakcheck.parse_dump(text).of("processes") == snap.of("processes")
        assert leakcheck.Snapshot.from_json(snap.to_json()).of("processes") == snap.of("processes")
    finally:
        end(proc)


MULTIPROCESSING_HELPERS = """
import multiprocessing, sys
from multiprocessing import resource_tracker
import leakcheck

def main():
    assert resource_tracker._resource_tracker._pid is None
    context = multiprocessing.get_context(sys.argv[1])
    with leakcheck.no_leaks(processes=True, timeout=0.5):
        worker = context.Process(target=int, name="short-worker")
        worker.start()
        worker.join()
    helpers = [resource_tracker._resource_tracker._pid]
    if sys.argv[1] == "forkserver":
        from multiprocessing import forkserver
        helpers.append(forkserver._forkserver._forkserver_pid)
    assert all(isinstance(pid, int) for pid in helpers), helpers
    print("clean, helpers started:", len(helpers))

if __name__ == "__main__":
    main()
"""


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_multiprocessing_helper_processes_started_in_the_block_are_not_leaks(tmp_path: Path, method: str) -> None:
    """The resource tracker and the forkserver live as long as the process: not the leak of the block using them."""
    script = tmp_path / "helpers.py"
    script.write_text(MULTIPROCESSING_HELPERS)
    proc = subprocess.run(
        [sys.executable, str(script), method], capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = 2 if method == "forkserver" else 1
    assert f"clean, helpers started: {expected}" in proc.stdout
