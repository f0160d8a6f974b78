"""Attaching to a running process that has no agent (``sys.remote_exec``, CPython 3.14+).

Each target is a real second process.  Its main thread ticks (``asyncio.sleep``
in a loop): ``sys.remote_exec`` runs the script where the main thread runs
Python code.  A target answers questions about itself on stdin, from a thread
of its own, so the tests can see what attaching left behind.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Iterator, List

import helpers
import pytest

import leakcheck
from leakcheck.remote import attach
from leakcheck.remote.attach import AttachError, attach_snapshot

needs_attach = pytest.mark.skipif(not hasattr(sys, "remote_exec"), reason="attaching needs Python 3.14+ here")

HANDLER = "follow_" + "logs"  # the tests' own source lines never spell the keyword out

TARGET = r"""
import asyncio, json, os, sys, threading

def follow_logs(gate):
    gate.wait()

def answer_questions():
    for line in sys.stdin:
        state = {
            "threads": sorted(thread.name for thread in threading.enumerate()),
            "tool_ids": [sys.monitoring.get_tool(i) for i in range(6)] if hasattr(sys, "monitoring") else [],
            "path_added": [entry for entry in sys.path if entry == ROOT],
            "globals": sorted(name for name in globals() if not name.startswith("__")),
        }
        print(json.dumps(state), flush=True)

async def pump():
    await asyncio.Event().wait()

async def main():
    gate = threading.Event()
    threading.Thread(target=follow_logs, args=(gate,), name="log-follower", daemon=True).start()
    threading.Thread(target=answer_questions, name="questions", daemon=True).start()
    task = asyncio.create_task(pump(), name="event-pump")
    await asyncio.sleep(0)
    print(os.getpid(), flush=True)
    while True:  # the main thread ticks: sys.remote_exec runs the script between two ticks
        await asyncio.sleep(0.01)

