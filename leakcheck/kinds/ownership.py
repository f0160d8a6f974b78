"""Ownership: which checked block the running code, and what it starts, belongs to.

While tracking is on, each block is an :class:`Owner`, and every resource
records the owner of the code that started it (:mod:`leakcheck.kinds.creation`).
A check then blames only what its block answers for.  The owner of running
code is, in order:

1. the block its context says (a contextvar, which tasks inherit), unless a
   block opened later in this thread, outside a running event loop, lies
   inside it, or that block has closed (a test runner's loop keeps the
   context it was made in, which names an earlier test);
2. else the newest block still open in this thread, outside an event loop;
3. else the owner of the thread itself (threads inherit no context before
   3.14), as the threads kind tells through :func:`add_owner_source`;
4. else the default owner: a test run's shared owner, or nobody.

Resources that vanish without ending (a pending task collected as garbage)
are kept here too, with their owner, until a check of a block that answers
for them takes them.
"""

from __future__ import annotations

import contextvars
import itertools
import sys
import threading
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, List, NamedTuple, Optional, Sequence, Tuple

from .frames import hide_code

if TYPE_CHECKING:
    from .creation import Created

_LOST_KEPT = 1024


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


_owner: contextvars.ContextVar[Optional[Owner]] = contextvars.ContextVar("leakcheck_owner", default=None)
_owner_sources: List[Callable[[], Optional[Owner]]] = []
_UNKNOWN: Any = object()


class _ThreadState:
    """Per thread: the blocks open in it (opened outside a running event loop), and the thread's own owner."""

    __slots__ = ("blocks", "inherited", "job")

    def __init__(self) -> None:
        self.blocks: List[Owner] = []
        self.inherited: Any = _UNKNOWN
        """The owner of the thread itself, once looked up: it never changes while the thread runs."""
        self.job: Optional[Owner] = None
        """The owner of the job the thread runs for another (:func:`run_owned_by`), while it runs."""


_threads = threading.local()
"""Holds each thread's :class:`_ThreadState` as ``state``: one read of a thread-local attribute costs as much as
the rest of :func:`current_owner`, which runs for every task and thread started while tracking is on."""


def _here() -> _ThreadState:
    try:
        return _threads.state  # type: ignore[no-any-return]
    except AttributeError:
        state = _threads.state = _ThreadState()
        return state


def add_owner_source(source: Callable[[], Optional[Owner]]) -> None:
    """Let ``source`` say whose the running code is when no block does (a tracked thread's owner)."""
    if source not in _owner_sources:
        _owner_sources.append(source)


def remove_owner_source(source: Callable[[], Optional[Owner]]) -> None:
    if source in _owner_sources:
        _owner_sources.remove(source)


def current_owner() -> Optional[Owner]:
    """The block that owns what the running code starts now (see the module docstring)."""
    owner = _owner.get()
    try:
        here: _ThreadState = _threads.state
    except AttributeError:
        here = _here()
    blocks = here.blocks
    if blocks:
        if owner is None and _task_owner is not None:
            # A task whose context predates every block: it is the block's if the block made it (a test
            # runner's task), and not if it was made outside every block (a server's task).
            known, task_owner = _task_owner()
            if known:
                return task_owner if task_owner is not None else _default_owner
        newest = blocks[-1]
        if owner is None or not owner.open or owner.holds(newest):
            return newest
    if owner is not None and owner.open:
        return owner
    # The context names no block still open: a job's own owner, worked out where it was submitted, says
    # better (asyncio.to_thread runs the job in the context of the task, which a reused asyncio.Runner
    # keeps from the block that made it).  Else the closed block: what its resources start is still its.
    job = here.job
    if job is not None:
        return job
    if owner is not None:
        return owner
    inherited = here.inherited
    if inherited is _UNKNOWN:
        inherited = here.inherited = _inherited_owner()
    return inherited if inherited is not None else _default_owner


_task_owner: Optional[Callable[[], Tuple[bool, Optional[Owner]]]] = None


def set_task_owner(source: Optional[Callable[[], Tuple[bool, Optional[Owner]]]]) -> None:
    """Let ``source`` say whether the running task was seen made, and by which block (the tasks kind)."""
    global _task_owner
    _task_owner = source


def _inherited_owner() -> Optional[Owner]:
    for source in _owner_sources:
        found = source()
        if found is not None:
            return found
    return None


