"""What a kind of resource is: the contract every module in :mod:`leakcheck.kinds` fulfils.

A kind owns everything about its resource, and nothing outside its module
names it:

- a cheap *census* of identity tokens (no stacks), taken when a window
  opens and again when it closes;
- the *live objects* behind new tokens, and whether each is still alive;
- their *description*: an :class:`InfoRecord` with a name, maybe a stack,
  a dump header, JSON fields and the advice a report gives;
- how to *wait* for them to end, returning the moment they have.

The engine (:mod:`leakcheck.engine.compare`), the report, the dump and the
options work over the registered kinds (:mod:`leakcheck.kinds.registry`)
only through this interface.
"""

from __future__ import annotations

import re
import time
from typing import (
    TYPE_CHECKING,
    AbstractSet,
    Any,
    ClassVar,
    Dict,
    Hashable,
    List,
    Optional,
    Protocol,
    Sequence,
    Tuple,
    Type,
    TypeVar,
)

from ..records import Frame, _fields_of, _rebuild, _Record

if TYPE_CHECKING:
    from .creation import Created, CreationSite

_FIRST_POLL = 0.001
_POLL_CAP = 0.02

Census = Dict[str, AbstractSet[Hashable]]
"""Census tokens per kind name."""

_I = TypeVar("_I", bound="InfoRecord")


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


class TextFields(Protocol):
    """What a kind's text parser gets from :func:`leakcheck.parse_dump` to read its header fields."""

    def integer(self, digits: str, what: str, base: int = 10) -> int:
        """``digits`` as an int of a snapshot (at most 20 digits, 2**64 - 1), else a ValueError naming ``what``."""

    def optional_integer(self, digits: Optional[str], what: str) -> Optional[int]:
        """As :meth:`integer`, with ``None`` (or the text ``"None"``) read as ``None``."""

    def text(self, field: str) -> str:
        """A field as :func:`leakcheck.records.shown` wrote it, back as the text it stands for."""

    def name(self, literal: str) -> str:
        """A name written as a Python string literal (``repr()``)."""

    def error(self, message: str) -> ValueError:
        """A ValueError about the block's header line."""


class JsonFields(Protocol):
    """What a kind's JSON reader gets from :meth:`Snapshot.from_json` for one record."""

    def field(self, key: str, types: Tuple[type, ...], signed: bool = False) -> Any:
        """``record[key]`` if it is one of ``types``; an int is 0..2**64-1 (signed: also negative)."""

    def frames(self) -> Tuple[Frame, ...]:
        """The record's ``"frames"`` list."""

    def error(self, message: str) -> ValueError:
        """A ValueError about this record."""


