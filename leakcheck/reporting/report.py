"""Reporting: the leak report, its text, and the error and warning that carry it.

The text reads like a goroutine dump: a header with the counts and the time
waited, one summary line per leak naming the code to blame, then one block
per leak with its full stack.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ..kinds.base import InfoRecord, describe_block
from ..kinds.creation import site_summary
from ..kinds.frames import is_library_file
from ..kinds.stack_top import is_wrapper_frame, top_frame
from ..records import Frame, shown
from .snapshot import ByKind, ByKindRecord, by_kind

if TYPE_CHECKING:
    from ..kinds.tasks import TaskInfo
    from ..kinds.threads import ThreadInfo


def _is_library_frame(frame: Frame) -> bool:
    return is_library_file(frame.filename)


def culprit(info: InfoRecord) -> Optional[Frame]:
    """The frame to blame: the innermost one outside the standard library, leakcheck and
    test tools' wrappers; where there is none, the top function (see ``_stack_top``)."""
    for frame in reversed(info.frames):
        if not _is_library_frame(frame) and not is_wrapper_frame(frame):
            return frame
    return top_frame(info.frames)


def summary_line(info: InfoRecord) -> str:
    """``thread 'name' in function (file:line), created at function (file:line)``, every part escaped like the stacks.

    The creation part is there when tracking saw the resource start (see
    :func:`leakcheck.track_creation`), naming the frame the site marks.
    """
    return f"{info.kind} {shown_name(info.name)}{_where(info)}{site_summary(info.created)}"


def _where(info: InfoRecord) -> str:
    """`` in function (file:line)`` of the culprit frame; for a record without frames, its detail in brackets."""
    frame = culprit(info)
    if frame is not None:
        return f" in {shown(frame.function)} ({shown(frame.filename)}:{frame.lineno})"
    return f" ({shown(info.detail)})" if info.detail else ""


def shown_name(name: str) -> str:
    # repr() escapes line breaks and control characters; ascii() also escapes the rest of
    # what a terminal could be made to act on (bidirectional overrides, say).
    return ascii(name) if not name.isprintable() else repr(name)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


_GROUP_NAMES_SHOWN = 20
_HINTS_SHOWN = 5
# Names Python, asyncio and the OS give when the code gives none (an OS thread or a child is named
# after the interpreter): too generic to ignore by.
_DEFAULT_NAME = re.compile(
    r"(Thread|Dummy|Task|asyncio)-\d+( \(.*\))?|ThreadPoolExecutor-\d+_\d+|asyncio_\d+|python[\d.]*"
)


_REGEX_SPECIAL = re.compile(r"[.^$*+?{}\[\]\\|()]")  # re.escape() also escapes "-" and spaces, which read badly


def _groups(infos: Tuple[InfoRecord, ...]) -> List[List[InfoRecord]]:
    """Leaks with identical stacks and creation sites (and of one kind) together, in the order of their first member."""
    groups: Dict[Tuple[str, str, object], List[InfoRecord]] = {}
    for info in infos:
        groups.setdefault((info.kind, info.stack, info.created), []).append(info)
    return list(groups.values())


def _names(group: List[InfoRecord]) -> str:
    names = ", ".join(shown_name(info.name) for info in group[:_GROUP_NAMES_SHOWN])
    hidden = len(group) - _GROUP_NAMES_SHOWN
    return names + (f" and {hidden} more" if hidden > 0 else "")


def _summary(group: List[InfoRecord]) -> str:
    if len(group) == 1:
        return summary_line(group[0])
    first = group[0]
    where = _where(first) if first.frames else ""
    return f"{len(group)} {first.plural} {_names(group)}{where}{site_summary(first.created)}"


def _block(group: List[InfoRecord]) -> str:
    block = describe_block(group[0])
    if len(group) == 1:
        return block
    alike = "with this stack" if group[0].frames else "like this"
    return f"{len(group)} {group[0].plural} {alike}: {_names(group)}\n{block}"


def _matcher_for(info: InfoRecord) -> Tuple[str, str]:
    """The narrowest ignore rule for ``info``: its name when it has one of its own, else the code that
    started it (when tracking saw it start), else its top function."""
    top = top_frame(info.frames)
    creator = info.created.blamed if info.created is not None else None
    if (_DEFAULT_NAME.fullmatch(info.name) is None and info.name.isprintable()) or (top is None and creator is None):
        pattern = "^" + _REGEX_SPECIAL.sub(r"\\\g<0>", info.name) + "$"
        return f"ignore_name({pattern!r})", f"name:{shown(pattern)}"
    if creator is not None:
        return f"ignore_created_by({creator.function!r})", f"created:{shown(creator.function)}"
    assert top is not None
    return f"ignore_top_function({top.function!r})", f"top:{shown(top.function)}"


