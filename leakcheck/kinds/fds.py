"""Capture of open file descriptors: files, sockets, pipes and the rest.

The census lists the descriptor directory (``/proc/self/fd`` on Linux,
``/dev/fd`` elsewhere) and calls ``os.fstat`` on each entry.  A descriptor's
identity token is ``(fd, st_dev, st_ino)`` (for the standard streams 0 to 2, the number alone):

- A socket or a pipe has an inode of its own, so a descriptor closed in the
  block and a new socket or pipe opened at the same number is a new token.
- A regular file's inode is the file's: the same file opened again at the
  same number is the *same* token.  The number of descriptors open on that
  file did not grow, and nothing cheaper than holding every descriptor could
  tell the two opens apart.
- Anonymous inodes (``anon_inode:[eventpoll]``, ``eventfd``...) share one
  inode on most kernels: one closed and another opened at the same number
  count as the same descriptor.
- Unlike the text of ``/proc/self/fd/N``, the inode survives a rename or an
  unlink of the file: a descriptor opened before the block on a file that
  the block deletes is not mistaken for a new one.  And ``fstat`` costs
  half as much as ``readlink``: with 200 descriptors open, a census and a
  comparison take about 3.5-4.5 times two bare listings, against 8 times
  with ``readlink``.

leakcheck's own descriptors never count: the directory listing's own
descriptor is closed by the time its entry is looked at (a descriptor
closed meanwhile is dropped), and the descriptors that leakcheck's modules
hold (a pidfd, a server's socket, the duplicate that describes a socket)
are marked with :func:`own_fd` and unmarked with :func:`release_fd`.

A descriptor that only a garbage cycle holds (an open file in a list that
holds itself) is closed by the object's finalizer when the cycle is
collected, so :meth:`FdKind.may_be_garbage` says yes for every descriptor:
the check collects once and judges again, and such a file is not reported
(Python itself emits its ``ResourceWarning``).  A file object that is still
referenced is reported.

On macOS ``/dev/fd`` lists every descriptor and ``fcntl(F_GETPATH)`` names a
file; sockets are read as on Linux and a pipe is named ``pipe:[st_ino]``.
That branch is best effort: its listing and census are tested on Linux over
``/proc/self/fd``, ``F_GETPATH`` is not tested at all, and a kernel that gives
pipes no inode numbers cannot tell a new pipe at an old number from the
old.  A ``/dev/fd`` that lists only the standard streams (FreeBSD without
fdescfs) is refused, as is a platform with neither directory:
:meth:`FdKind.check_supported` raises ``ValueError``.
"""

from __future__ import annotations

import os
import re
import stat
from typing import AbstractSet, Any, Dict, FrozenSet, Hashable, List, NamedTuple, Optional, Sequence, Set, Tuple

from ..records import Frame, shown
from .base import InfoRecord, JsonFields, Kind, TextFields

_PROC_FD = "/proc/self/fd"
"""The descriptor directory of Linux: one symlink per open descriptor."""
_DEV_FD = "/dev/fd"
"""The descriptor directory of macOS and the BSDs (complete on FreeBSD only with fdescfs)."""

_NOTHING: FrozenSet[Hashable] = frozenset()

_own: Set[int] = set()
_dev_fd_complete: Dict[str, bool] = {}
_listable: Set[str] = set()


def own_fd(fd: int) -> None:
    """Mark ``fd`` as one of leakcheck's own: no census counts it until :func:`release_fd`.

    For leakcheck's modules only (a process kind's pidfd, the stack server's
    and agent's sockets, a waiter's selector).  Call it right after opening
    the descriptor and :func:`release_fd` right before closing it: a number
    left marked would hide a user's descriptor that reuses it.
    """
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    if fd < 0:
        raise ValueError(f"fd must be >= 0, not {fd}")
    _own.add(fd)


def release_fd(fd: int) -> None:
    """Unmark ``fd`` (see :func:`own_fd`); unmarking a number not marked does nothing."""
    if not isinstance(fd, int) or isinstance(fd, bool):
        raise TypeError(f"fd must be an int, not {type(fd).__name__}")
    _own.discard(fd)


def is_own(fd: int) -> bool:
    """Whether ``fd`` is marked as leakcheck's own."""
    return fd in _own


