"""Capture of OS threads that ``threading`` does not know: ``_thread`` threads and C extensions' threads.

``os_threads=True`` reports the threads of the process that have no
``threading.Thread`` object (not even a ``_DummyThread``): threads started
with ``_thread.start_new_thread``, and threads a C extension started.  The
threads that ``threading`` owns belong to the ``threads`` kind and never
show here, nor does the main thread.

Two lists, paired.  The kernel lists every thread of the process in
``/proc/self/task``, by TID (the ``native_id``).  Python lists the threads
that run Python code in ``sys._current_frames()``, by ident (the value of
``pthread_self()``).  A ``threading.Thread`` knows both, so those are set
aside; what remains is TIDs and idents without a ``Thread`` object.  A
``_thread`` thread is in both lists and is reported once: as a Python
thread, with its frames and, when it is found, its TID.  A TID that no
ident pairs with is a native thread (no Python frames), reported with its
OS thread name (``/proc/self/task/TID/comm``).

How idents are paired with TIDs, in order:

1. Exactly, from memory.  An ident is the address of the thread's C library
   descriptor (glibc's ``struct pthread``, musl's too), which holds the
   thread's TID.  Where in it is found once, by looking for the known TIDs of
   the threads whose ident is known too (the calling thread and every
   ``threading.Thread``) in the first 2 KiB of their descriptors: the one
   offset where all of them hold their TID (720 on x86-64 glibc).  Then
   pairing one ident costs one 4-byte read of ``/proc/self/mem``, which never
   faults (an unmapped address is an ``OSError``), and a TID read this way
   counts only if it is a live thread of this process.  This pairs every
   Python thread, whatever it is doing.
2. From the stack, where ``/proc/self/mem`` cannot be read.  glibc places a
   thread's descriptor just above its stack, so a thread blocked in a system
   call (``/proc/self/task/TID/syscall`` ends with its stack pointer) pairs
   with the nearest ident above its stack pointer, if that ident lies in the
   same mapping (``/proc/self/maps``), within 1 MiB, and no other thread's
   stack pointer lies between.  A thread running outside a system call shows
   no stack pointer and is not paired this way.  (``stat``'s ``kstkesp`` is
   0 on current kernels, so it is not used.)
3. By counting.  Every Python thread has a TID.  So when no Python thread
   is left unpaired, every unpaired TID is native; when exactly one of each
   is left in the whole process, or exactly one of each is new since the
   baseline, they are the same thread.
4. Otherwise the unpaired new Python threads are reported with their
   frames and ``native_id=None``, and the unpaired new TIDs are not
   reported beside them: any of them may be one of those Python threads,
   and reporting both would count a thread twice.  Native threads hidden
   this way show in a later check, once the Python ones are fixed; the
   check fails either way.  Unpaired new TIDs with no unpaired new Python
   thread are native threads.

Identity.  A thread's token is ``("tid", tid, starttime)`` (field 22 of
``/proc/self/task/TID/stat``), which a reused TID does not share.  A
Python thread also gives ``("ident", ident)``; it only matters for a Python
thread that could not be paired (rule 4), where a new thread reusing the
ident of one that ended since the baseline cannot be told from it (it then
counts as the native thread behind its new TID).  A Python thread is
reported if its TID is new, so one thread with two new tokens is one leak.

Waiting.  A ``_thread`` thread cannot be joined and a native one cannot be
waited for from Python, so :meth:`OsThreadKind.wait` looks again after
1 ms, then at doubling intervals up to 20 ms, until they are gone.

Limits.  Linux only (``/proc/self/task``); elsewhere
:meth:`OsThreadKind.check_supported` raises ``ValueError``.  A thread pool
that a C extension starts on first use (a BLAS library's, say) is a leak of
the block that first used it.  A ``threading.Thread`` in its first or last
microseconds (before ``threading`` records its TID, or after its Python
code ended) can show as a native thread; it is gone before the grace
period ends.  Pairing by stack (rule 2) assumes glibc's layout.
"""

from __future__ import annotations

import bisect
import functools
import os
import re
import sys
import threading
from types import CodeType, FrameType
from typing import (
    AbstractSet,
    Any,
    Dict,
    FrozenSet,
    Hashable,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
)

from ..records import LITERAL, Frame, format_frames
from .base import InfoRecord, JsonFields, Kind, TextFields
from .creation import Created
from .frames import safely, thread_frames
from .threads import live_threads, started_by