def _hint(group: List[InfoRecord], held_by: Dict[int, str]) -> str:
    info = group[0]
    who = f"{info.kind} {shown_name(info.name)}" if len(group) == 1 else f"the {len(group)} {info.plural} above"
    matcher, ini = _matcher_for(info)
    holder = held_by.get(getattr(info, "ident", None)) if info.kind == "thread" else None  # type: ignore[arg-type]
    if holder is not None:
        return (
            f"  * {who}: module global {shown(holder)} holds it, so it was started when its module was first\n"
            "    imported, and it fails whichever test imports that module first. Silence it once for the whole\n"
            "    run, in conftest.py:\n"
            f"        leakcheck.ignore_globally(leakcheck.{matcher})"
        )
    return (
        f"  * {who}: {info.advice}.\n"
        "    If it is meant to outlive the block, ignore it:\n"
        f"        no_leaks(ignore=[{matcher}])   or the marker's ignore=[...]\n"
        f"        leakcheck_ignore = {ini}   (pytest ini file)\n"
        f"        leakcheck.ignore_globally(leakcheck.{matcher})   (conftest.py: every check)"
    )


class LeakReport(ByKindRecord):
    """What one check found; falsy when nothing leaked.

    ``report.threads`` and ``report.tasks`` are the leaked threads and tasks;
    ``report.of(kind)`` gives any kind's leaks, ``report.leaks`` all of them.
    Holds only plain data, never a frame, thread or task, so keeping a report
    does not keep the leaked code's locals alive.
    """

    _compared = ("records", "forbidden", "forbid", "waited", "timeout", "held_by")
    __slots__ = _compared
    _shown = _compared[:-1]

    records: ByKind
    """The leaks of every kind that leaked, in the registry's order; see :meth:`of`."""
    forbidden: Tuple[InfoRecord, ...]
    """Live stacks matching a ``forbid`` keyword, leaked or not."""
    forbid: Tuple[str, ...]
    """The ``forbid`` keywords, as text, for the report."""
    waited: float
    """Seconds spent waiting for suspects to finish."""
    timeout: float
    held_by: Tuple[Tuple[int, str], ...]
    """``(ident, "module.global")`` for leaked threads that a module global holds: started at import."""

    def __init__(
        self,
        threads: Optional[Sequence[ThreadInfo]] = None,
        tasks: Optional[Sequence[TaskInfo]] = None,
        forbidden: Tuple[InfoRecord, ...] = (),
        forbid: Tuple[str, ...] = (),
        waited: float = 0.0,
        timeout: float = 0.0,
        held_by: Tuple[Tuple[int, str], ...] = (),
        *,
        records: Union[ByKind, Mapping[str, Sequence[InfoRecord]], None] = None,
    ) -> None:
        """``records`` by kind; ``threads`` and ``tasks`` are shorthands for those two kinds."""
        self._init(
            records=by_kind(records if records is not None else {}, threads, tasks),
            forbidden=forbidden,
            forbid=forbid,
            waited=waited,
            timeout=timeout,
            held_by=held_by,
        )

    def __bool__(self) -> bool:
        return bool(self.forbidden) or any(records for _, records in self.records)

    @property
    def leaks(self) -> Tuple[InfoRecord, ...]:
        """Every leak, by kind in the registry's order: threads first, then tasks, then the others."""
        return tuple(info for _, records in self.records for info in records)

    def __str__(self) -> str:
        if not self:
            return "leakcheck: no leaks"
        counts = [
            f"{len(records)} leaked {records[0].kind if len(records) == 1 else records[0].plural}"
            for _, records in self.records
            if records
        ]
        if self.forbidden:
            counts.append(_plural(len(self.forbidden), "stack") + f" matching {', '.join(self.forbid)}")
        groups = _groups(self.leaks)
        lines = [f"leakcheck: {', '.join(counts)} (waited {self.waited:.2f}s of a {self.timeout:.2f}s grace period)"]
        lines.extend(f"  - {_summary(group)}" for group in groups)
        lines.extend(f"  - forbidden: {summary_line(info)}" for info in self.forbidden)
        blocks = [_block(group) for group in groups]
        leaks = self.leaks
        blocks.extend(describe_block(info) for info in self.forbidden if info not in leaks)
        text = "\n".join(lines) + "\n\n" + "\n".join(blocks)
        if groups:
            held_by = dict(self.held_by)
            hints = [_hint(group, held_by) for group in groups[:_HINTS_SHOWN]]
            if len(groups) > _HINTS_SHOWN:
                hints.append(f"  * and {len(groups) - _HINTS_SHOWN} more: the same, for each")
            text += "\nWhat to do:\n" + "\n".join(hints) + "\n"
        return text


class LeakError(AssertionError):
    """Raised when a check finds leaks; ``str()`` of it is the report."""

    __module__ = "leakcheck"  # tracebacks say leakcheck.LeakError, where it is imported from (pickle too)

    def __init__(self, report: LeakReport) -> None:
        super().__init__(str(report))
        self.report = report

    def __reduce__(self) -> Tuple[type, Tuple[LeakReport]]:
        return (type(self), (self.report,))


class LeakWarning(Warning):
    """Emitted instead of :class:`LeakError` with ``on_leak="warn"``."""

    __module__ = "leakcheck"  # warnings and -W filters say leakcheck.LeakWarning (pickle too)

    def __init__(self, report: LeakReport) -> None:
        super().__init__(str(report))
        self.report = report

    def __reduce__(self) -> Tuple[type, Tuple[LeakReport]]:
        return (type(self), (self.report,))