class OpenFd(NamedTuple):
    """A descriptor as the census saw it: its number and the inode it was open on.

    Equal to (and hashed as) the plain census token ``(fd, dev, ino)``.
    """

    fd: int
    dev: int
    ino: int


def _listing_dir() -> str:
    """The directory that lists this process's descriptors; ``ValueError`` when there is none."""
    if os.path.isdir(_PROC_FD):
        return _PROC_FD
    if os.path.isdir(_DEV_FD):
        complete = _dev_fd_complete.get(_DEV_FD)
        if complete is None:
            complete = _dev_fd_complete[_DEV_FD] = _lists_every_fd(_DEV_FD)
        if complete:
            return _DEV_FD
        raise ValueError(
            f"fds=True cannot be checked on this platform: {_DEV_FD} lists only some descriptors "
            "(on FreeBSD, mount fdescfs on /dev/fd)"
        )
    raise ValueError(f"fds=True cannot be checked on this platform: neither {_PROC_FD} nor {_DEV_FD} exists")


def _lists_every_fd(directory: str) -> bool:
    # A /dev/fd without fdescfs lists 0, 1 and 2 only: check that it shows a descriptor above them.
    read_end, write_end = os.pipe()
    try:
        names = os.listdir(directory)
    except OSError:
        return False
    finally:
        os.close(read_end)
        os.close(write_end)
    return str(write_end) in names


# The standard streams are known by their number alone: redirecting one (pytest's output capture
# dup2()s a file onto 1 and 2, and back, around every test) opens nothing, and leaves no descriptor
# behind.  Opening one that was closed is still new.
_STANDARD_STREAMS = 3
_ANY = -1


def _census() -> Set[Tuple[int, int, int]]:
    names = os.listdir(_listing_dir())
    own = _own
    fstat = os.fstat
    tokens: Set[Tuple[int, int, int]] = set()
    for name in names:
        try:
            fd = int(name)
            if fd in own:
                continue
            # The listing's own descriptor is closed by now: EBADF drops it, as any descriptor closed meanwhile.
            found = fstat(fd)
        except (OSError, ValueError):
            continue
        if fd < _STANDARD_STREAMS:
            tokens.add((fd, _ANY, _ANY))
        else:
            tokens.add((fd, found.st_dev, found.st_ino))
    return tokens


def _identity(fd: int) -> Optional[Tuple[int, int, int]]:
    try:
        found = os.fstat(fd)
    except OSError:
        return None
    if fd < _STANDARD_STREAMS:
        return (fd, _ANY, _ANY)
    return (fd, found.st_dev, found.st_ino)


def _is_open(token: OpenFd) -> bool:
    return token.fd not in _own and _identity(token.fd) == token


# -- the record

_TYPES = ("file", "directory", "device", "socket", "pipe", "other")
_TARGET = "Target: "
_MODE = "Mode: "
_ADVICE = {
    "file": "close it before the block ends (`with open(...) as f:`, or f.close())",
    "socket": "close it before the block ends (`with socket.socket(...) as sock:`, or sock.close())",
    "pipe": "close both ends before the block ends (os.close(fd), or the pipe's file objects)",
}
_DEFAULT_ADVICE = "close it before the block ends (`with open(...) as f:`, sock.close(), os.close(fd))"


def fd_stack(target: str, mode: str) -> str:
    """A descriptor's detail lines: what it points to, and its access mode when it has one."""
    return f"  {_TARGET}{shown(target)}\n" + (f"  {_MODE}{shown(mode)}\n" if mode else "")