_TASKS = "/proc/self/task"
"""Where the kernel lists this process's threads; tests point it elsewhere."""
_MEMORY = "/proc/self/mem"
_MAPS = "/proc/self/maps"

_SELF_MODULES = ("leakcheck.",)
_DESCRIPTOR_SCAN = 2048
_KNOWN_PAIRS = 8
_STACK_GAP_LIMIT = 1 << 20
_SYSCALL_ATTEMPTS = 3
_NATIVE_DETAIL = "Native code only (no Python frames)"
_NOTHING: FrozenSet[Hashable] = frozenset()


class OsThreadInfo(InfoRecord):
    """A thread without a ``threading.Thread`` object, as it was when it was captured."""

    _compared = ("native_id", "ident", "name", "python", "frames", "stack")
    __slots__ = _compared
    _shown = ("native_id", "ident", "name", "python")
    kind = "OS thread"
    plural = "OS threads"
    header_word = "OSThread"
    # The name is a string literal, every other field a number or a word: no name passes for a field.
    HEADER = re.compile(
        rf"OSThread (?P<name>{LITERAL}) \(native_id=(?P<native_id>None|\d+), ident=(?P<ident>None|\d+), "
        r"python=(?P<python>True|False)\):"
    )

    native_id: Optional[int]
    """The TID (``/proc/self/task/TID``), or ``None`` for a Python thread it could not be paired with."""
    ident: Optional[int]
    """The Python ident (``sys._current_frames()``'s key) of a Python thread; ``None`` for a native one."""
    name: str
    """The OS thread name (``/proc/self/task/TID/comm``), or ``""`` when the TID is not known."""
    python: bool
    """Whether it runs Python code (``_thread.start_new_thread``), rather than only native code."""
    frames: Tuple[Frame, ...]
    stack: str

    def __init__(
        self, native_id: Optional[int], ident: Optional[int], name: str, python: bool, frames: Tuple[Frame, ...]
    ) -> None:
        stack = format_frames(frames) if python else f"  {_NATIVE_DETAIL}\n"
        self._init(native_id=native_id, ident=ident, name=name, python=python, frames=frames, stack=stack)

    @property
    def header(self) -> str:
        """The dump line: ``OSThread 'python' (native_id=4243, ident=1402..., python=True):``."""
        return f"OSThread {self.name!r} (native_id={self.native_id}, ident={self.ident}, python={self.python}):"

    @property
    def advice(self) -> str:
        if self.python:
            return (
                "stop it before the block ends: a thread started with _thread.start_new_thread cannot be "
                "joined, so give it a way to end (an Event it checks) and wait until it has"
            )
        return "it was started by a C extension: close or shut down the object that owns it before the block ends"

    def sort_key(self) -> Tuple[Any, ...]:
        return (not self.python, self.name, self.native_id or 0, self.ident or 0)

    def to_json(self) -> Dict[str, Any]:
        return {
            "native_id": self.native_id,
            "ident": self.ident,
            "name": self.name,
            "python": self.python,
            "frames": [frame._asdict() for frame in self.frames],
            "stack": self.stack,
        }

    @classmethod
    def from_text(
        cls, header: re.Match[str], frames: Tuple[Frame, ...], details: List[str], fields: TextFields
    ) -> OsThreadInfo:
        python = header["python"] == "True"
        ident = fields.optional_integer(header["ident"], "ident")
        problem = _inconsistent(python, ident, frames)
        if problem:
            raise fields.error(problem)
        if details != ([] if python else [_NATIVE_DETAIL]):
            line = details[0] if details else ""
            raise fields.error(f"an OS thread with python={python} has no line {line[:80]!r}")
        return cls(
            native_id=fields.optional_integer(header["native_id"], "native_id"),
            ident=ident,
            name=fields.name(header["name"]),
            python=python,
            frames=frames,
        )

    @classmethod
    def from_json(cls, fields: JsonFields) -> OsThreadInfo:
        python = fields.field("python", (bool,))
        ident = fields.field("ident", (int, type(None)))
        frames = fields.frames()
        problem = _inconsistent(python, ident, frames)
        if problem:
            raise fields.error(problem)
        return cls(
            native_id=fields.field("native_id", (int, type(None))),
            ident=ident,
            name=fields.field("name", (str,)),
            python=python,
            frames=frames,
        )


def _inconsistent(python: bool, ident: Optional[int], frames: Tuple[Frame, ...]) -> str:
    if python and ident is None:
        return "a Python OS thread has an ident"
    if not python and (ident is not None or frames):
        return "a native OS thread has no ident and no frames"
    return ""