class InfoRecord(_Record):
    """The description of one resource, as plain immutable data.

    Every kind's record has a ``name``, ``frames`` (empty for a resource
    without a stack) and ``stack``: the text below its dump header, frames
    in traceback style, then detail lines such as ``  Awaiting Future`` or
    ``  Command: sleep 60``, each two spaces in and ``Label value``.

    ``created`` is where the resource was started, when tracking saw it
    (:mod:`leakcheck.kinds.creation`); a kind's own code never sets it.
    """

    __slots__ = ("created",)
    kind: ClassVar[str] = ""
    """The report's noun, e.g. ``"thread"``."""
    plural: ClassVar[str] = ""
    """The plural noun, e.g. ``"threads"``; also the kind's option name where they agree."""
    header_word: ClassVar[str] = ""
    """The first word of its dump header, e.g. ``"Thread"``: how :func:`parse_dump` tells kinds apart."""
    HEADER: ClassVar[re.Pattern[str]]
    """The full header line, with named groups for :meth:`from_text`."""

    name: str
    frames: Tuple[Frame, ...]
    stack: str
    created: Optional[CreationSite]
    """Where the resource was started, if tracking saw it; see :func:`leakcheck.track_creation`."""

    def _init(self, **fields: Any) -> None:
        fields.setdefault("created", None)
        super()._init(**fields)

    def _key(self) -> Tuple[Any, ...]:
        return (*super()._key(), self.created)

    def with_created(self: _I, created: Optional[CreationSite]) -> _I:
        """This record with its creation site set to ``created``."""
        fields = {name: getattr(self, name) for name in _fields_of(type(self))}
        fields["created"] = created
        return _rebuild(type(self), fields)

    @property
    def header(self) -> str:
        """The dump line that introduces this record's stack."""
        raise NotImplementedError

    @property
    def detail(self) -> str:
        """What a report's summary line adds when the record has no frame to blame: ``"pid 1234: sleep 60"``."""
        return ""

    @property
    def advice(self) -> str:
        """What a report tells the user to do about this leak, as one sentence without a full stop."""
        raise NotImplementedError

    def sort_key(self) -> Tuple[Any, ...]:
        """The order of a report's leaks of this kind."""
        return (self.name,)

    def to_json(self) -> Dict[str, Any]:
        """This record's JSON fields; ``frames`` and ``stack`` included where it has them."""
        raise NotImplementedError

    @classmethod
    def from_text(
        cls: Type[_I], header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> _I:
        """The record a dump block stands for: its matched header, frames and detail lines (without the two spaces)."""
        raise NotImplementedError

    @classmethod
    def from_json(cls: Type[_I], fields: JsonFields) -> _I:
        raise NotImplementedError


def describe_block(info: InfoRecord) -> str:
    """One dump block: the header line, the stack, and the creation site if known."""
    created = info.created
    return f"{info.header}\n{info.stack}{created.text if created is not None else ''}"


def live_block(info: InfoRecord) -> str:
    """The header line and the stack: what the resource is doing now, which stack keywords search."""
    return f"{info.header}\n{info.stack}"


class Kind:
    """One kind of resource.  Subclasses set the class attributes and override the census methods.

    The methods with a default here are the ones most kinds do not need.
    """

    name: str = ""
    """The option that turns it on (``no_leaks(processes=True)``), its key in dumps, JSON and reports."""
    info_type: Type[InfoRecord] = InfoRecord
    has_stacks: bool = False
    """Whether ``forbid=`` and the keyword assertions look at its stacks."""

    # -- the option

    def configure(self, value: object) -> Optional[Kind]:
        """The kind to check for the validated option ``value``, or ``None`` when it is off.

        A flag kind is itself when ``True``.  A kind whose option carries
        values (``probes=[...]``) returns a kind bound to them.  Raises
        ``TypeError``/``ValueError`` for a bad value, and ``ValueError`` when
        it cannot be checked on this platform.
        """
        if not isinstance(value, bool):
            raise TypeError(f"{self.name} must be True or False, not {value!r}")
        if value:
            self.check_supported()
        return self if value else None

    def check_supported(self) -> None:
        """Raise ``ValueError`` saying why this kind cannot be checked here, if it cannot."""

    # -- the census

    def census(self) -> AbstractSet[Hashable]:
        """Identity tokens of every live resource; cheap: no stacks, no description."""
        raise NotImplementedError

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        """Tokens of live resources not in ``before`` (a :meth:`census`); as cheap."""
        return self.census() - before

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        """The live objects behind ``tokens``; ended ones are dropped."""
        raise NotImplementedError

    def live(self) -> List[Any]:
        """Every live object of this kind (for snapshots and stack assertions)."""
        return self.resolve(self.census())

    def is_alive(self, obj: Any) -> bool:
        raise NotImplementedError

    def alive_among(self, objs: Sequence[Any]) -> List[Any]:
        """Those of ``objs`` still alive, in order; a kind that lists all of its resources at once does it once."""
        return [obj for obj in objs if self.is_alive(obj)]

    def describe(self, objs: Sequence[Any]) -> Sequence[InfoRecord]:
        """Records, in the order of ``objs``; never raises for a resource that ended meanwhile."""
        raise NotImplementedError

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        """Block until every one of ``objs`` has ended or ``deadline`` passed; return the moment they have.

        Must work from any thread.  Objects that cannot end while the caller
        blocks (a task on the caller's own loop) are skipped, not polled.

        This default is for resources that nothing announces the end of (a
        closed descriptor, a returned connection): it looks again after 1 ms,
        then at doubling intervals up to 20 ms.  A kind that can be told when
        its resources end (joining a thread, a pidfd) does better.
        """
        pending = list(objs)
        delay = _FIRST_POLL
        while pending:
            pending = self.alive_among(pending)
            left = deadline - time.monotonic()
            if not pending or left <= 0:
                return
            time.sleep(min(delay, left))
            delay = min(delay * 2, _POLL_CAP)

    # -- what only some kinds need

    def identity(self, obj: Any) -> Optional[Hashable]:
        """What makes ``obj`` the same resource in every census: a value such as ``(pid, start time)``.

        ``None`` (the default) means the object itself: it lives as long as
        the resource (a ``Thread``, a ``Task``) and is remembered by a weak
        reference, or, where it has none, by its value.  Each leak is
        reported by one check only, whichever objects later censuses make.
        """
        return None

    def is_exempt(self, obj: Any) -> bool:
        """Whether ``obj`` is the checking code itself (its thread or task): never its own check's leak."""
        return False

    def runs_on(self, obj: Any, loop: Any) -> bool:
        """Whether ``obj`` is an asyncio awaitable of ``loop``: ``async`` checks await those on their own loop."""
        return False

    def may_be_garbage(self, obj: Any) -> bool:
        """Whether collecting garbage could end ``obj`` (a task on a closed loop, a file in a cycle).

        If any leaked object says yes, the check collects once and judges again.
        """
        return False

    def extra_ignores(self, suspects: Sequence[Any]) -> Tuple[List[Any], bool]:
        """Matchers the kind adds for these suspects, and whether they call for polling.

        Polling is for a suspect that never ends but turns ignorable (a busy
        pool worker turning idle); any other suspect is simply waited for.
        """
        return [], False

    def held_by(self, objs: Sequence[Any]) -> Tuple[Tuple[int, str], ...]:
        """``(ident, "module.global")`` for objects a module global holds: started when it was imported."""
        return ()

    def cancel(self, objs: Sequence[Any]) -> bool:
        """Ask ``objs`` to end (``cancel_tasks=True``); whether it did ask anything."""
        return False

    # -- creation tracking (see leakcheck.kinds.tracking)

    def track(self, on: bool) -> None:
        """Install (``on``) or remove this kind's creation hooks; removing restores exactly what was there.

        A kind whose resources start in ways nothing can hook (descriptors)
        does nothing.
        """

    def creation(self, obj: Any) -> Optional[Created]:
        """What tracking recorded when ``obj`` was started, if it saw it start."""
        return None
