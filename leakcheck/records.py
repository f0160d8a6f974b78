"""The plain data every kind's records are made of: frames, immutable records, and the escaping of text.

Each kind's own record (a thread's, a task's) lives in its module in :mod:`leakcheck.kinds`.

Everything here is plain immutable data.  Nothing holds a frame, a thread or a
task, so a report can be kept for as long as anyone likes without pinning the
locals of the code it describes.
"""

from __future__ import annotations

import functools
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Dict,
    NamedTuple,
    Tuple,
    Type,
    TypeVar,
)

if TYPE_CHECKING:
    pass

_R = TypeVar("_R", bound="_Record")


def _rebuild(cls: Type[_R], fields: Dict[str, Any]) -> _R:
    """A record with exactly these fields, as pickled: no constructor runs, so none has to take them all."""
    record = cls.__new__(cls)
    for name, value in fields.items():
        object.__setattr__(record, name, value)
    for name in _fields_of(cls):
        if name not in fields:  # a private field pickling leaves out (a live Snapshot's census)
            object.__setattr__(record, name, None)
    return record


def _fields_of(cls: type) -> Tuple[str, ...]:
    """Every slot of ``cls`` and its bases."""
    names: Dict[str, None] = {}
    for klass in reversed(cls.__mro__):
        slots = vars(klass).get("__slots__", ())
        names.update((name, None) for name in ((slots,) if isinstance(slots, str) else slots))
    return tuple(names)


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
        # Every public field; not the private ones: a live Snapshot's identity tokens are weak references.
        fields = {name: getattr(self, name) for name in _fields_of(self.__class__) if not name.startswith("_")}
        return _rebuild, (self.__class__, fields)


class Frame(NamedTuple):
    """One line of a stack, innermost frames come last in a stack."""

    filename: str
    lineno: int
    function: str
    """The module-qualified name, e.g. ``"socketserver.BaseServer.serve_forever"``."""
    line: str
    """The stripped source line, or ``""`` when the source is not available."""


# A Python string literal, as repr() writes it.  Written as runs of plain characters between escapes,
# never as a repeated alternative: the regex engine then keeps no state per character, and a literal
# that never closes is given up in one pass.
LITERAL = r"'[^'\\]*(?:\\.[^'\\]*)*'" r'|"[^"\\]*(?:\\.[^"\\]*)*"'
"""A regex for a name in a dump header (a ``repr()`` literal); kinds build their ``HEADER`` from it."""
ESCAPED = rf"\\(?:{LITERAL})"
"""A regex for text that :func:`shown` escaped: a backslash and a string literal."""


def shown_field(group: str, end: str) -> str:
    """A regex group for a header field written with ``shown(text, end)``, which the character ``end`` follows."""
    return rf"(?P<{group}>{ESCAPED}|[^{end}\\][^{end}]*)"


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
