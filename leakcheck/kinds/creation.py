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

_BEYOND_MARKED = 1
"""Frames kept past the marked one: its caller, which names the code behind a helper that starts things.  Each
frame walked costs about a microsecond on 3.14, and tracking pays it for every task it sees made."""
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
    """What a tracking hook records when a resource starts: its owner, and its raw creation stack.

    One flat tuple, made for every thread, task and process started while
    tracking is on, so it must cost as little as can be: the owner, the
    number of the marked frame (innermost first; ``-1``: none), then two
    items a frame, innermost first: its role entry ``(role, module, code)``
    and its bytecode offset.
    """

    __slots__ = ()

    @property
    def owner(self) -> Optional[Owner]:
        """The block that started it, or ``None``: nobody's."""
        return self[0]  # type: ignore[no-any-return]

    def site(self) -> CreationSite:
        """The creation site, with its lines and names looked up now."""
        marked: int = self[1]
        count = (len(self) - 2) // 2
        frames = tuple(
            code_frame(self[2 + 2 * index][2], self[3 + 2 * index], self[2 + 2 * index][1])
            for index in reversed(range(count))
        )
        return CreationSite(frames, count - 1 - marked if marked >= 0 else None)  # outermost first


_USER, _LIBRARY, _BOUNDARY, _HIDDEN = 0, 1, 2, 3
_Role = Tuple[int, Optional[str], CodeType]
_getframe = sys._getframe
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
        frame: Any = _getframe(depth + 1)
        roles = _code_roles
        # Made one tuple, flat: each object the collector tracks costs every check.  After the owner and the
        # marked frame's number, two items a frame: its cached role entry (which holds the code and the module
        # name) and its bytecode offset.
        kept: List[Any] = [None, -1]
        count = 0
        marked = -1
        left = _MOST_FRAMES
        while frame is not None:
            code = frame.f_code
            entry = roles.get(id(code))  # an entry holds its code, so no other code can have that id meanwhile
            if entry is None:
                entry = _classify(code, frame.f_globals)
            role = entry[0]
            if role != _USER:
                if role == _HIDDEN:  # another hook of ours, around the one recording (a pool's submit)
                    frame = frame.f_back
                    continue
                if role == _BOUNDARY and count:
                    break
            elif marked < 0:
                marked = count
                if left > _BEYOND_MARKED + 1:
                    left = _BEYOND_MARKED + 1
            kept.append(entry)
            kept.append(frame.f_lasti)
            count += 1
            left -= 1
            if not left:
                break
            frame = frame.f_back
        del frame
        kept[0] = current_owner()
        kept[1] = marked
        return Created(kept)
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


