"""Creation sites and ownership: where a resource was started, and which checked block it belongs to.

While tracking is on (:mod:`leakcheck.kinds.tracking`), each kind's hooks
call :func:`record` the moment a thread, task or process starts.  The
record is cheap, and keeps no frame:

- the creation stack as code objects and bytecode offsets, from the call
  that started the resource outwards, up to a few frames past the first one
  outside the standard library and leakcheck (the *marked* frame: the code
  to blame); lines and names are looked up only when a report needs them;
- the *owner*: the checked block the starting code ran in.

Ownership follows the code, not the clock.  A block owns what is started
inside it, and what that starts in turn, even after its parent has ended.
The owner of running code is, in order:

1. the block its context says (a contextvar, which tasks inherit), unless a
   block opened later in this thread, outside a running event loop, lies
   inside it, or that block has closed (a test runner's loop keeps the
   context it was made in, which names an earlier test);
2. else the newest block still open in this thread, outside an event loop;
3. else the owner of the thread itself (threads inherit no context before
   3.14), as the threads kind tells through :func:`add_owner_source`.
"""

from __future__ import annotations

import contextvars
import itertools
import sys
import threading
from collections import deque
from types import CodeType
from typing import Any, Callable, Deque, Dict, List, NamedTuple, Optional, Sequence, Tuple

from ..records import Frame, _Record, format_frames, shown
from .frames import HIDDEN_CODES, code_frame, is_library_file, safely

_BEYOND_MARKED = 6
"""Frames kept past the marked one: enough to see who called it, without a test runner's whole stack."""
_MOST_FRAMES = 32
_LOST_KEPT = 1024


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


class Owner:
    """One checked block: it owns what is started inside it, and what that starts in turn.

    A *shared* owner is no block but infrastructure that every block may
    answer for, as without tracking: a test run's session fixtures, whose
    server thread starts a handler thread for the request of whichever test
    is running.
    """

    __slots__ = ("open", "parent", "shared")

    def __init__(self, parent: Optional[Owner], shared: bool = False) -> None:
        self.parent = parent
        self.open = True
        self.shared = shared

    def holds(self, owner: Optional[Owner]) -> bool:
        """Whether ``owner`` is this block or one opened inside it."""
        while owner is not None:
            if owner is self:
                return True
            owner = owner.parent
        return False

    def answers_for(self, owner: Optional[Owner]) -> bool:
        """Whether a check of this block blames what was started with ``owner``: its own, or shared."""
        return owner is not None and (owner.shared or self.holds(owner))


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


# -- ownership

_owner: contextvars.ContextVar[Optional[Owner]] = contextvars.ContextVar("leakcheck_owner", default=None)
_opened = threading.local()  # .blocks: the blocks open in this thread, opened outside a running event loop
_owner_sources: List[Callable[[], Optional[Owner]]] = []


def add_owner_source(source: Callable[[], Optional[Owner]]) -> None:
    """Let ``source`` say whose the running code is when no block does (a tracked thread's owner)."""
    if source not in _owner_sources:
        _owner_sources.append(source)


def remove_owner_source(source: Callable[[], Optional[Owner]]) -> None:
    if source in _owner_sources:
        _owner_sources.remove(source)


def _blocks_here() -> List[Owner]:
    blocks: Optional[List[Owner]] = getattr(_opened, "blocks", None)
    if blocks is None:
        blocks = _opened.blocks = []
    return blocks


def current_owner() -> Optional[Owner]:
    """The block that owns what the running code starts now (see the module docstring)."""
    owner = _owner.get()
    blocks: Optional[List[Owner]] = getattr(_opened, "blocks", None)
    newest = blocks[-1] if blocks else None
    if newest is not None and (owner is None or not owner.open or owner.holds(newest)):
        return newest
    if owner is not None:
        return owner
    for source in _owner_sources:
        found = source()
        if found is not None:
            return found
    return _default_owner


_default_owner: Optional[Owner] = None


def set_default_owner(owner: Optional[Owner]) -> None:
    """The owner of what starts outside every block (a shared one: a test run), or ``None``: nobody's."""
    global _default_owner
    _default_owner = owner


def enter_owner(owner: Owner) -> contextvars.Token[Optional[Owner]]:
    """Make ``owner`` the owner of what the calling context starts, until :func:`exit_owner` (a fixture's setup)."""
    return _owner.set(owner)


def exit_owner(token: contextvars.Token[Optional[Owner]]) -> None:
    try:
        _owner.reset(token)
    except (ValueError, RuntimeError):  # a fixture set up in another context than it ended in
        pass


NOBODY = Owner(None)
"""The owner of code that runs for nobody's block, where its thread's own owner would otherwise apply."""
NOBODY.open = False