class FdInfo(InfoRecord):
    """An open file descriptor as it was when it was captured."""

    _compared = ("fd", "type", "target", "mode")
    __slots__ = (*_compared, "name", "frames", "stack")
    _shown = ("fd", "type", "target", "mode")
    kind = "file descriptor"
    plural = "file descriptors"
    header_word = "FD"
    # No free text in the header: a crafted path is only ever in the stack, behind its label and shown().
    HEADER = re.compile(rf"FD (?P<fd>\d+) \(type=(?P<type>{'|'.join(_TYPES)})\) \[open\]:")

    fd: int
    type: str
    """``"file"``, ``"directory"``, ``"device"``, ``"socket"``, ``"pipe"`` or ``"other"``."""
    target: str
    """What it points to: a path, ``"AF_INET 127.0.0.1:5000 -> 127.0.0.1:41234"``,
    ``"pipe:[123] (read end)"``, or the link text (``"anon_inode:[eventpoll]"``)."""
    mode: str
    """How a file or device is open: ``"r"``, ``"w"``, ``"r+"``, ``"a"``, ``"a+"`` or ``"path"``; else ``""``."""
    name: str
    """The target: what a report names it by, and what ``ignore_name`` matches (``"^/var/log/"``)."""
    frames: Tuple[Frame, ...]
    stack: str

    def __init__(self, fd: int, type: str, target: str, mode: str = "") -> None:
        if type not in _TYPES:
            raise ValueError(f"type must be one of {', '.join(_TYPES)}, not {type!r}")
        self._init(fd=fd, type=type, target=target, mode=mode, name=target, frames=(), stack=fd_stack(target, mode))

    @property
    def detail(self) -> str:
        return f"fd {self.fd}"

    @property
    def header(self) -> str:
        return f"FD {self.fd} (type={self.type}) [open]:"

    @property
    def advice(self) -> str:
        return _ADVICE.get(self.type, _DEFAULT_ADVICE)

    def sort_key(self) -> Tuple[Any, ...]:
        return (self.fd,)

    def to_json(self) -> Dict[str, Any]:
        return {"fd": self.fd, "type": self.type, "target": self.target, "mode": self.mode}

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> FdInfo:
        if frames:
            raise fields.error("a file descriptor has no stack frames")
        if not details or not details[0].startswith(_TARGET):
            raise fields.error("a file descriptor's first line is its 'Target: '")
        target = fields.text(details[0][len(_TARGET) :])
        mode = ""
        for detail in details[1:]:
            if not detail.startswith(_MODE) or mode:
                raise fields.error(f"a file descriptor has no line {detail[:80]!r}")
            mode = fields.text(detail[len(_MODE) :])
            if not mode:
                raise fields.error("a file descriptor's 'Mode: ' is not empty")
        return cls(fd=fields.integer(header["fd"], "fd"), type=header["type"], target=target, mode=mode)

    @classmethod
    def from_json(cls, fields: JsonFields) -> FdInfo:
        kind = fields.field("type", (str,))
        if kind not in _TYPES:
            raise fields.error(f"type must be one of {', '.join(_TYPES)}, not {kind[:80]!r}")
        return cls(
            fd=fields.field("fd", (int,)),
            type=kind,
            target=fields.field("target", (str,)),
            mode=fields.field("mode", (str,)),
        )


# -- describing a descriptor


def _type_of(mode: int) -> str:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISFIFO(mode):
        return "pipe"
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def _link(fd: int) -> Optional[str]:
    """What ``/proc/self/fd/N`` points to (Linux): a path, ``socket:[ino]``, ``pipe:[ino]``, ``anon_inode:[...]``."""
    try:
        return os.readlink(f"{_PROC_FD}/{fd}")
    except (OSError, ValueError):
        return None


def _path(fd: int) -> Optional[str]:
    """A file's path where the kernel says it: ``/proc/self/fd`` on Linux, ``F_GETPATH`` on macOS."""
    link = _link(fd)
    if link is not None:
        return link
    import fcntl

    request = getattr(fcntl, "F_GETPATH", None)
    if request is None:
        return None
    try:
        found = fcntl.fcntl(fd, request, bytes(1024))  # MAXPATHLEN on macOS
    except OSError:
        return None
    return os.fsdecode(found.split(b"\0", 1)[0])


def _flags(fd: int) -> Optional[int]:
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return None


def _access_mode(flags: Optional[int]) -> str:
    if flags is None:
        return ""
    if flags & getattr(os, "O_PATH", 0):
        return "path"
    access = flags & os.O_ACCMODE
    append = bool(flags & os.O_APPEND)
    if access == os.O_WRONLY:
        return "a" if append else "w"
    if access == os.O_RDWR:
        return "a+" if append else "r+"
    return "r"


def _address(address: Any) -> str:
    if isinstance(address, tuple) and len(address) == 2 and isinstance(address[0], str):
        return f"{address[0]}:{address[1]}"  # AF_INET
    if isinstance(address, tuple) and len(address) == 4 and isinstance(address[0], str):
        return f"[{address[0]}]:{address[1]}"  # AF_INET6
    if isinstance(address, bytes):
        address = os.fsdecode(address)
    if isinstance(address, str):  # AF_UNIX: a path, an abstract name (NUL first), or unnamed
        if not address:
            return "unnamed"
        return "@" + address[1:] if address.startswith("\0") else address
    return str(address)


