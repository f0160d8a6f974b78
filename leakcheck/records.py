"""The data leakcheck hands out: frames, thread and task descriptions, snapshots.

Everything here is plain immutable data.  Nothing holds a frame, a thread or a
task, so a report can be kept for as long as anyone likes without pinning the
locals of the code it describes.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar, Dict, NamedTuple, Optional, Tuple, Type, TypeVar, Union

_R = TypeVar("_R", bound="_Record")


def _rebuild(cls: Type[_R], fields: Dict[str, Any]) -> _R:
    return cls(**fields)


class _Record:
    """Immutable plain data, compared, hashed and shown by its fields.

    Written out rather than made frozen dataclasses: creating a dataclass
    costs about a millisecond, and the pytest plugin imports these classes
    in every run, checked or not.  Subclasses list their fields in
    ``__slots__`` and set them with ``_init``.
    """

    __slots__: ClassVar[Tuple[str, ...]] = ()
    _compared: ClassVar[Tuple[str, ...]] = ()
    """The fields that equality and the hash use."""
    _shown: ClassVar[Tuple[str, ...]] = ()
    """The fields that ``repr()`` shows."""

    def _init(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def _key(self) -> Tuple[Any, ...]:
        return tuple([getattr(self, name) for name in self._compared])

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._shown)
        return f"{self.__class__.__qualname__}({shown})"

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"{self.__class__.__name__} is immutable: cannot assign to {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{self.__class__.__name__} is immutable: cannot delete {name!r}")

    def __reduce__(self) -> Tuple[Any, ...]:
        # The compared fields only: a live Snapshot's identity tokens are weak references.
        return _rebuild, (self.__class__, {name: getattr(self, name) for name in self._compared})


class Frame(NamedTuple):
    """One line of a stack, innermost frames come last in a stack."""

    filename: str
    lineno: int
    function: str
    """The module-qualified name, e.g. ``"socketserver.BaseServer.serve_forever"``."""
    line: str
    """The stripped source line, or ``""`` when the source is not available."""


def _plain(text: str, forbidden: str) -> bool:
    # isprintable() is False for every line break, tab and control character, and for most spaces but " ".
    return bool(text) and text.isprintable() and text[0] not in " \\" and text[-1] != " " and forbidden not in text


def shown(text: str, forbidden: str = "\n") -> str:
    """``text`` as a stack or header shows it: as it is when plain, else a backslash and its string literal.

    Plain text is printable, has no surrounding spaces, does not start with
    a backslash and does not hold ``forbidden``.  Anything else (a crafted
    function name with a line break in it, say) could pass for more frames
    or another block, so it is written escaped and :func:`parse_dump` reads
    it back exactly.
    """
    return text if _plain(text, forbidden) else _escaped(text)


def _escaped(text: str) -> str:
    return "\\" + repr(text)


def format_frames(frames: Tuple[Frame, ...]) -> str:
    """Render frames the way a traceback does, innermost last; odd names are escaped (see :func:`shown`)."""
    return "".join(map(_frame_text, frames))


@functools.lru_cache(maxsize=4096)
def _frame_text(frame: Frame) -> str:
    # Cached: the same frames recur in every thread of a pool and in every snapshot, and checking
    # that each name is plain costs three times as much as formatting the line.
    filename = f'"{frame.filename}"' if _plain(frame.filename, '"') else _escaped(frame.filename)
    text = f"  File {filename}, line {frame.lineno}, in {shown(frame.function)}\n"
    return f"{text}    {shown(frame.line)}\n" if frame.line else text


class ThreadInfo(_Record):
    """A thread as it was when it was captured."""

    _compared = ("ident", "native_id", "name", "daemon", "frames", "stack")
    __slots__ = _compared
    _shown = ("ident", "native_id", "name", "daemon")
    kind = "thread"

    ident: int
    native_id: Optional[int]
    name: str
    daemon: bool
    frames: Tuple[Frame, ...]
    stack: str
    """Traceback-style text, innermost frame last."""

    def __init__(
        self, ident: int, native_id: Optional[int], name: str, daemon: bool, frames: Tuple[Frame, ...], stack: str
    ) -> None:
        self._init(ident=ident, native_id=native_id, name=name, daemon=daemon, frames=frames, stack=stack)

    @property
    def state(self) -> str:
        # Python cannot tell a blocked thread from a busy one, and a thread with
        # no Python frame yet is still in its bootstrap.
        return "running" if self.frames else "starting"

    @property
    def header(self) -> str:
        """The dump line that introduces this thread's stack."""
        return (
            f"Thread {self.name!r} (ident={self.ident}, native_id={self.native_id}, "
            f"daemon={self.daemon}) [{self.state}]:"
        )