_default_owner: Optional[Owner] = None


def set_default_owner(owner: Optional[Owner]) -> Optional[Owner]:
    """The owner of what starts outside every block (a shared one: a test run), or ``None``: nobody's.

    Returns the one it replaces, to be put back (a test run inside a test run).
    """
    global _default_owner
    previous, _default_owner = _default_owner, owner
    return previous


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
    owner = NOBODY if owner is None else owner
    here = _here()
    outer, here.job = here.job, owner
    token = _owner.set(owner)
    try:
        return function(*args, **kwargs)
    finally:
        here.job = outer
        try:
            _owner.reset(token)
        except (ValueError, RuntimeError):  # the function switched contexts under us; leave it be
            pass


hide_code(run_owned_by.__code__)


class Scope(NamedTuple):
    """An open block's ownership: its :class:`Owner`, and what to put back when it closes."""

    owner: Owner
    previous: Optional[Owner]
    """What the context that opened it said before."""
    blocks: Optional[List[Owner]]
    """The thread's list of open blocks it was added to, if any."""


def _loop_running() -> bool:
    events = sys.modules.get("asyncio.events")
    if events is None:
        return False
    try:
        return events._get_running_loop() is not None
    except Exception:  # asyncio half torn down at exit
        return False


def open_scope() -> Scope:
    """Open a block: what the calling context starts from now on, and what that starts, is its own."""
    parent = current_owner()
    # Never inside a shared owner: else, while shared code runs in a block's thread, the block's
    # newer-and-inside rule would take what the shared code starts for the block's own.
    owner = Owner(None if parent is None or parent.shared or parent is NOBODY else parent)
    previous = _owner.get()
    _owner.set(owner)
    # A block in a coroutine owns only what its task (and the tasks it makes) start: other tasks on
    # the loop run in this thread too.  Elsewhere, the thread's code is the block's, whatever its context.
    blocks = None if _loop_running() else _here().blocks
    if blocks is not None:
        blocks.append(owner)
    return Scope(owner, previous, blocks)


def close_scope(scope: Scope, here: bool = True) -> None:
    """Close the block: it owns nothing started from now on.

    ``here``: called from the context that opened it, whose owner goes back
    to what it was; else (a finalizer, on any thread) the context is left as
    it is, and names a closed block.
    """
    owner = scope.owner
    owner.open = False
    if here and _owner.get() is owner:
        # What the context said before, unless that has closed since (blocks closed out of order): then the
        # nearest block still open around it.  Never a closed block, which would own all the context starts.
        previous = scope.previous
        while previous is not None and not previous.open and not previous.shared and previous is not NOBODY:
            previous = previous.parent
        _owner.set(previous)
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
    """Note that a tracked resource of ``kind`` vanished without ending; ``info`` describes it.

    Takes no lock: a finalizer calls it, on whatever thread collected the
    garbage, maybe inside :func:`take_lost`.  Numbering and appending are
    each one atomic step.
    """
    global _last_lost
    number = next(_lost_numbers)
    _lost.append(Lost(kind, created, info, number))
    _last_lost = max(_last_lost, number)


def lost_mark() -> int:
    """A mark to pass to :func:`take_lost`: what vanishes after it."""
    return _last_lost


def lost_since(mark: int) -> bool:
    """Whether anything vanished since ``mark``, whoever owned it (cheap)."""
    return _last_lost > mark


def take_lost(mark: int, owner: Optional[Owner], kinds: Sequence[str]) -> List[Lost]:
    """What of ``kinds`` vanished since ``mark`` that ``owner`` answers for (``None``: no block's); once each."""
    if _last_lost <= mark:
        return []
    with _lost_lock:  # among takers only: report_lost() never waits for it
        taken = [lost for lost in list(_lost) if lost.number > mark and lost.kind in kinds and _takes(owner, lost)]
        for lost in taken:
            try:
                _lost.remove(lost)
            except ValueError:  # pushed out of the bounded log meanwhile
                pass
    return taken


def _takes(owner: Optional[Owner], lost: Lost) -> bool:
    # A check that is no block (find_leaks) takes only what no block answers for.
    lost_owner = lost.created.owner
    if owner is None:
        return lost_owner is None or lost_owner.shared or lost_owner is NOBODY
    return owner.answers_for(lost_owner)


