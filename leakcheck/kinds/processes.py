"""Capture of child processes: census from ``/proc``, description, and waiting on pidfds.

``processes=True`` reports the child processes started in a block that are
still there when its grace period ends: running (or sleeping, stopped...),
or exited but not reaped, i.e. zombies.  Every way of starting one counts
(``subprocess``, ``multiprocessing``, ``os.fork``, ``os.posix_spawn``): the
census asks the kernel, not a Python module.

What counts as ended.  A child has ended once it has exited *and* been
reaped (``Popen.wait()``, ``Process.join()``, ``os.waitpid()``): a zombie
is a leak, since only its parent can reap it.  leakcheck itself never reaps
a child (no ``wait``/``waitpid``, not even with ``WNOHANG``, which reaps):
it reads ``/proc/<pid>/stat`` (state ``Z``) and waits on pidfds, so the
program's own ``Popen.wait()`` still gets the real exit status.

The grace period.  :meth:`ProcessKind.wait` returns the moment every child
has exited and been reaped, or at the deadline.  Exits are awaited on
pidfds (``os.pidfd_open``, Linux 5.3+) with one ``poll()``, no polling loop.
The kernel tells no one else when a child is reaped, so a child that has
exited but is not reaped yet (the program may be about to: a
``Popen.wait()`` in another thread wakes at the same exit) is looked at
again after 0.5 ms, then at doubling intervals up to 20 ms, until it is
reaped or the deadline passes; one still unreaped then is reported as
``zombie (exited, not reaped)``.  Without pidfds (older kernels, seccomp
filters) running children are looked at the same way.

The census.  Children are the processes whose parent is this process, each
known by ``(pid, starttime)`` (field 22 of ``/proc/<pid>/stat``, clock ticks
since boot), so a pid reused by a later process is another child.  They are
read from ``/proc/self/task/<tid>/children`` (one small file per thread;
needs ``CONFIG_PROC_CHILDREN``), or else by scanning every
``/proc/<pid>/stat`` for this parent pid.  The kernel does not promise that
the ``children`` files list a child while a sibling is being reaped; so a
census remembers when it was taken, and a child that started before the
opening census is never new, even if that census missed it.

Limits.  Only direct children: a grandchild (``sh -c "server &"``) belongs
to init, or to a subreaper, once its parent exits.  The command line is the
one at capture time, shortened to 1000 characters; a zombie has none left,
so its last known one (or the executable's short name) is shown.  The name
is the ``multiprocessing.Process`` name where ``multiprocessing`` started
the child, else the executable's short name (``/proc/<pid>/comm``).  The
census needs ``/proc`` (Linux); elsewhere :meth:`ProcessKind.check_supported`
raises ``ValueError``.
"""

from __future__ import annotations

import os
import re
import sys
import time
from typing import AbstractSet, Any, Callable, Dict, FrozenSet, Hashable, List, NamedTuple, Optional, Sequence, Tuple

from ..records import LITERAL, Frame, shown, shown_field
from .base import InfoRecord, JsonFields, Kind, TextFields, remaining
from .creation import Created, record
from .frames import as_text, attribute, safely
from .tracking import Patch, when_imported

_PROC = "/proc"
"""Where procfs is mounted; tests point it elsewhere."""

_COMMAND_LIMIT = 1000
_READ_LIMIT = 8192
_FIRST_DELAY = 0.0005
_DELAY_CAP = 0.02
_POLL_MS_CAP = 2**31 - 1
_TASK_LIST_ATTEMPTS = 3
_COMMAND_LABEL = "Command: "

_STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk sleep",
    "T": "stopped",
    "t": "tracing stop",
    "Z": "zombie (exited, not reaped)",
    "X": "dead",
    "x": "dead",
    "K": "wakekill",
    "W": "waking",
    "P": "parked",
    "I": "idle",
}
ZOMBIE = _STATES["Z"]
"""The state of a child that has exited and that no one has reaped yet."""
EXITED = "exited"
"""The state of a child that ended between its capture and its description."""

_STATE_FIELD = shown_field("state", r"\]")

Token = Tuple[int, int]
"""A child's identity: ``(pid, starttime)``."""


_DETAIL_COMMAND = 100  # characters of the command line a report's summary line shows