asyncio.run(main())
"""


class Target:
    """A second Python process running ``source``; its pid is the first line it prints."""

    def __init__(self, source: str, *args: str, env: Any = None, cwd: str = "/") -> None:
        source = source.replace("ROOT", repr(helpers.ROOT))
        self.process = subprocess.Popen(
            [sys.executable, *args, "-c", source],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
            cwd=cwd,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().split()
        assert line and all(word.isdigit() for word in line), f"the target did not start: {line!r}"
        self.pid, *rest = map(int, line)
        self.extra = rest[0] if rest else 0
        """What the target printed after its pid, if anything."""

    def state(self) -> Any:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write("state\n")
        self.process.stdin.flush()
        return json.loads(self.process.stdout.readline())

    def close(self) -> None:
        self.process.kill()
        self.process.wait(helpers.JOIN_TIMEOUT)
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()


@pytest.fixture
def target() -> Iterator[Target]:
    # -I: no PYTHONPATH, no user site, no current directory: the target cannot import leakcheck itself.
    running = Target(TARGET, "-I")
    try:
        yield running
    finally:
        running.close()


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("LEAKCHECK")}
    env["PYTHONPATH"] = os.pathsep.join([helpers.ROOT, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    command = [sys.executable, "-m", "leakcheck", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)


@needs_attach
def test_stacks_of_a_process_without_an_agent_show_its_threads_and_tasks(target: Target) -> None:
    before = target.state()
    result = cli("stacks", str(target.pid))
    assert result.returncode == 0, result.stderr
    taken = leakcheck.parse_dump(result.stdout)
    assert taken.pid == target.pid
    follower = next(info for info in taken.threads if info.name == "log-follower")
    assert any(frame.function == f"__main__.{HANDLER}" for frame in follower.frames)
    pump = next(info for info in taken.tasks if info.name == "event-pump")
    assert pump.coro == "pump" and pump.awaiting
    # The script's own frames are not in the main thread's stack, and it left nothing behind.
    assert "leakcheck.remote.attached" not in result.stdout
    assert target.state() == before
    assert before["path_added"] == [] and before["tool_ids"] == [None] * 6


@needs_attach
def test_check_and_source_pid_read_a_process_without_an_agent(target: Target) -> None:
    failed = cli("check", str(target.pid), "--absent", HANDLER)
    assert failed.returncode == 1, failed.stderr
    assert "log-follower" in failed.stdout and f"in __main__.{HANDLER}" in failed.stdout
    assert cli("check", str(target.pid), "--present", HANDLER).returncode == 0
    leakcheck.assert_stack_match(HANDLER, source=target.pid)
    assert [info.name for info in leakcheck.find_stacks(HANDLER, source=target.pid)] == ["log-follower"]


@needs_attach
def test_each_attach_leaves_nothing_running_and_nothing_on_disk(
    target: Target, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attach.tempfile, "tempdir", str(tmp_path))
    before = target.state()
    for _ in range(3):
        taken = attach_snapshot(target.pid, 5.0)
        assert {info.name for info in taken.threads} == set(before["threads"])
    assert target.state() == before
    assert list(tmp_path.iterdir()) == []


AGENT_TARGET = r"""
import os, threading, time, leakcheck
leakcheck.start_agent()
print(os.getpid(), flush=True)
threading.Event().wait()  # the main thread never runs Python code again: only the agent can answer
"""


def test_a_process_with_an_agent_is_read_through_it(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": helpers.ROOT, "LEAKCHECK_AGENT_DIR": str(tmp_path / "agents")}
    running = Target(AGENT_TARGET, env=env)
    try:
        cli_env = {**env, "TMPDIR": str(tmp_path / "tmp")}
        os.mkdir(tmp_path / "tmp")
        result = subprocess.run(
            [sys.executable, "-m", "leakcheck", "stacks", str(running.pid)],
            capture_output=True,
            text=True,
            timeout=60,
            env=cli_env,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert leakcheck.parse_dump(result.stdout).pid == running.pid
        assert list((tmp_path / "tmp").iterdir()) == []  # no attach: nothing made for one
    finally:
        running.close()


@needs_attach
@pytest.mark.parametrize(
    ("args", "env"),
    [((), {"PYTHON_DISABLE_REMOTE_DEBUG": "1"}), (("-X", "disable_remote_debug"), {})],
    ids=["environment", "-X option"],
)
def test_a_target_with_remote_debugging_off_is_refused_with_a_reason(args: Any, env: Any) -> None:
    running = Target(TARGET, *args, env={**os.environ, **env})  # not -I, which ignores PYTHON* variables
    try:
        result = cli("stacks", str(running.pid))
    finally:
        running.close()
    assert result.returncode == 2
    assert "has remote debugging turned off" in result.stderr
    assert "leakcheck.start_agent()" in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


BLOCKED = r"""
import os
read_end, write_end = os.pipe()
print(os.getpid(), read_end, flush=True)
os.read(read_end, 1)  # blocked in a system call that nothing wakes: the main thread never gets to the script
"""


def wait_until_reading(pid: int, fd: int) -> None:
    """Until the kernel says the main thread of ``pid`` waits in a system call on ``fd`` (its first argument)."""
    waiting = threading.Event()
    for _ in range(5000):
        with open(f"/proc/{pid}/syscall", encoding="ascii") as syscall:
            fields = syscall.read().split()
        if len(fields) > 1 and fields[1] == hex(fd):
            return
        waiting.wait(0.001)  # a kernel state has no event to wait on
    raise AssertionError(f"pid {pid} never blocked reading fd {fd}")


@needs_attach
def test_a_target_whose_main_thread_is_blocked_in_c_times_out_saying_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(attach.tempfile, "tempdir", str(tmp_path))
    running = Target(BLOCKED, "-I")
    try:
        wait_until_reading(running.pid, running.extra)
        with pytest.raises(AttachError, match=r"did not run the dump within 0\.3 s") as raised:
            attach_snapshot(running.pid, 0.3)
        assert "blocked in C code" in str(raised.value) and "leakcheck.start_agent()" in str(raised.value)
        # The FIFO is gone; the script stays for the target, which removes it if it ever gets there.
        [directory] = list(tmp_path.iterdir())
        assert [entry.name for entry in directory.iterdir()] == ["dump.py"]
    finally:
        running.close()


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]


def nobody_can_run_this_python() -> bool:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        return False  # only root can run a command as another user
    return subprocess.run([*AS_NOBODY, "-c", "pass"], capture_output=True, timeout=60, check=False).returncode == 0


@pytest.mark.skipif(not nobody_can_run_this_python(), reason="needs root, and this Python runnable by user 65534")
def test_another_users_process_is_refused_as_permission_denied() -> None:
    target = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # root's
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": helpers.ROOT, "LEAKCHECK_AGENT_DIR": "/nonexistent"}
    try:
        command = [*AS_NOBODY, "-m", "leakcheck", "stacks", str(target.pid)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60, env=env, check=False)
    finally:
        target.kill()
        target.wait()
    assert result.returncode == 2, result.stderr
    assert f"pid {target.pid} is another user's process" in result.stderr and "permission denied" in result.stderr
    assert "Traceback" not in result.stderr


def stacks_of(command: List[str]) -> subprocess.CompletedProcess[str]:
    """``python -m leakcheck stacks`` of a process running ``command``, which it outlives."""
    other = subprocess.Popen(command)
    try:
        return cli("stacks", str(other.pid))
    finally:
        other.kill()
        other.wait()


@needs_attach
def test_a_process_that_is_not_python_is_refused_with_a_reason() -> None:
    result = stacks_of(["sleep", "60"])
    assert result.returncode == 2
    assert "is not a CPython 3.14+ process" in result.stderr and "leakcheck.start_agent()" in result.stderr


@pytest.mark.skipif(hasattr(sys, "remote_exec"), reason="this Python can attach")
def test_an_older_python_says_attaching_needs_3_14_and_the_agent() -> None:
    result = stacks_of([sys.executable, "-c", "import time; time.sleep(60)"])
    assert result.returncode == 2
    assert "needs Python 3.14 or later here" in result.stderr and "leakcheck.start_agent()" in result.stderr


def test_this_process_without_an_agent_is_read_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Attaching to itself would wait for its own main thread, which is the one waiting.
    private = tmp_path / "agents"
    private.mkdir(mode=0o700)
    monkeypatch.setenv("LEAKCHECK_AGENT_DIR", str(private))
    names = [info.name for info in leakcheck.find_stacks("test_attach", source=os.getpid())]
    assert "MainThread" in names


def test_the_script_and_its_fifo_are_private_and_the_protocol_reads_a_snapshot(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # In process, on every version: a stand-in for sys.remote_exec checks what it is given, then runs the
    # script in a thread, as the target's main thread would.
    seen: List[Any] = []

    def remote_exec(pid: int, path: str) -> None:
        directory = os.path.dirname(path)
        for where, mode in ((directory, 0o700), (path, 0o600), (os.path.join(directory, "dump"), 0o600)):
            status = os.lstat(where)
            seen.append((os.path.basename(where), stat.S_IMODE(status.st_mode), status.st_uid == os.getuid()))
            assert stat.S_IMODE(status.st_mode) == mode and status.st_uid == os.getuid(), where
        with open(path, encoding="utf-8") as script:
            code = compile(script.read(), "<string>", "exec")
        threading.Thread(target=exec, args=(code, {"__builtins__": __builtins__})).start()

    monkeypatch.setattr(sys, "remote_exec", remote_exec, raising=False)
    taken = attach_snapshot(os.getpid(), 5.0)
    assert taken.pid == os.getpid() and any(info.name == "MainThread" for info in taken.threads)
    assert len(seen) == 3


def test_an_error_in_the_target_comes_back_as_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def remote_exec(pid: int, path: str) -> None:
        with open(path, encoding="utf-8") as script:
            code = compile(script.read().replace("leakcheck.snapshot(", "leakcheck.no_such_function("), "<s>", "exec")
        threading.Thread(target=exec, args=(code, {"__builtins__": __builtins__})).start()

    monkeypatch.setattr(sys, "remote_exec", remote_exec, raising=False)
    with pytest.raises(AttachError, match=r"taking the snapshot in pid \d+ failed: AttributeError"):
        attach_snapshot(os.getpid(), 5.0)
