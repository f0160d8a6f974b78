"""Reporting: the leak report, its text, and the error and warning that carry it.

The text reads like a goroutine dump: a header with the counts and the time
waited, one summary line per leak naming the code to blame, then one block
per leak with its full stack.
"""

from __future__ import annotations

import os
from functools import lru_cache
from typing import Optional, Tuple

from ._model import Frame, Info, TaskInfo, ThreadInfo, _Record, describe_block


@lru_cache(maxsize=1)
def _library_dirs() -> Tuple[str, ...]:
    import sysconfig  # only when a report is built: it costs more to import than the rest of leakcheck

    paths = sysconfig.get_paths()
    dirs = {os.path.normcase(os.path.realpath(paths[key])) for key in ("stdlib", "platstdlib") if key in paths}
    dirs.add(os.path.normcase(os.path.dirname(os.path.realpath(__file__))))
    return tuple(d + os.sep for d in dirs)


def _is_library_frame(frame: Frame) -> bool:
    filename = os.path.normcase(os.path.realpath(frame.filename)) if os.path.isabs(frame.filename) else ""
    if not filename:  # <frozen ...>, <string> and friends
        return frame.filename.startswith("<frozen")
    return filename.startswith(_library_dirs()) and "site-packages" not in filename


def culprit(info: Info) -> Optional[Frame]:
    """The frame to blame: the innermost one outside the standard library."""
    for frame in reversed(info.frames):
        if not _is_library_frame(frame):
            return frame
    return info.frames[-1] if info.frames else None


def summary_line(info: Info) -> str:
    frame = culprit(info)
    where = f" in {frame.function} ({frame.filename}:{frame.lineno})" if frame else ""
    return f"{info.kind} {info.name!r}{where}"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


class LeakReport(_Record):
    """What one check found; falsy when nothing leaked.

    Holds only plain data, never a frame, thread or task, so keeping a report
    does not keep the leaked code's locals alive.
    """

    _compared = ("threads", "tasks", "forbidden", "forbid", "waited", "timeout")
    __slots__ = _compared
    _shown = _compared

    threads: Tuple[ThreadInfo, ...]
    tasks: Tuple[TaskInfo, ...]
    forbidden: Tuple[Info, ...]
    """Live stacks matching a ``forbid`` keyword, leaked or not."""
    forbid: Tuple[str, ...]
    """The ``forbid`` keywords, as text, for the report."""
    waited: float
    """Seconds spent waiting for suspects to finish."""
    timeout: float

    def __init__(
        self,
        threads: Tuple[ThreadInfo, ...] = (),
        tasks: Tuple[TaskInfo, ...] = (),
        forbidden: Tuple[Info, ...] = (),
        forbid: Tuple[str, ...] = (),
        waited: float = 0.0,
        timeout: float = 0.0,
    ) -> None:
        self._init(threads=threads, tasks=tasks, forbidden=forbidden, forbid=forbid, waited=waited, timeout=timeout)

    def __bool__(self) -> bool:
        return bool(self.threads or self.tasks or self.forbidden)

    @property
    def leaks(self) -> Tuple[Info, ...]:
        """Every leaked thread and task, threads first."""
        return (*self.threads, *self.tasks)

    def __str__(self) -> str:
        if not self:
            return "leakcheck: no leaks"
        counts = []
        if self.threads:
            counts.append(_plural(len(self.threads), "leaked thread"))
        if self.tasks:
            counts.append(_plural(len(self.tasks), "leaked task"))
        if self.forbidden:
            counts.append(_plural(len(self.forbidden), "stack") + f" matching {', '.join(self.forbid)}")
        lines = [f"leakcheck: {', '.join(counts)} (waited {self.waited:.2f}s of a {self.timeout:.2f}s grace period)"]
        lines.extend(f"  - {summary_line(info)}" for info in self.leaks)
        lines.extend(f"  - forbidden: {summary_line(info)}" for info in self.forbidden)
        blocks = [describe_block(info) for info in self.leaks]
        blocks.extend(describe_block(info) for info in self.forbidden if info not in self.leaks)
        return "\n".join(lines) + "\n\n" + "\n".join(blocks)


class LeakError(AssertionError):
    """Raised when a check finds leaks; ``str()`` of it is the report."""

    def __init__(self, report: LeakReport) -> None:
        super().__init__(str(report))
        self.report = report

    def __reduce__(self) -> Tuple[type, Tuple[LeakReport]]:
        return (type(self), (self.report,))


class LeakWarning(Warning):
    """Emitted instead of :class:`LeakError` with ``on_leak="warn"``."""

    def __init__(self, report: LeakReport) -> None:
        super().__init__(str(report))
        self.report = report

    def __reduce__(self) -> Tuple[type, Tuple[LeakReport]]:
        return (type(self), (self.report,))