class ProcessInfo(InfoRecord):
    """A child process as it was when it was captured."""

    _compared = ("pid", "name", "state", "command")
    __slots__ = (*_compared, "frames", "stack")
    _shown = _compared
    kind = "process"
    plural = "processes"
    header_word = "Process"
    # The name is a string literal and the state is plain only without "]": no crafted text passes for
    # another field, and every field ends at a character it cannot hold, so matching is linear.
    HEADER = re.compile(rf"Process (?P<name>{LITERAL}) \(pid=(?P<pid>\d+)\) \[{_STATE_FIELD}\]:")

    pid: int
    name: str
    """The ``multiprocessing.Process`` name, else the executable's short name (``/proc/<pid>/comm``)."""
    state: str
    """``"running"``, ``"sleeping"``, ``"stopped"``, ``"zombie (exited, not reaped)"``, ``"exited"``..."""
    command: str
    """The command line, its arguments joined with spaces."""
    frames: Tuple[Frame, ...]
    stack: str

    def __init__(self, pid: int, name: str, state: str, command: str) -> None:
        self._init(
            pid=pid,
            name=name,
            state=state,
            command=command,
            frames=(),
            stack=f"  {_COMMAND_LABEL}{shown(command)}\n",
        )

    @property
    def detail(self) -> str:
        command = self.command if len(self.command) <= _DETAIL_COMMAND else self.command[: _DETAIL_COMMAND - 3] + "..."
        return f"pid {self.pid}: {command}"

    @property
    def header(self) -> str:
        """The dump line that introduces this process: ``Process 'sleep' (pid=1234) [sleeping]:``."""
        return f"Process {self.name!r} (pid={self.pid}) [{shown(self.state, ']')}]:"

    @property
    def advice(self) -> str:
        return (
            "wait for it before the block ends (proc.wait(), or `with subprocess.Popen(...) as proc:`; "
            "join() a multiprocessing.Process)"
        )

    def sort_key(self) -> Tuple[Any, ...]:
        return (self.pid, self.name)

    def to_json(self) -> Dict[str, Any]:
        return {"pid": self.pid, "name": self.name, "state": self.state, "command": self.command, "stack": self.stack}

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> ProcessInfo:
        if frames:
            raise fields.error("a process has no Python frames")
        if len(details) != 1 or not details[0].startswith(_COMMAND_LABEL):
            found = details[1] if details and details[0].startswith(_COMMAND_LABEL) else (details or ["nothing"])[0]
            raise fields.error(f"a process has one line '{_COMMAND_LABEL}...', not {found[:80]!r}")
        return cls(
            pid=fields.integer(header["pid"], "pid"),
            name=fields.name(header["name"]),
            state=fields.text(header["state"]),
            command=fields.text(details[0][len(_COMMAND_LABEL) :]),
        )

    @classmethod
    def from_json(cls, fields: JsonFields) -> ProcessInfo:
        return cls(
            pid=fields.field("pid", (int,)),
            name=fields.field("name", (str,)),
            state=fields.field("state", (str,)),
            command=fields.field("command", (str,)),
        )


class _Stat(NamedTuple):
    comm: str
    state: str
    ppid: int
    starttime: int


class Child:
    """A live child process, as :meth:`ProcessKind.resolve` found it; holds no resource."""

    __slots__ = ("comm", "command", "pid", "starttime")

    def __init__(self, pid: int, starttime: int, comm: str, command: str) -> None:
        self.pid = pid
        self.starttime = starttime
        self.comm = comm
        """The executable's short name when resolved."""
        self.command = command
        """The command line when resolved, ``""`` if it had none (a zombie)."""

    @property
    def token(self) -> Token:
        return (self.pid, self.starttime)

    def __repr__(self) -> str:
        return f"<child process {self.pid} {self.comm!r}>"


class _Census(FrozenSet[Token]):
    """Census tokens, with the time they were taken (in clock ticks since boot, as ``starttime`` counts)."""

    __slots__ = ("ticks",)
    ticks: Optional[int]