class OsThread(NamedTuple):
    """A live thread of this kind: plain numbers, never a frame."""

    tid: Optional[int]
    """Its TID, or ``None`` for a Python thread not paired with one."""
    starttime: Optional[int]
    """Field 22 of its ``stat``, with ``tid``: a later thread reusing the TID is another thread."""
    ident: Optional[int]
    """Its Python ident, for a thread that runs Python code."""
    name: str
    """Its OS thread name when it was found, for a thread that ends before it is described."""


# -- reading /proc


def _read(path: str, limit: int = 4096) -> Optional[bytes]:
    """The file's first ``limit`` bytes, or ``None`` when it cannot be read (its thread ended)."""
    try:
        with open(path, "rb", buffering=0) as file:
            chunks = []
            while limit > 0:
                chunk = file.read(limit)  # procfs gives a long file a page or so per read
                if not chunk:
                    break
                chunks.append(chunk)
                limit -= len(chunk)
            return b"".join(chunks)
    except (OSError, ValueError):  # ended, or a path that is not there
        return None


def _starttime(tid: int) -> Optional[int]:
    """Field 22 of the thread's ``stat`` (clock ticks since boot), or ``None`` once it has ended."""
    data = _read(f"{_TASKS}/{tid}/stat")
    if data is None:
        return None
    fields = data[data.rfind(b")") + 1 :].split()  # the name, in parentheses, may hold anything
    try:
        return int(fields[19])  # field 3 (the state) is the first after the name
    except (IndexError, ValueError):
        return None


def _comm(tid: int) -> Optional[str]:
    data = _read(f"{_TASKS}/{tid}/comm", 64)
    if data is None:
        return None
    # Up to 15 bytes of anything: made text that can always be written out again.
    return data.rstrip(b"\n").decode("utf-8", "backslashreplace")


def _tids() -> List[int]:
    try:
        names = os.listdir(_TASKS)
    except OSError:
        return []
    return [int(name) for name in names if name.isdigit()]


def _stack_pointer(tid: int) -> Optional[int]:
    """The thread's stack pointer while it is blocked, from ``syscall``: ``nr args... sp pc`` or ``-1 sp pc``."""
    for _ in range(_SYSCALL_ATTEMPTS):
        data = _read(f"{_TASKS}/{tid}/syscall", 256)
        if data is None:
            return None
        parts = data.split()
        if len(parts) >= 3 and parts[0] != b"running":
            try:
                return int(parts[-2], 16)
            except ValueError:
                return None
        os.sched_yield()  # running outside a system call: it may block in a moment
    return None


def _mappings() -> List[Tuple[int, int]]:
    data = _read(_MAPS, 1 << 26)
    spans = []
    for line in (data or b"").splitlines():
        start, _, end = line.partition(b" ")[0].partition(b"-")
        try:
            spans.append((int(start, 16), int(end, 16)))
        except ValueError:
            continue
    spans.sort()
    return spans


# -- pairing idents with TIDs


_tid_offset: Optional[int] = None
"""Where a thread descriptor holds the TID, once found (see the module docstring, rule 1)."""


def _read_memory(memory: int, address: int, size: int) -> bytes:
    try:
        return os.pread(memory, size, address)
    except (OSError, OverflowError, ValueError):  # unmapped, or not an address at all
        return b""


def _offset(memory: int, known: Sequence[Tuple[int, int]]) -> Optional[int]:
    """The offset of the TID in a thread descriptor, checked against ``known`` ``(ident, tid)`` pairs."""
    global _tid_offset
    offset = _tid_offset
    if offset is not None:
        ident, tid = known[0]
        if _read_memory(memory, ident + offset, 4) == tid.to_bytes(4, sys.byteorder):
            return offset
    candidates: Set[int] = set()
    for number, (ident, tid) in enumerate(known[:_KNOWN_PAIRS]):
        data = _read_memory(memory, ident, _DESCRIPTOR_SCAN)
        needle = tid.to_bytes(4, sys.byteorder)
        found = set()
        at = data.find(needle)
        while at >= 0:
            if at % 4 == 0:
                found.add(at)
            at = data.find(needle, at + 1)
        if number == 0:
            candidates = found  # the caller: certainly itself
        elif candidates & found:
            candidates &= found  # another thread tells apart offsets where the caller's TID is by chance
    if len(candidates) != 1:
        return None  # not found, or not told apart: looked for again next time, maybe with other threads known
    _tid_offset = candidates.pop()
    return _tid_offset


