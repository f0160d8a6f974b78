"""A snapshot: the records of every captured kind at one moment.

Its text dump and JSON are in :mod:`leakcheck.reporting.dump`.  The records
by kind are held the same way here and in a :class:`~leakcheck.LeakReport`
(:class:`ByKindRecord`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, Mapping, Optional, Sequence, Tuple, Union

from ..kinds.base import InfoRecord
from ..kinds.registry import KIND_NAMES, kind
from ..records import _Record

if TYPE_CHECKING:
    from ..kinds.tasks import TaskInfo
    from ..kinds.threads import ThreadInfo

ByKind = Tuple[Tuple[str, Tuple[InfoRecord, ...]], ...]
"""Records grouped by kind name, in the registry's order: ``(("threads", (...)), ("tasks", (...)))``."""


def by_kind(
    given: Union[ByKind, Mapping[str, Sequence[InfoRecord]], None],
    threads: Optional[Sequence[InfoRecord]] = None,
    tasks: Optional[Sequence[InfoRecord]] = None,
) -> ByKind:
    """``given`` and the ``threads=``/``tasks=`` shorthands as :data:`ByKind`, in the registry's order.

    With neither ``given`` nor a shorthand, threads and tasks (none of either): what a record held before kinds.
    """
    merged: Dict[str, Tuple[InfoRecord, ...]] = {}
    if given is None:
        merged["threads"], merged["tasks"] = tuple(threads or ()), tuple(tasks or ())
    else:
        if threads is not None:
            merged["threads"] = tuple(threads)
        if tasks is not None:
            merged["tasks"] = tuple(tasks)
    for name, records in (given.items() if isinstance(given, Mapping) else given or ()):
        if name not in KIND_NAMES:
            raise ValueError(f"unknown kind {name!r}: the kinds are {', '.join(KIND_NAMES)}")
        merged[name] = tuple(records)
    for name, records in merged.items():
        if records:
            info_type = kind(name).info_type
            wrong = next((record for record in records if not isinstance(record, info_type)), None)
            if wrong is not None:
                raise TypeError(f"{name} holds {info_type.__name__} records, not {type(wrong).__name__}")
    return tuple((name, merged[name]) for name in KIND_NAMES if name in merged)


class ByKindRecord(_Record):
    """A record that holds :class:`InfoRecord`\\ s by kind, with an accessor by kind."""

    __slots__ = ()
    records: ByKind

    def of(self, kind: str) -> Tuple[InfoRecord, ...]:
        """The records of ``kind`` (a kind's name, e.g. ``"processes"``); ``()`` when there are none.

        ``ValueError`` for a name that is no kind.
        """
        for name, records in self.records:
            if name == kind:
                return records
        if kind not in KIND_NAMES:
            raise ValueError(f"unknown kind {kind!r}: the kinds are {', '.join(KIND_NAMES)}")
        return ()

    @property
    def kinds(self) -> Tuple[str, ...]:
        """The names of the kinds held, in the registry's order."""
        return tuple(name for name, _ in self.records)

    @property
    def threads(self) -> Tuple[ThreadInfo, ...]:
        return self.of("threads")  # type: ignore[return-value]

    @property
    def tasks(self) -> Tuple[TaskInfo, ...]:
        return self.of("tasks")  # type: ignore[return-value]


class Snapshot(ByKindRecord):
    """Every resource of the captured kinds at one moment, with their stacks.

    ``str(snapshot)`` is a dump in the spirit of Go's ``?debug=2`` goroutine
    dump: one block per thread, task or other resource, separated by blank
    lines.  ``snapshot.threads`` and ``snapshot.tasks`` are the threads and
    tasks; ``snapshot.of(kind)`` gives any kind's records.
    """

    _compared = ("records", "pid", "taken_at")
    __slots__ = (*_compared, "_census", "_tracked")
    _shown = _compared

    records: ByKind
    """The records of every captured kind, in the registry's order; see :meth:`of`."""
    pid: int
    taken_at: float
    """``time.time()`` when the snapshot was taken."""
    _census: object
    """Identity tokens for :func:`find_leaks`; only for snapshots taken live."""
    _tracked: object
    """Creation tracking held on while the snapshot lives, for :func:`find_leaks` (``track_creation=True``)."""

    def __init__(
        self,
        threads: Optional[Sequence[ThreadInfo]] = None,
        tasks: Optional[Sequence[TaskInfo]] = None,
        pid: int = 0,
        taken_at: float = 0.0,
        _census: object = None,
        *,
        records: Union[ByKind, Mapping[str, Sequence[InfoRecord]], None] = None,
        _tracked: object = None,
    ) -> None:
        """``records`` by kind; ``threads`` and ``tasks`` are shorthands for those two kinds.

        Without ``records``, the snapshot holds threads and tasks, as snapshots always did.
        """
        held = by_kind(records, threads, tasks)
        if not held:
            raise ValueError(f"a snapshot holds at least one kind: {', '.join(KIND_NAMES)}")
        self._init(records=held, pid=pid, taken_at=taken_at, _census=_census, _tracked=_tracked)

    def __str__(self) -> str:
        """The text dump; :func:`leakcheck.parse_dump` reads it back."""
        return self.dump()

    def dump(self, *, group: bool = False) -> str:
        """The text dump; ``group=True`` shows identical stacks once, with their count and each one's header line.

        :func:`leakcheck.parse_dump` reads either back to the same records.
        """
        from .dump import format_dump

        return format_dump(self, group=group)

    def to_json(self) -> str:
        """This snapshot as a JSON document; :meth:`from_json` reads it back."""
        from .dump import to_json

        return to_json(self)

    @classmethod
    def from_json(cls, text: Union[str, bytes]) -> Snapshot:
        """Read a snapshot written by :meth:`to_json`; ``ValueError`` says what is wrong with any other text."""
        from .dump import from_json

        return from_json(text)