def _read(path: str, limit: int = _READ_LIMIT) -> Optional[bytes]:
    """The start of a /proc file, or ``None`` when it is gone or unreadable."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        size = 0
        while size < limit:
            chunk = os.read(fd, limit - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:  # ESRCH: the process ended while it was read
        return None
    finally:
        os.close(fd)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace")


def _stat(pid: int) -> Optional[_Stat]:
    """Fields of ``/proc/<pid>/stat``, or ``None`` when there is no such process."""
    data = _read(f"{_PROC}/{pid}/stat", 4096)
    if not data:
        return None
    # The name is in parentheses and may hold anything, parentheses and spaces too: it ends at the last ")".
    head, _, rest = data.rpartition(b")")
    fields = rest.split()
    try:
        return _Stat(_text(head.partition(b"(")[2]), fields[0].decode("ascii"), int(fields[1]), int(fields[19]))
    except (IndexError, ValueError):
        return None


def _command(pid: int) -> str:
    data = _read(f"{_PROC}/{pid}/cmdline")
    if not data:
        return ""
    command = _text(data.rstrip(b"\0").replace(b"\0", b" "))
    return command if len(command) <= _COMMAND_LIMIT else command[: _COMMAND_LIMIT - 3] + "..."


def _unsupported() -> ValueError:
    return ValueError(
        f"processes=True needs /proc (Linux) to find child processes, and {_PROC}/self/stat is not there: "
        "leave processes off on this platform"
    )


def _now_ticks() -> Optional[int]:
    """The time as ``starttime`` counts it: clock ticks since boot, or ``None`` when it cannot be read."""
    clock = getattr(time, "CLOCK_BOOTTIME", None)
    try:
        return int(time.clock_gettime(clock) * os.sysconf("SC_CLK_TCK")) if clock is not None else None
    except (OSError, ValueError):
        return None


_children_files: Dict[str, bool] = {}
"""Whether the kernel has ``/proc/<pid>/task/<tid>/children``, by procfs path."""


def _has_children_files() -> bool:
    found = _children_files.get(_PROC)
    if found is None:
        found = _children_files[_PROC] = os.path.exists(f"{_PROC}/thread-self/children")
    return found


def _pids_from_children_files() -> Optional[List[int]]:
    """Child pids from each thread's ``children`` file, or ``None`` when the thread list would not hold still.

    A thread that exits hands its children to another thread, maybe one
    already read; so the threads are listed again after reading, and the
    reading counts only if no thread came or went meanwhile.
    """
    tasks = f"{_PROC}/self/task"
    try:
        tids = os.listdir(tasks)
        for _ in range(_TASK_LIST_ATTEMPTS):
            pids: List[int] = []
            for tid in tids:
                data = _read(f"{tasks}/{tid}/children", 1 << 20)
                if data:
                    pids.extend(map(int, data.split()))
            again = os.listdir(tasks)
            if sorted(again) == sorted(tids):
                return pids
            tids = again
    except FileNotFoundError:
        raise _unsupported() from None
    return None


def _pids_by_scan() -> List[int]:
    """Child pids from every process's stat file: slower, for kernels without ``children`` files."""
    me = os.getpid()
    try:
        entries = os.listdir(_PROC)
    except FileNotFoundError:
        raise _unsupported() from None
    pids = []
    for entry in entries:
        if entry.isdigit():
            stat = _stat(int(entry))
            if stat is not None and stat.ppid == me:
                pids.append(int(entry))
    return pids


def _tokens() -> List[Token]:
    pids = _pids_from_children_files() if _has_children_files() else None
    if pids is None:
        pids = _pids_by_scan()
    me = os.getpid()
    tokens = []
    for pid in pids:
        stat = _stat(pid)
        if stat is not None and stat.ppid == me:
            tokens.append((pid, stat.starttime))
    return tokens


def _is_ours(pid: int, starttime: int) -> Optional[_Stat]:
    """The stat of child ``(pid, starttime)`` if it is still there (running or a zombie), else ``None``."""
    stat = _stat(pid)
    return stat if stat is not None and stat.starttime == starttime and stat.ppid == os.getpid() else None


def _multiprocessing_names() -> Dict[int, str]:
    """``multiprocessing.Process`` names by pid, for the processes it started and has not reaped.

    Read from ``multiprocessing.process._children`` directly, and only when
    ``multiprocessing`` is already imported: ``active_children()`` would
    reap the ones that have exited.
    """
    module = sys.modules.get("multiprocessing.process")
    children = attribute(module, "_children") if module is not None else None
    if not isinstance(children, (set, frozenset)):
        return {}
    names: Dict[int, str] = {}
    members: List[Any] = safely(lambda: list(children), [])
    for process in members:
        popen = attribute(process, "_popen")
        pid = attribute(popen, "pid")
        # A reaped one's pid may belong to another child by now.
        if isinstance(pid, int) and attribute(popen, "returncode") is None:
            name = attribute(process, "name")
            if name is not None:
                names[pid] = as_text(name)
    return names


