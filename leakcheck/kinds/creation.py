"""Creation sites: where a resource was started.

While tracking is on (:mod:`leakcheck.kinds.tracking`), each kind's hooks
call :func:`record` the moment a thread, task or process starts.  The
record is cheap, and keeps no frame:

- the creation stack as code objects and bytecode offsets, from the call
  that started the resource outwards, up to a few frames past the first one
  outside the standard library and leakcheck (the *marked* frame: the code
  to blame); lines and names are looked up only when a report needs them;
- the *owner*: the checked block the starting code ran in
  (:mod:`leakcheck.kinds.ownership`).
"""

from __future__ import annotations

import sys
from types import CodeType
from typing import Any, Dict, List, Optional, Set, Tuple

from ..records import Frame, _Record, format_frames, shown
from .frames import code_frame, is_hidden, is_library_file, safely
from .ownership import Owner, current_owner

_BEYOND_MARKED = 2
"""Frames kept past the marked one: who called it, and who called that.  Each frame walked costs about a
microsecond (a frame object is made for it, on 3.11+), and tracking pays it for every task it sees made."""
_MOST_FRAMES = 32


class CreationSite(_Record):
    """Where a resource was started: the creation stack, outermost frame first, and the frame to blame."""

    _compared = ("frames", "marked")
    __slots__ = _compared
    _shown = _compared

    frames: Tuple[Frame, ...]
    """The stack of the call that started the resource, outermost first (the innermost is the call itself)."""
    marked: Optional[int]
    """The index in ``frames`` of the innermost frame outside the standard library and leakcheck, if any."""

    def __init__(self, frames: Tuple[Frame, ...], marked: Optional[int]) -> None:
        if not frames:
            raise ValueError("a creation site has at least one frame: the call that started the resource")
        if marked is not None and not 0 <= marked < len(frames):
            raise ValueError(f"a creation site of {len(frames)} frames cannot mark frame {marked}")
        self._init(frames=frames, marked=marked)

    @property
    def blamed(self) -> Optional[Frame]:
        """The marked frame: the code that started the resource."""
        return self.frames[self.marked] if self.marked is not None else None

    @property
    def text(self) -> str:
        """The lines a dump block gives it, after the stack: see :data:`CREATED_HEADING`."""
        lines = [f"  {CREATED_HEADING}\n"]
        for index, frame in enumerate(self.frames):
            text = format_frames((frame,))
            # Two more spaces for every line; the marked frame's first line starts with "  > ".
            lead = f"  {MARK}" if index == self.marked else "    "
            first, _, rest = text.partition("\n")
            lines.append(f"{lead}{first[2:]}\n")
            if rest:
                lines.append(f"  {rest}")
        return "".join(lines)

    def to_json(self) -> Dict[str, Any]:
        return {"frames": [frame._asdict() for frame in self.frames], "marked": self.marked}


CREATED_HEADING = "Created at (most recent call last):"
"""The line that starts a creation site in a dump block, after the stack and its details."""
MARK = "> "
"""What the marked frame's line starts with, where other frames have two spaces."""


class Created(Tuple[Any, ...]):
    """What a tracking hook records when a resource starts: its raw creation stack, the marked frame, its owner.

    A tuple (``(frames, marked, owner)``): made for every thread, task and
    process started while tracking is on, it must cost as little as can be.
    """

    __slots__ = ()

    @property
    def owner(self) -> Optional[Owner]:
        """The block that started it, or ``None``: nobody's."""
        return self[2]  # type: ignore[no-any-return]

    def site(self) -> CreationSite:
        """The creation site, with its lines and names looked up now."""
        raw, marked = self[0], self[1]  # code, offset, module name, for each frame, innermost first: one flat tuple
        count = len(raw) // 3
        frames = tuple(code_frame(*raw[3 * index : 3 * index + 3]) for index in reversed(range(count)))
        return CreationSite(frames, count - 1 - marked if marked >= 0 else None)  # outermost first


_USER, _LIBRARY, _BOUNDARY, _HIDDEN = 0, 1, 2, 3
_Role = Tuple[int, Optional[str], CodeType]
_code_roles: Dict[int, _Role] = {}
"""What each code object seen in a creation stack is, with the name of its module, by ``id()`` (the code is kept,
so the id stays its own): hashing a code object hashes its whole contents, every time."""
_RUNNER_MODULES = ("_pytest.", "pluggy.", "unittest.")
"""Test runners: a creation stack stops where the runner called the test, whose frames say nothing more."""
_boundaries: Set[CodeType] = set()


def add_boundary(code: CodeType) -> None:
    """Stop creation stacks at frames running ``code``: where a thread or an event loop's callback begins."""
    _boundaries.add(code)
    _code_roles.pop(id(code), None)


def _classify(code: CodeType, namespace: Dict[str, Any]) -> _Role:
    if len(_code_roles) >= 4096:  # a bound, for code made at run time (exec, lambdas in loops)
        _code_roles.clear()
    module = namespace.get("__name__")
    module = module if isinstance(module, str) else None
    if is_hidden(code):
        role = _HIDDEN
    elif code in _boundaries or (module is not None and module.startswith(_RUNNER_MODULES)):
        role = _BOUNDARY
    else:
        role = _LIBRARY if safely(lambda: is_library_file(code.co_filename), False) else _USER
    entry = _code_roles[id(code)] = (role, module, code)
    return entry


def record(depth: int = 1) -> Optional[Created]:
    """What started a resource, called by a tracking hook: ``depth`` frames up is the call that started it.

    Keeps code objects, offsets and module names, never a frame.  ``None``
    if that cannot be done: tracking must never make starting a thread fail.
    Runs for every thread, task and process started while tracking is on:
    one dictionary lookup per frame, for at most a few frames.
    """
    try:
        frame: Any = sys._getframe(depth + 1)
        roles = _code_roles
        kept: List[Any] = []  # flat, and made one tuple: each object the collector tracks costs every check
        count = 0
        marked = -1
        while frame is not None:
            code = frame.f_code
            entry = roles.get(id(code))
            if entry is None or entry[2] is not code:
                entry = _classify(code, frame.f_globals)
            role = entry[0]
            if role == _HIDDEN:  # another hook of ours, around the one recording (a pool's submit)
                frame = frame.f_back
                continue
            if role == _BOUNDARY and kept:
                break
            kept += (code, frame.f_lasti, entry[1])
            count += 1
            if marked < 0:
                if role == _USER:
                    marked = count - 1
            elif count - 1 - marked >= _BEYOND_MARKED:
                break
            if count >= _MOST_FRAMES:
                break
            frame = frame.f_back
        del frame
        return Created((tuple(kept), marked, current_owner()))
    except Exception:
        return None


def site_text(site: Optional[CreationSite]) -> str:
    return site.text if site is not None else ""


def site_summary(site: Optional[CreationSite]) -> str:
    """``, created at function (file:line)`` of the marked frame, for a report's summary line."""
    frame = site.blamed if site is not None else None
    if frame is None:
        return ""
    return f", created at {shown(frame.function)} ({shown(frame.filename)}:{frame.lineno})"