class TaskInfo(_Record):
    """An asyncio task as it was when it was captured."""

    _compared = ("id", "name", "coro", "state", "thread_ident", "frames", "awaiting", "stack")
    __slots__ = _compared
    _shown = ("id", "name", "coro", "state", "thread_ident")
    kind = "task"

    id: int
    """``id()`` of the task object, stable for as long as the task lives."""
    name: str
    coro: str
    """The qualified name of the task's coroutine."""
    state: str
    """``"pending"``, ``"cancelling"`` or ``"done"``."""
    thread_ident: Optional[int]
    """The thread running the task's event loop, when known."""
    frames: Tuple[Frame, ...]
    awaiting: str
    """What the innermost coroutine waits on, e.g. ``"Future"``, or ``""``."""
    stack: str

    def __init__(
        self,
        id: int,
        name: str,
        coro: str,
        state: str,
        thread_ident: Optional[int],
        frames: Tuple[Frame, ...],
        awaiting: str,
        stack: str,
    ) -> None:
        self._init(
            id=id,
            name=name,
            coro=coro,
            state=state,
            thread_ident=thread_ident,
            frames=frames,
            awaiting=awaiting,
            stack=stack,
        )

    @property
    def header(self) -> str:
        """The dump line that introduces this task's stack.

        A coroutine is shown plain only without a comma, a state only without
        ``]``: crafted text in either can never pass for another field.
        """
        loop = "loop=not running" if self.thread_ident is None else f"loop_thread={self.thread_ident}"
        return (
            f"Task {self.name!r} (id=0x{self.id:x}, coro={shown(self.coro, ',')}, {loop}) "
            f"[{shown(self.state, ']')}]:"
        )


Info = Union[ThreadInfo, TaskInfo]
"""What ignore matchers and stack patterns are applied to."""


def task_stack(frames: Tuple[Frame, ...], awaiting: str) -> str:
    """A task's stack text: its frames, then what the innermost coroutine awaits, if known."""
    return format_frames(frames) + (f"  Awaiting {shown(awaiting)}\n" if awaiting else "")


def describe_block(info: Info) -> str:
    """One dump block: the header line followed by the stack."""
    return f"{info.header}\n{info.stack}"


class Snapshot(_Record):
    """Every thread and task of the process at one moment, with their stacks.

    ``str(snapshot)`` is a dump in the spirit of Go's ``?debug=2`` goroutine
    dump: one block per thread or task, separated by blank lines.
    """

    _compared = ("threads", "tasks", "pid", "taken_at")
    __slots__ = (*_compared, "_census")
    _shown = _compared

    threads: Tuple[ThreadInfo, ...]
    tasks: Tuple[TaskInfo, ...]
    pid: int
    taken_at: float
    """``time.time()`` when the snapshot was taken."""
    _census: object
    """Identity tokens for :func:`find_leaks`; only for snapshots taken live."""

    def __init__(
        self,
        threads: Tuple[ThreadInfo, ...],
        tasks: Tuple[TaskInfo, ...],
        pid: int,
        taken_at: float,
        _census: object = None,
    ) -> None:
        self._init(threads=threads, tasks=tasks, pid=pid, taken_at=taken_at, _census=_census)

    def __str__(self) -> str:
        """The text dump; :func:`leakcheck.parse_dump` reads it back."""
        from .reporting.dump import format_dump

        return format_dump(self)

    def to_json(self) -> str:
        """This snapshot as a JSON document; :meth:`from_json` reads it back."""
        from .reporting.dump import to_json

        return to_json(self)

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> Snapshot:
        """Read a snapshot written by :meth:`to_json`; ``ValueError`` says what is wrong with any other text."""
        from .reporting.dump import from_json

        return from_json(text)