def _pidfd(child: Child) -> Optional[int]:
    """A pidfd for ``child``, or ``None`` when there is none to be had (or the child was reaped)."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return None
    try:
        fd: int = pidfd_open(child.pid)
    except OSError:  # reaped (ESRCH), an old kernel (ENOSYS), a seccomp filter, no fds left
        return None
    # The pid may have been reused before the pidfd was opened; if the child is still there after,
    # it held the pid all along, and the pidfd is its own.
    if _is_ours(child.pid, child.starttime) is None:
        os.close(fd)
        return None
    from .fds import own_fd  # only when waiting: importing this module loads no other kind

    own_fd(fd)  # a check with fds=True never counts it
    return fd


def _close_pidfd(fd: int) -> None:
    from .fds import release_fd

    release_fd(fd)
    os.close(fd)


def _multiprocessing_helpers() -> FrozenSet[int]:
    """The pids of ``multiprocessing``'s resource tracker and forkserver, if it started them.

    Started on first use and kept for the life of the process, like a pool
    made at import, they are never a leak of the block that first needed them.
    """
    pids = []
    tracker = getattr(sys.modules.get("multiprocessing.resource_tracker"), "_resource_tracker", None)
    pids.append(getattr(tracker, "_pid", None))
    forkserver = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    pids.append(getattr(forkserver, "_forkserver_pid", None))
    return frozenset(pid for pid in pids if isinstance(pid, int))


class _MultiprocessingHelper:
    """Ignores ``multiprocessing``'s own helper processes (see :func:`_multiprocessing_helpers`)."""

    def __init__(self, pids: FrozenSet[int]) -> None:
        self._pids = pids

    def __call__(self, info: InfoRecord) -> bool:
        return isinstance(info, ProcessInfo) and info.pid in self._pids


# -- creation tracking

_started: Dict[int, Tuple[Optional[int], Created]] = {}
"""What started each tracked child, by pid, with its starttime (``None`` where ``/proc`` cannot tell)."""
_KEPT = 1024


def _remember(pid: object, created: Created) -> None:
    if type(pid) is not int or pid <= 0:
        return
    try:  # never an error once the child exists: the caller would lose its pid
        stat = _stat(pid)
        _started[pid] = (stat.starttime if stat is not None else None, created)
        if len(_started) > _KEPT:  # a bound: forget the children that are gone, else the oldest
            for known, (starttime, _) in list(_started.items()):
                if starttime is not None and _is_ours(known, starttime) is None:
                    _started.pop(known, None)
            while len(_started) > _KEPT:
                _started.pop(next(iter(_started)), None)
    except Exception:
        pass


def _returns_pid_hook(original: Any, patch: Patch) -> Any:
    def start(*args: Any, **kwargs: Any) -> Any:
        # Recorded before the child exists: once it does, a check in another thread may see it.
        created = record(1) if patch.active else None
        result = original(*args, **kwargs)
        if created is not None:
            _remember(result[0] if isinstance(result, tuple) else result, created)  # forkpty: (pid, fd)
        return result

    start.__doc__ = original.__doc__
    start.__wrapped__ = original  # type: ignore[attr-defined]
    return start


def _launch_hook(original: Any, patch: Patch) -> Any:
    def _launch(self: Any, process_obj: Any) -> Any:
        created = record(1) if patch.active else None
        result = original(self, process_obj)
        if created is not None:
            _remember(getattr(self, "pid", None), created)
        return result

    _launch.__wrapped__ = original  # type: ignore[attr-defined]
    return _launch


_patches: List[Patch] = []
"""Every hook made so far, applied or not: turning tracking off undoes them all."""


def _hook(patches: List[Patch]) -> None:
    for patch in patches:
        if patch not in _patches:
            _patches.append(patch)
        patch.apply()


def _hook_subprocess() -> bool:
    # subprocess calls _posixsubprocess.fork_exec, and on 3.13+ its own name for it, _fork_exec.
    subprocess = sys.modules.get("subprocess")
    if getattr(subprocess, "Popen", None) is None:
        return False  # still being imported
    targets = [(sys.modules.get("_posixsubprocess"), "fork_exec"), (subprocess, "_fork_exec")]
    _hook([_find(target, name, _returns_pid_hook) for target, name in targets if target is not None])
    return True


def _hook_multiprocessing() -> bool:
    # multiprocessing imports popen_fork only inside the first fork's start(): imported here, once
    # multiprocessing is, so that the first child is seen too.  POSIX only.
    try:
        import multiprocessing.popen_fork
    except ImportError:
        return True
    _hook([_find(multiprocessing.popen_fork.Popen, "_launch", _launch_hook)])
    return True


def _find(target: Any, name: str, hook: Callable[[Any, Patch], Any]) -> Patch:
    """The hook made before for ``target.name``, if any, so that undoing it puts back the very original."""
    for patch in _patches:
        if patch.target is target and patch.name == name:
            return patch
    return Patch(target, name, hook)


