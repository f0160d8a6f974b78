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
from typing import Any, Dict, List, Optional, Tuple

from ..records import Frame, _Record, format_frames, shown
from .frames import HIDDEN_CODES, code_frame, is_library_file, safely
from .ownership import Owner, current_owner

_BEYOND_MARKED = 6
"""Frames kept past the marked one: enough to see who called it, without a test runner's whole stack."""
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


class Created:
    """What a tracking hook records when a resource starts: its raw creation stack and its owner."""

    __slots__ = ("_raw", "_site", "owner")

    def __init__(self, raw: Tuple[Any, ...], owner: Optional[Owner]) -> None:
        self._raw = raw  # code, offset, module name, marked?, for each frame, innermost first
        self._site: Optional[CreationSite] = None
        self.owner = owner

    def site(self) -> CreationSite:
        """The creation site, formatted on first use."""
        if self._site is None:
            raw = self._raw
            frames: List[Frame] = []
            marked: Optional[int] = None
            for index in range(len(raw) - 4, -4, -4):  # outermost first
                code, offset, module, is_marked = raw[index : index + 4]
                if is_marked:
                    marked = len(frames)
                frames.append(code_frame(code, offset, module))
            self._site = CreationSite(tuple(frames), marked)
        return self._site


_USER, _LIBRARY, _BOUNDARY = 0, 1, 2
_code_roles: Dict[CodeType, int] = {}
_RUNNER_MODULES = ("_pytest.", "pluggy.", "unittest.")
"""Test runners: a creation stack stops where the runner called the test, whose frames say nothing more."""


def add_boundary(code: CodeType) -> None:
    """Stop creation stacks at frames running ``code``: where a thread or an event loop's callback begins."""
    _code_roles[code] = _BOUNDARY


def _role(code: CodeType, module: object) -> int:
    role = _code_roles.get(code)
    if role is None:
        if len(_code_roles) >= 4096:  # a bound, for code made at run time (exec, lambdas in loops)
            boundaries = {known: role for known, role in _code_roles.items() if role == _BOUNDARY}
            _code_roles.clear()
            _code_roles.update(boundaries)
        if isinstance(module, str) and module.startswith(_RUNNER_MODULES):
            role = _BOUNDARY
        else:
            role = _LIBRARY if safely(lambda: is_library_file(code.co_filename), False) else _USER
        _code_roles[code] = role
    return role


def record(depth: int = 1) -> Optional[Created]:
    """What started a resource, called by a tracking hook: ``depth`` frames up is the call that started it.

    Keeps code objects, offsets and module names, never a frame.  ``None``
    if that cannot be done: tracking must never make starting a thread fail.
    """
    try:
        return _record(depth + 1)
    except Exception:
        return None


def _record(depth: int) -> Created:
    frame: Any = sys._getframe(depth + 1)
    raw: List[Any] = []
    left = _MOST_FRAMES
    beyond = -1  # frames still kept past the marked one; -1 until it is found
    while frame is not None and left and beyond:
        code = frame.f_code
        if code in HIDDEN_CODES:  # another hook of ours, around the one recording (a pool's submit)
            frame = frame.f_back
            continue
        module = frame.f_globals.get("__name__")
        role = _role(code, module)
        if role == _BOUNDARY and raw:
            break
        is_marked = beyond < 0 and role == _USER
        if is_marked:
            beyond = _BEYOND_MARKED
        elif beyond > 0:
            beyond -= 1
        raw += (code, frame.f_lasti, module, is_marked)
        frame = frame.f_back
        left -= 1
    del frame
    return Created(tuple(raw), current_owner())


def site_text(site: Optional[CreationSite]) -> str:
    return site.text if site is not None else ""


def site_summary(site: Optional[CreationSite]) -> str:
    """``, created at function (file:line)`` of the marked frame, for a report's summary line."""
    frame = site.blamed if site is not None else None
    if frame is None:
        return ""
    return f", created at {shown(frame.function)} ({shown(frame.filename)}:{frame.lineno})"