def _pair_by_memory(idents: Iterable[int], tids: AbstractSet[int], known: Sequence[Tuple[int, int]]) -> Dict[int, int]:
    """``{ident: tid}`` read from the threads' descriptors; only TIDs in ``tids``, each at most once."""
    idents = list(idents)
    if not idents or not known:
        return {}
    try:
        memory = os.open(_MEMORY, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return {}
    try:
        offset = _offset(memory, known)
        if offset is None:
            return {}
        pairs: Dict[int, int] = {}
        for ident in idents:
            data = _read_memory(memory, ident + offset, 4)
            if len(data) == 4:
                pairs[ident] = int.from_bytes(data, sys.byteorder, signed=True)
    finally:
        os.close(memory)
    return _one_to_one(pairs, tids)


def _one_to_one(pairs: Dict[int, int], tids: AbstractSet[int]) -> Dict[int, int]:
    """The pairs whose TID is one of ``tids`` and no other ident's."""
    seen: Dict[int, int] = {}
    for tid in pairs.values():
        seen[tid] = seen.get(tid, 0) + 1
    return {ident: tid for ident, tid in pairs.items() if tid in tids and seen[tid] == 1}


def _pair_by_stack(idents: AbstractSet[int], tids: Iterable[int], every_ident: AbstractSet[int]) -> Dict[int, int]:
    """``{ident: tid}`` for blocked threads whose stack lies just below one of ``idents`` (rule 2)."""
    pointers = {tid: sp for tid in tids for sp in [_stack_pointer(tid)] if sp is not None}
    if not pointers or not idents:
        return {}
    spans = _mappings()
    starts = [start for start, _ in spans]
    ordered_idents = sorted(every_ident)
    ordered_pointers = sorted(pointers.values())
    pairs: Dict[int, int] = {}
    for tid, sp in pointers.items():
        above = bisect.bisect_right(ordered_idents, sp)
        if above == len(ordered_idents):
            continue
        ident = ordered_idents[above]
        if ident not in idents or ident - sp > _STACK_GAP_LIMIT:
            continue
        span = bisect.bisect_right(starts, sp) - 1
        if span < 0 or not spans[span][0] <= ident < spans[span][1]:
            continue
        following = bisect.bisect_right(ordered_pointers, sp)
        if following < len(ordered_pointers) and ordered_pointers[following] < ident:
            continue  # another thread's stack lies between: the ident is that thread's, or no one's here
        pairs[ident] = tid
    return _one_to_one(pairs, set(pointers))


@functools.lru_cache(maxsize=1)
def _bootstrap_codes() -> FrozenSet[CodeType]:
    codes = set()
    for name in ("_bootstrap", "_bootstrap_inner"):
        function = getattr(threading.Thread, name, None)
        code = getattr(function, "__code__", None)
        if isinstance(code, CodeType):
            codes.add(code)
    return frozenset(codes)


def _in_threading_bootstrap(frame: Optional[FrameType]) -> bool:
    """Whether the outermost frame is ``Thread._bootstrap``: a ``threading`` thread starting or ending."""
    outermost = None
    while frame is not None:
        outermost, frame = frame, frame.f_back
    return outermost is not None and outermost.f_code in _bootstrap_codes()


class _View(NamedTuple):
    """The threads of this kind at one moment, paired as far as they can be."""

    starts: Dict[int, int]
    """``{tid: starttime}`` of every thread without a ``Thread`` object."""
    idents: Set[int]
    """The Python idents without a ``Thread`` object."""
    tid_of: Dict[int, int]
    """``{ident: tid}`` for the pairs found."""


def _threading_ids(live_tids: AbstractSet[int]) -> Tuple[Set[int], Set[int]]:
    """The TIDs and the idents of every live ``threading.Thread``; ``live_tids`` are the threads there are."""
    tids = {os.getpid()}  # the main thread, even before threading is imported
    idents = set()
    for ident, native_id in _threading_threads(live_tids):
        if native_id is not None:
            tids.add(native_id)
        if ident is not None:
            idents.add(ident)
    return tids, idents


def _threading_threads(live_tids: AbstractSet[int]) -> Iterator[Tuple[Optional[int], Optional[int]]]:
    """``(ident, native_id)`` of every ``Thread`` object that stands for a live thread."""
    for thread in live_threads():
        ident, native_id = thread.ident, getattr(thread, "native_id", None)
        # Python < 3.13 keeps a _DummyThread after its thread has ended, and a new thread soon reuses its ident.
        if native_id in live_tids or not isinstance(thread, threading._DummyThread):
            yield ident, native_id


def _started_by_threading() -> Set[int]:
    """The TIDs of the live threads ``threading`` started: not its dummies, which stand for threads it did not."""
    return {
        native_id
        for thread in live_threads()
        if not isinstance(thread, threading._DummyThread)
        for native_id in [getattr(thread, "native_id", None)]
        if native_id is not None
    }


def _known_pairs(live_tids: AbstractSet[int]) -> List[Tuple[int, int]]:
    """``(ident, tid)`` of threads known to be each other: the caller, then the live ``Thread`` objects."""
    known = [(threading.get_ident(), threading.get_native_id())]
    for ident, native_id in _threading_threads(live_tids):
        if ident is not None and native_id is not None and native_id in live_tids and (ident, native_id) != known[0]:
            known.append((ident, native_id))
    return known


def _take_view() -> _View:
    live_tids = set(_tids())
    owned_tids, owned_idents = _threading_ids(live_tids)
    idents: Set[int] = set()
    starting: Set[int] = set()
    frames_by_ident = sys._current_frames()
    try:
        for ident in frames_by_ident.keys() - owned_idents:
            (starting if _in_threading_bootstrap(frames_by_ident[ident]) else idents).add(ident)
    finally:
        frames_by_ident.clear()  # drop every frame reference now, not at the next GC
    # Idents first, then TIDs: a thread that starts in between is a TID without an ident, found as native,
    # and described as the Python thread it is by then (describe pairs again).
    starts = {}
    for tid in _tids():
        if tid not in owned_tids:
            start = _starttime(tid)
            if start is not None:
                starts[tid] = start
    tid_of = _pair(idents | starting, starts, owned_idents, live_tids)
    for ident in starting:  # a threading thread in its first or last moments is the threads kind's
        if ident in tid_of:
            del starts[tid_of.pop(ident)]
    return _View(starts, idents, tid_of)


def _pair(
    idents: AbstractSet[int], starts: Dict[int, int], owned_idents: AbstractSet[int], live_tids: AbstractSet[int]
) -> Dict[int, int]:
    tids = set(starts)
    me, my_ident = threading.get_native_id(), threading.get_ident()
    tid_of = {my_ident: me} if me in tids and my_ident in idents else {}  # the caller pairs itself
    tid_of.update(_pair_by_memory(idents - tid_of.keys(), tids - {me}, _known_pairs(live_tids)))
    rest = idents - tid_of.keys()
    if rest:
        found = _pair_by_stack(rest, tids - set(tid_of.values()), idents | owned_idents)
        tid_of.update(found)
    return tid_of


def _tid_token(tid: int, start: int) -> Tuple[str, int, int]:
    return ("tid", tid, start)


def _ident_token(ident: int) -> Tuple[str, int]:
    return ("ident", ident)


def _threads(view: _View, tokens: Optional[AbstractSet[Hashable]]) -> List[OsThread]:
    """The threads of ``view`` behind ``tokens`` (every one for ``None``), each once."""

    def new(token: Hashable) -> bool:
        return tokens is None or token in tokens

    def thread(tid: Optional[int], ident: Optional[int]) -> OsThread:
        start = None if tid is None else view.starts[tid]
        name = "" if tid is None else _comm(tid) or ""
        return OsThread(tid, start, ident, name)

    found = []
    tid_of = dict(view.tid_of)
    lone_idents = view.idents - tid_of.keys()
    lone_tids = set(view.starts) - set(tid_of.values())
    if len(lone_idents) == len(lone_tids) == 1:  # rule 3: every Python thread has a TID
        tid_of[next(iter(lone_idents))] = next(iter(lone_tids))
        lone_idents, lone_tids = set(), set()
    new_idents = {ident for ident in lone_idents if new(_ident_token(ident))}
    new_tids = {tid for tid in lone_tids if new(_tid_token(tid, view.starts[tid]))}
    if lone_idents and len(new_idents) == len(new_tids) == 1:
        tid_of[new_idents.pop()] = new_tids.pop()
    for ident, tid in tid_of.items():
        if new(_tid_token(tid, view.starts[tid])):
            found.append(thread(tid, ident))
    found.extend(thread(None, ident) for ident in sorted(new_idents))
    if not new_idents:
        # An unpaired Python thread that is not new has an old TID (or reuses the ident of one that ended).
        found.extend(thread(tid, None) for tid in sorted(new_tids))
    # else rule 4: those TIDs may be the unpaired Python threads, which are reported instead
    return found


class OsThreadKind(Kind):
    """Every thread of the process without a ``threading.Thread`` object: ``_thread`` threads and native ones."""

    name = "os_threads"
    info_type = OsThreadInfo
    has_stacks = True

    def check_supported(self) -> None:
        if not os.path.isdir(_TASKS):
            raise ValueError(
                f"os_threads=True needs {_TASKS} (Linux procfs) to list the threads of the process, "
                f"and it is not there on this platform ({sys.platform})"
            )

    def census(self) -> FrozenSet[Hashable]:
        live_tids = _tids()
        owned_tids, owned_idents = _threading_ids(set(live_tids))
        tokens: Set[Hashable] = set()
        for tid in live_tids:
            if tid not in owned_tids:
                start = _starttime(tid)
                if start is not None:
                    tokens.add(_tid_token(tid, start))
        frames_by_ident = sys._current_frames()
        try:
            idents = frames_by_ident.keys() - owned_idents
        finally:
            frames_by_ident.clear()
        tokens.update(map(_ident_token, idents))
        return frozenset(tokens)

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        now = self.census()
        return _NOTHING if now <= before else now - before

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[OsThread]:
        if not tokens:
            return []
        return _threads(_take_view(), tokens)

    def live(self) -> List[OsThread]:
        return _threads(_take_view(), None)

    def identity(self, obj: Any) -> Optional[Hashable]:
        thread: OsThread = obj
        # However the thread was paired when it was found, its TID (or else its ident) is what it is.
        return ("tid", thread.tid, thread.starttime) if thread.tid is not None else ("ident", thread.ident)

    def is_alive(self, obj: Any) -> bool:
        thread: OsThread = obj
        if thread.tid is not None:
            # Gone, or started by threading after all (a Thread of its own).  A _thread thread that
            # calls threading.current_thread() (logging does) gets a _DummyThread: it stays this kind's.
            return _starttime(thread.tid) == thread.starttime and thread.tid not in _started_by_threading()
        _, owned_idents = _threading_ids(set(_tids()))
        frames_by_ident = sys._current_frames()
        try:
            return thread.ident in frames_by_ident and thread.ident not in owned_idents
        finally:
            frames_by_ident.clear()

    def describe(self, objs: Sequence[Any]) -> List[OsThreadInfo]:
        if not objs:
            return []
        frames_by_ident = sys._current_frames()
        try:
            natives = {thread.tid for thread in objs if thread.ident is None and thread.tid is not None}
            late: Dict[int, int] = {}
            if natives:  # a native thread found as it started may be running Python code by now
                live_tids = set(_tids())
                _, owned_idents = _threading_ids(live_tids)
                late = _pair_by_memory(frames_by_ident.keys() - owned_idents, natives, _known_pairs(live_tids))
            ident_of = {tid: ident for ident, tid in late.items()}
            infos = []
            for thread in objs:
                ident = thread.ident if thread.ident is not None else ident_of.get(thread.tid)
                frames = thread_frames(frames_by_ident.get(ident), _SELF_MODULES) if ident is not None else ()
                name = thread.name
                if thread.tid is not None:
                    name = safely(lambda: _comm(thread.tid), None) or name  # noqa: B023 - called at once
                infos.append(
                    OsThreadInfo(native_id=thread.tid, ident=ident, name=name, python=ident is not None, frames=frames)
                )
            return infos
        finally:
            frames_by_ident.clear()  # drop every frame reference now, not at the next GC

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        # Nothing to join: a _thread thread has no handle, a native one is not Python's.  So look again.
        super().wait([thread for thread in objs if not self.is_exempt(thread)], deadline)

    def creation(self, obj: Any) -> Optional[Created]:
        # Only a _thread thread that tracking saw start has a creation site; a native one never does.
        if not isinstance(obj, OsThread):
            return None
        # By TID too: a thread found before it ran Python code has no ident yet, and is paired late.
        return started_by(obj.ident, obj.tid)

    def is_exempt(self, obj: Any) -> bool:
        thread: OsThread = obj
        return thread.ident == threading.get_ident() or thread.tid == threading.get_native_id()


KIND = OsThreadKind()
