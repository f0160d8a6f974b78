"""The agent: the stack endpoint on a Unix socket named after the process id, like ``gops``.

The socket lives in a directory only its user can enter (mode 0700), and is
itself mode 0600, so only that user's processes can read the stacks.  It
speaks the same HTTP as ``serve_stacks()``, one request per connection, and
is removed when the process exits.
"""

from __future__ import annotations

import atexit
import os
import socket
import stat
import threading
from typing import Optional

from .server import StackServer

_lock = threading.Lock()
_running: Optional[StackServer] = None


DIRECTORY_VARIABLE = "LEAKCHECK_AGENT_DIR"


def agent_directory() -> str:
    """The private per-user directory of agent sockets: ``$LEAKCHECK_AGENT_DIR``, or ``/tmp/leakcheck-<uid>``.

    The default is one fixed place, whatever the environment: not
    ``$TMPDIR`` or ``$XDG_RUNTIME_DIR``, which a CLI started from cron or
    ``sudo -u`` may not share, and not ``/run/user/<uid>``, which appears at
    login and is removed at logout, under a running agent.
    """
    return os.environ.get(DIRECTORY_VARIABLE) or f"/tmp/leakcheck-{os.getuid()}"


def socket_path(pid: int) -> str:
    """Where the agent of process ``pid`` listens."""
    return os.path.join(agent_directory(), f"{pid}.sock")


def _process(pid: int) -> str:
    """``"gone"``, ``"mine"``, or ``"another user's"``: whether ``pid`` runs, and as whom."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return "gone"
    except PermissionError:
        return "another user's"
    return "mine"


def _remove_stale_sockets(directory: str) -> None:
    # A process killed by SIGKILL never removes its socket; without this they would pile up.
    for name in os.listdir(directory):
        stem, dot, suffix = name.partition(".")
        if dot and suffix == "sock" and stem.isdigit() and _process(int(stem)) == "gone":
            try:
                os.unlink(os.path.join(directory, name))
            except OSError:
                pass  # another process's start_agent() removed it first


class AnotherUsersProcess(PermissionError):
    """The pid belongs to another user: neither its agent nor attaching can read its stacks."""


def agent_socket(pid: int) -> str:
    """The socket of the agent of ``pid``; ``OSError`` saying why when there is none to connect to."""
    running = _process(pid)
    if running == "gone":
        raise ProcessLookupError(f"no process has pid {pid}")
    if running != "mine":
        raise AnotherUsersProcess(f"pid {pid} is another user's process: only its own user can read its agent")
    # A socket in a directory that is not private could be anyone's, answering with forged stacks.
    path = os.path.join(_check_private(agent_directory()), f"{pid}.sock")
    if not os.path.exists(path):
        raise ConnectionRefusedError(f"no leakcheck agent for pid {pid} at {path}: call leakcheck.start_agent() there")
    return path


def _check_private(directory: str) -> str:
    try:
        status = os.lstat(directory)
    except FileNotFoundError:
        return directory  # nothing in it to trust or distrust
    # Someone else's directory, a symlink or a loose mode would let others read the stacks, or plant sockets.
    if not stat.S_ISDIR(status.st_mode) or status.st_uid != os.getuid() or status.st_mode & 0o077:
        raise PermissionError(f"{directory} must be a directory of user {os.getuid()} with mode 0700")
    return directory


def _private_directory() -> str:
    directory = agent_directory()
    os.makedirs(directory, mode=0o700, exist_ok=True)
    return _check_private(directory)


def start_agent() -> str:
    """Serve this process's stacks on a private Unix socket named after its pid; return the socket's path.

    ``python -m leakcheck stacks PID`` and ``source=PID`` read it.  Calling
    it again returns the same path; the socket is removed at exit.  Not
    available on Windows.
    """
    global _running
    if not hasattr(socket, "AF_UNIX"):
        raise OSError("start_agent needs Unix sockets, which this platform lacks")
    with _lock:
        path = socket_path(os.getpid())
        if _running is not None and _running.pid == os.getpid():
            return path
        _running = None  # inherited through fork(): the parent's agent, not this process's
        _remove_stale_sockets(_private_directory())
        if os.path.exists(path):
            os.unlink(path)  # left by an earlier process with this pid, which can no longer be running here
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(path)
            os.chmod(path, 0o600)
            listener.listen(8)
        except BaseException:
            listener.close()
            raise
        _running = StackServer(listener, None, f"unix:{path}")
        atexit.register(_stop, _running, path)
        return path


def _stop(server: StackServer, path: str) -> None:
    if server.pid != os.getpid():
        return  # a forked child's copy: the socket and the server are the parent's
    server.close()
    try:
        os.unlink(path)
    except OSError:
        pass


def stop_agent() -> None:
    """Close this process's agent and remove its socket, if it runs one (as exit does)."""
    global _running
    with _lock:
        server, _running = _running, None
    if server is not None:
        _stop(server, socket_path(server.pid))