def _socket_target(fd: int) -> Optional[str]:
    """The family and addresses of socket ``fd``, read through a duplicate (closing it never touches ``fd``)."""
    import socket

    try:
        duplicate = os.dup(fd)
    except OSError:
        return None
    own_fd(duplicate)  # a census in another thread must not count it
    try:
        try:
            sock = socket.socket(fileno=duplicate)
        except BaseException:
            os.close(duplicate)  # the socket did not take it
            raise
        with sock:
            family = getattr(sock.family, "name", str(sock.family))
            try:
                local = _address(sock.getsockname())
            except OSError:
                local = "?"
            text = f"{family} {local}"
            try:
                text += f" -> {_address(sock.getpeername())}"
            except OSError:
                try:
                    if sock.getsockopt(socket.SOL_SOCKET, getattr(socket, "SO_ACCEPTCONN", -1)):
                        text += " (listening)"
                except OSError:
                    pass
            kind = sock.type
            if kind != socket.SOCK_STREAM:
                text += f" ({getattr(kind, 'name', kind)})"
            return text
    except Exception:  # not a socket after all (the number reused), or a family Python cannot read
        return None
    finally:
        release_fd(duplicate)


def _describe(token: OpenFd) -> FdInfo:
    fd = token.fd
    try:
        found = os.fstat(fd)
    except OSError:
        found = None
    identity = (fd, _ANY, _ANY) if fd < _STANDARD_STREAMS else (fd, found.st_dev, found.st_ino) if found else None
    if found is None or identity != token:
        return FdInfo(fd=fd, type="other", target="closed before it could be described")
    kind = _type_of(found.st_mode)
    mode = ""
    if kind == "socket":
        target = _socket_target(fd) or _link(fd) or f"socket:[{found.st_ino}]"
    elif kind == "pipe":
        link = _link(fd) or f"pipe:[{found.st_ino}]"
        access = _access_mode(_flags(fd))
        end = {"r": "read end", "w": "write end", "a": "write end"}.get(access)
        target = f"{link} ({end})" if end else link
    elif kind in ("file", "directory", "device"):
        target = _path(fd) or f"inode {found.st_ino} on device {found.st_dev}"
        if kind != "directory":
            mode = _access_mode(_flags(fd))
    else:
        target = _link(fd) or f"st_mode=0o{found.st_mode:o}"
    if _identity(fd) != token:  # closed, and the number maybe reused, while it was being described
        return FdInfo(fd=fd, type="other", target="closed before it could be described")
    return FdInfo(fd=fd, type=kind, target=target, mode=mode)


# -- the kind


class FdKind(Kind):
    """Open file descriptors (``fds=True``): opt-in, without stacks."""

    name = "fds"
    info_type = FdInfo
    has_stacks = False

    def check_supported(self) -> None:
        directory = _listing_dir()
        if directory in _listable:
            return  # every check configures its kinds: list once, not every time
        try:
            os.listdir(directory)
        except OSError as error:  # a sandbox that hides the listing: say so now, not at the first census
            raise ValueError(f"fds=True cannot be checked here: cannot list {directory}: {error}") from None
        _listable.add(directory)

    def census(self) -> FrozenSet[Hashable]:
        return frozenset(_census())

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        now = _census()
        if isinstance(before, (frozenset, set)) and before.issuperset(now):
            return _NOTHING
        return now.difference(before)

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[OpenFd]:
        opened = (OpenFd(*token) for token in tokens if isinstance(token, tuple) and len(token) == 3)
        return sorted((token for token in opened if _is_open(token)), key=lambda token: token.fd)

    def identity(self, obj: Any) -> Optional[Hashable]:
        return tuple(obj)  # (fd, dev, ino): the same descriptor in every census

    def is_alive(self, obj: Any) -> bool:
        return isinstance(obj, tuple) and _is_open(OpenFd(*obj))

    def describe(self, objs: Sequence[Any]) -> List[FdInfo]:
        return [_describe(OpenFd(*obj)) for obj in objs]

    def may_be_garbage(self, obj: Any) -> bool:
        # Any descriptor may belong to a Python object (file, socket, selector, mmap) that only a garbage
        # cycle holds, and whose finalizer closes it when the cycle is collected.
        return True


KIND = FdKind()