def _hook_children() -> None:
    """Every way Python starts a child, each hooked where the code that starts one looks it up; a module's once
    the program has imported it.  Not os.fork: the DeprecationWarning CPython gives for a fork in a threaded
    process names its caller, which would be this hook.  multiprocessing's fork start method is hooked instead."""
    _hook([_find(os, name, _returns_pid_hook) for name in ("posix_spawn", "posix_spawnp")])
    when_imported("subprocess", _hook_subprocess)
    when_imported("multiprocessing.context", _hook_multiprocessing)


class ProcessKind(Kind):
    """Child processes of this process, however they were started."""

    name = "processes"
    info_type = ProcessInfo
    has_stacks = False

    def check_supported(self) -> None:
        stat = _stat(os.getpid()) if os.path.exists(f"{_PROC}/self/stat") else None
        if stat is None:
            raise _unsupported()

    def census(self) -> AbstractSet[Hashable]:
        ticks = _now_ticks()
        census = _Census(_tokens())
        census.ticks = ticks
        return census

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        new = {token for token in _tokens() if token not in before}
        ticks = getattr(before, "ticks", None)
        if new and isinstance(ticks, int):
            # A child that started before the opening census is not the block's, even if that census missed it.
            new = {token for token in new if token[1] >= ticks - 1}
        return new

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        children = []
        for token in tokens:
            if not (isinstance(token, tuple) and len(token) == 2 and all(type(part) is int for part in token)):
                continue
            pid, starttime = token
            stat = _is_ours(pid, starttime)
            if stat is not None:
                children.append(Child(pid, starttime, stat.comm, _command(pid)))
        children.sort(key=lambda child: child.pid)
        return children

    def identity(self, obj: Any) -> Optional[Hashable]:
        child: Child = obj
        return (child.pid, child.starttime)

    def is_alive(self, obj: Any) -> bool:
        """Whether the child is still there: running, stopped, or exited and not reaped."""
        return isinstance(obj, Child) and _is_ours(obj.pid, obj.starttime) is not None

    def describe(self, objs: Sequence[Any]) -> Sequence[ProcessInfo]:
        if not objs:
            return []
        names = _multiprocessing_names()
        infos = []
        for child in objs:
            stat = _is_ours(child.pid, child.starttime)
            if stat is None:
                state, comm, command = EXITED, child.comm, child.command
            else:
                state = _STATES.get(stat.state, f"state {stat.state}")
                comm, command = stat.comm, _command(child.pid) or child.command
            infos.append(ProcessInfo(child.pid, names.get(child.pid, comm), state, command or comm))
        return infos

    def extra_ignores(self, suspects: Sequence[Any]) -> Tuple[List[Any], bool]:
        helpers = _multiprocessing_helpers()
        if not any(isinstance(child, Child) and child.pid in helpers for child in suspects):
            return [], False
        return [_MultiprocessingHelper(helpers)], False

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        """Block until every child in ``objs`` has exited and been reaped, or ``deadline``; never reaps one.

        Exits are awaited on pidfds; reaping, which nothing announces, is
        looked for at short, doubling intervals (see the module's docstring).
        """
        import select

        pending: Dict[int, Child] = {}  # pidfd -> a child that has not exited yet
        polled: List[Child] = []  # exited and not reaped yet, or without a pidfd
        poller = select.poll()
        try:
            for child in objs:
                if not isinstance(child, Child):
                    continue
                fd = _pidfd(child)
                if fd is None:
                    polled.append(child)
                else:
                    pending[fd] = child
                    poller.register(fd, select.POLLIN)
            delay = _FIRST_DELAY
            while True:
                polled = [child for child in polled if self.is_alive(child)]
                if not pending and not polled:
                    return
                left = remaining(deadline)
                if left <= 0:
                    return
                timeout = min(left, delay) if polled else left
                if pending:
                    for fd, _ in poller.poll(min(int(timeout * 1000) + 1, _POLL_MS_CAP)):
                        poller.unregister(fd)
                        _close_pidfd(fd)
                        polled.append(pending.pop(fd))
                        delay = _FIRST_DELAY / 2  # it is probably being reaped right now: look again soon
                else:
                    time.sleep(timeout)
                delay = min(delay * 2, _DELAY_CAP)
        finally:
            for fd in pending:
                _close_pidfd(fd)

    def track(self, on: bool) -> None:
        if on:
            _hook_children()
        else:
            for patch in _patches:
                patch.undo()

    def creation(self, obj: Any) -> Optional[Created]:
        if not isinstance(obj, Child):
            return None
        entry = _started.get(obj.pid)
        if entry is None or (entry[0] is not None and entry[0] != obj.starttime):
            return None
        return entry[1]


KIND = ProcessKind()