def run_owned_by(owner: Optional[Owner], function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call ``function`` with ``owner`` (``None``: nobody) as the owner of what it starts: a job in a pool's thread."""
    token = _owner.set(NOBODY if owner is None else owner)
    try:
        return function(*args, **kwargs)
    finally:
        try:
            _owner.reset(token)
        except (ValueError, RuntimeError):  # the function switched contexts under us; leave it be
            pass


HIDDEN_CODES.add(run_owned_by.__code__)


class Scope(NamedTuple):
    """An open block's ownership: its :class:`Owner` and how to close it."""

    owner: Owner
    token: contextvars.Token[Optional[Owner]]
    blocks: Optional[List[Owner]]
    """The thread's list of open blocks it was added to, if any."""


def _loop_running() -> bool:
    events = sys.modules.get("asyncio.events")
    return events is not None and safely(lambda: events._get_running_loop() is not None, False)


def open_scope() -> Scope:
    """Open a block: what the calling context starts from now on, and what that starts, is its own."""
    parent = current_owner()
    # Never inside a shared owner: else, while shared code runs in a block's thread, the block's
    # newer-and-inside rule would take what the shared code starts for the block's own.
    owner = Owner(None if parent is None or parent.shared or parent is NOBODY else parent)
    token = _owner.set(owner)
    # A block in a coroutine owns only what its task (and the tasks it makes) start: other tasks on
    # the loop run in this thread too.  Elsewhere, the thread's code is the block's, whatever its context.
    blocks = None if _loop_running() else _blocks_here()
    if blocks is not None:
        blocks.append(owner)
    return Scope(owner, token, blocks)


def close_scope(scope: Scope, here: bool = True) -> None:
    """Close the block: it owns nothing started from now on.

    ``here``: called from the context that opened it, whose owner goes back
    to what it was; else (a finalizer, on any thread) the context is left as
    it is, and names a closed block.
    """
    owner = scope.owner
    owner.open = False
    if here:
        try:
            _owner.reset(scope.token)
        except (ValueError, RuntimeError):  # closed in another context, or twice
            if _owner.get() is owner:
                _owner.set(owner.parent)
    if scope.blocks is not None:
        try:
            scope.blocks.remove(owner)
        except ValueError:
            pass


# -- resources that vanished without ending (a pending task collected as garbage)


class Lost(NamedTuple):
    kind: str
    created: Created
    info: Any
    """The resource's record, as it was when it vanished."""
    number: int


_lost: Deque[Lost] = deque(maxlen=_LOST_KEPT)
_lost_numbers = itertools.count(1)
_lost_lock = threading.Lock()
_last_lost = 0


def report_lost(kind: str, created: Created, info: Any) -> None:
    """Note that a tracked resource of ``kind`` vanished without ending; ``info`` describes it."""
    global _last_lost
    with _lost_lock:
        _last_lost = next(_lost_numbers)
        _lost.append(Lost(kind, created, info, _last_lost))


def lost_mark() -> int:
    """A mark to pass to :func:`take_lost`: what vanishes after it."""
    return _last_lost


def lost_since(mark: int) -> bool:
    """Whether anything vanished since ``mark``, whoever owned it (cheap)."""
    return _last_lost > mark


def take_lost(mark: int, owner: Optional[Owner], kinds: Sequence[str]) -> List[Lost]:
    """The resources of ``kinds`` that vanished since ``mark``, owned by ``owner`` (any, for ``None``); once each."""
    if _last_lost <= mark:
        return []
    with _lost_lock:
        taken = [
            lost
            for lost in _lost
            if lost.number > mark and lost.kind in kinds and (owner is None or owner.answers_for(lost.created.owner))
        ]
        for lost in taken:
            _lost.remove(lost)
    return taken


def site_text(site: Optional[CreationSite]) -> str:
    return site.text if site is not None else ""


def site_summary(site: Optional[CreationSite]) -> str:
    """``, created at function (file:line)`` of the marked frame, for a report's summary line."""
    frame = site.blamed if site is not None else None
    if frame is None:
        return ""
    return f", created at {shown(frame.function)} ({shown(frame.filename)}:{frame.lineno})"


# -- hooks


_MISSING = object()


class Patch:
    """One attribute that tracking replaces with a hook, and puts back exactly.

    ``hook(original)`` makes the replacement, which must call ``original``
    and record nothing once :attr:`active` is false: someone may have
    wrapped it in turn, and their wrapper outlives tracking.
    """

    __slots__ = ("_hook", "_original", "_own", "_replacement", "active", "name", "target")

    def __init__(self, target: Any, name: str, hook: Callable[[Any, Patch], Any]) -> None:
        self.target = target
        self.name = name
        self._hook = hook
        self._original: Any = _MISSING
        self._replacement: Any = _MISSING
        self._own = False
        self.active = False

    def apply(self) -> None:
        """Put the hook in place (nothing, where the attribute does not exist here)."""
        current = getattr(self.target, self.name, _MISSING)
        if current is _MISSING:
            return
        if current is not self._replacement:
            self._own = self.name in vars(self.target)
            self._original = current
            self._replacement = self._hook(current, self)
            hook_code = getattr(self._replacement, "__code__", None)
            if hook_code is not None:  # a creation stack shows the user's call, not the hook around it
                HIDDEN_CODES.add(hook_code)
            setattr(self.target, self.name, self._replacement)
        self.active = True

    def undo(self) -> None:
        """Put the original back, unless someone replaced the hook meanwhile (then it only stops recording)."""
        self.active = False
        if self._replacement is _MISSING or getattr(self.target, self.name, _MISSING) is not self._replacement:
            return
        if self._own:
            setattr(self.target, self.name, self._original)
        else:  # it came from a base class: the class had none of its own
            delattr(self.target, self.name)
        self._replacement = _MISSING
