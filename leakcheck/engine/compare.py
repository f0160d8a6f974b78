"""Comparison: what is alive now that was not alive before, and stays alive.

The order of the steps is what makes a check both cheap and fair:

1. A census of identities (no stacks) fixes the suspects the moment the block
   ends; anything that appears later is not the block's doing.
2. A clean block stops there, without capturing a stack or waiting.
3. Suspects already reported by an earlier check and the checking code itself
   (its thread, its task) are dropped, then ignore rules are applied, so a
   known-harmless thread never costs a grace period.
4. The rest get the grace period (joined or awaited, see :mod:`leakcheck.engine.wait`).
5. Whatever is still alive is described again, filtered again, and reported.

Every step works over the kinds the options turn on
(:mod:`leakcheck.kinds.registry`), through the :class:`~leakcheck.kinds.base.Kind`
interface alone.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
import weakref
from typing import Any, Dict, FrozenSet, List, Optional, Protocol, Sequence, Tuple

from ..kinds.base import Census, InfoRecord, Kind
from ..kinds.ownership import Owner, lost_since, take_lost
from ..reporting.report import LeakReport
from .matching import MatcherLike, builtin_ignores, global_matchers, is_ignored
from .options import Options
from .stacks import stacks_gone
from .wait import Steps, Wait, backoff_deadlines

_NOTHING: FrozenSet[Any] = frozenset()

class _Reported:
    """What earlier checks reported, so that a leak fails one check, not every enclosing or later one.

    An object that lives as long as its resource (a thread) is remembered
    weakly, and forgotten when it goes.  Other resources are remembered by
    their ``Kind.identity`` value, with the object to tell whether they still
    live: entries that have ended are forgotten when a window opens, and when
    their kind has suspects, so a connection given back and leaked again is
    reported again.
    """

    _KEPT = 4096  # values per kind, the newest: a bound, whatever happens

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._weak: weakref.WeakSet[Any] = weakref.WeakSet()
        self._values: Dict[str, Dict[Any, Any]] = {}

    def _key(self, kind: Kind, obj: Any) -> Any:
        identity = kind.identity(obj)
        if identity is not None:
            return identity
        try:
            weakref.ref(obj)
        except TypeError:
            return obj
        return None

    def forget_ended(self, kind: Kind) -> None:
        values = self._values.get(kind.name)
        if values:
            remembered = list(values.items())
            alive = {id(obj) for obj in kind.alive_among([obj for _, obj in remembered])}
            for key, obj in remembered:
                if id(obj) not in alive:
                    values.pop(key, None)

    def __contains__(self, found: Tuple[Kind, Any]) -> bool:
        kind, obj = found
        key = self._key(kind, obj)
        return obj in self._weak if key is None else key in self._values.get(kind.name, {})

    def add(self, kind: Kind, obj: Any) -> None:
        key = self._key(kind, obj)
        if key is None:
            self._weak.add(obj)
            return
        values = self._values.setdefault(kind.name, {})
        values[key] = obj
        if len(values) > self._KEPT:
            del values[next(iter(values))]


_reported = _Reported()


@functools.lru_cache(maxsize=32)
def _clean_report(timeout: float) -> LeakReport:
    return LeakReport(timeout=timeout)


def take_census(kinds: Sequence[Kind]) -> Census:
    if _reported._values:  # only ever after a leak of a kind remembered by value
        for kind in kinds:
            _reported.forget_ended(kind)
    census: Census = {}
    for kind in kinds:  # not a comprehension: this runs for every test, and a loop is cheaper
        census[kind.name] = kind.census()
    return census


def started_since(before: Census, kinds: Sequence[Kind]) -> Census:
    """The census tokens of what ``kinds`` find alive now and ``before`` did not list."""
    return {kind.name: kind.new_since(before.get(kind.name, _NOTHING)) for kind in kinds}


def anything_started(before: Census, kinds: Sequence[Kind]) -> bool:
    """Whether ``kinds`` find anything alive now that ``before`` did not list."""
    for kind in kinds:  # noqa: SIM110 - runs for every test: no generator for any()
        if kind.new_since(before.get(kind.name, _NOTHING)):
            return True
    return False


Found = Tuple[List[Any], List[InfoRecord]]
"""Live objects of one kind and their records, in the same order."""


class TrackedLike(Protocol):
    """A check's creation tracking (:class:`leakcheck.engine.window.Tracked`)."""

    @property
    def owner(self) -> Optional[Owner]: ...

    @property
    def mark(self) -> int: ...


def _owned(kind: Kind, obj: Any, owner: Owner) -> bool:
    """Whether a check of the block ``owner`` blames ``obj``: it answers for it, or tracking did not see it start."""
    created = kind.creation(obj)
    return created is None or owner.answers_for(created.owner)


def _still_owned(kind: Kind, found: Found, owner: Owner) -> Found:
    """``found``, looked at again after the grace period: what another thread was starting as the census ran
    may have its record only now (a task is listed before the hook that made it returns)."""
    objs, infos = found
    kept = [index for index, obj in enumerate(objs) if _owned(kind, obj, owner)]
    if len(kept) == len(objs):
        return found
    return [objs[index] for index in kept], [infos[index] for index in kept]


def _described(kind: Kind, objs: Sequence[Any], sites: bool) -> Sequence[InfoRecord]:
    infos = kind.describe(objs)
    if not sites:
        return infos
    with_sites = []
    for obj, info in zip(objs, infos, strict=True):
        created = kind.creation(obj)
        with_sites.append(info.with_created(created.site()) if created is not None else info)
    return with_sites


def _not_ignored(kind: Kind, objs: Sequence[Any], matchers: Sequence[MatcherLike], sites: bool = False) -> Found:
    kept_objs, kept_infos = [], []
    for obj, info in zip(objs, _described(kind, objs, sites), strict=True):
        if not is_ignored(info, matchers):
            kept_objs.append(obj)
            kept_infos.append(info)
    return kept_objs, kept_infos


def _without_garbage(
    leaked: Dict[Kind, Found], matchers: Dict[Kind, Sequence[MatcherLike]], sites: bool
) -> Dict[Kind, Found]:
    """Collect garbage once if a leaked object may be garbage (see ``Kind.may_be_garbage``); judge again.

    Only reference cycles keep such objects (a task stranded on a closed loop,
    a file object in a cycle), so one collection ends them; what something
    still holds survives, and is described again.
    """
    collectable = [kind for kind, (objs, _) in leaked.items() if any(kind.may_be_garbage(obj) for obj in objs)]
    if not collectable:
        return leaked
    weak: Dict[Kind, List[Any]] = {}
    for kind in collectable:  # popped from the caller's own dict: no strong reference may stay behind
        objs, _ = leaked.pop(kind)
        weak[kind] = [_weakly(obj) for obj in objs]
        del objs
    gc.collect()
    for kind, refs in weak.items():
        survivors = kind.alive_among([obj for obj in (ref() for ref in refs) if obj is not None])
        leaked[kind] = _not_ignored(kind, survivors, matchers[kind], sites)
    return leaked


def _weakly(obj: Any) -> Any:
    """A weak reference to ``obj``, or (for a value such as a fd number) a callable that returns it."""
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


def check_steps(before: Census, options: Options, tracked: Optional[TrackedLike] = None) -> Steps[LeakReport]:
    """Compare now with ``before``; see the module docstring for the order.

    With ``tracked``, records carry their creation sites, a block blames only
    what it owns, and tracked resources that vanished without ending (a
    pending task collected as garbage) are leaks too.
    """
    started = time.monotonic()
    deadline = started + options.timeout
    owner = tracked.owner if tracked is not None else None
    sites = tracked is not None
    new_tokens = [(kind, kind.new_since(before.get(kind.name, _NOTHING))) for kind in options.kinds]
    suspects: Dict[Kind, List[Any]] = {}
    if any(tokens for _, tokens in new_tokens):
        for kind, tokens in new_tokens:
            if not tokens:
                continue
            _reported.forget_ended(kind)
            found = [
                obj
                for obj in kind.resolve(tokens)
                if not kind.is_exempt(obj)
                and (kind, obj) not in _reported
                and (owner is None or _owned(kind, obj, owner))
            ]
            if found:
                suspects[kind] = found
        del found  # hold suspects in `suspects` only: they may be collected as garbage below
    del new_tokens
    if not suspects and not options.forbid and (tracked is None or not lost_since(tracked.mark)):
        return _clean_report(options.timeout)

    common: List[MatcherLike] = [*options.ignore, *global_matchers()]
    matchers: Dict[Kind, Sequence[MatcherLike]] = {}
    polling = False
    for kind in suspects:
        extra, polls = kind.extra_ignores(suspects[kind])
        extra = [*builtin_ignores(kind.info_type.kind), *extra]
        matchers[kind] = [*common, *extra] if extra else common
        polling = polling or polls
    for kind in list(suspects):  # a kind with no rule is not described before its grace period
        if matchers[kind]:
            suspects[kind], _ = _not_ignored(kind, suspects[kind], matchers[kind], sites)
    slices = backoff_deadlines(deadline) if polling else iter((deadline,))
    leaked: Dict[Kind, Found] = {}
    for slice_deadline in slices:
        if any(suspects.values()):
            yield Wait(tuple(suspects.items()), slice_deadline, poll=polling)
        leaked = {
            kind: _not_ignored(kind, kind.alive_among(objs), matchers[kind], sites) for kind, objs in suspects.items()
        }
        suspects = {kind: objs for kind, (objs, _) in leaked.items() if objs}
        if not suspects or time.monotonic() >= deadline:
            break
    del suspects
    if owner is not None:
        leaked = {kind: _still_owned(kind, found, owner) for kind, found in leaked.items()}
    leaked = _without_garbage(leaked, matchers, sites)

    forbidden: List[InfoRecord] = []
    if options.forbid:
        forbidden = yield from stacks_gone(options.forbid, deadline)

    with _reported.lock:
        # Checked and marked in one step: two overlapping checks never both report the same leak.
        for kind, (objs, infos) in list(leaked.items()):
            fresh = [(obj, info) for obj, info in zip(objs, infos, strict=True) if (kind, obj) not in _reported]
            for obj, _ in fresh:
                _reported.add(kind, obj)
            leaked[kind] = ([obj for obj, _ in fresh], [info for _, info in fresh])
    # By kind name, not by kind object: a narrower kind (one loop's tasks) reports as its kind.
    records: Dict[str, List[InfoRecord]] = {}
    held_by: List[Tuple[int, str]] = []
    for kind, (objs, infos) in leaked.items():
        records.setdefault(kind.name, []).extend(infos)
        held_by.extend(kind.held_by(objs))
    if tracked is not None:
        records = _with_lost(records, tracked, options, common)
    report = LeakReport(
        records={name: sorted(infos, key=_sort_key) for name, infos in records.items() if infos},
        forbidden=tuple(forbidden),
        forbid=tuple(repr(pattern) for pattern in options.forbid),
        waited=time.monotonic() - started,
        timeout=options.timeout,
        held_by=tuple(held_by),
    )
    if options.cancel_tasks:
        cancelled = tuple((kind, objs) for kind, (objs, _) in leaked.items() if objs and kind.cancel(objs))
        if cancelled:
            # Give the cancelled tasks a chance to unwind, so they do not spill into later code.
            yield Wait(cancelled, time.monotonic() + options.timeout)
    return report


def _with_lost(
    records: Dict[str, List[InfoRecord]], tracked: TrackedLike, options: Options, common: Sequence[MatcherLike]
) -> Dict[str, List[InfoRecord]]:
    """``records`` plus what the block's tracked resources vanished as, since the block began, unless ignored."""
    checked = [kind.name for kind in options.kinds]
    for lost in take_lost(tracked.mark, tracked.owner, checked):
        info = lost.info.with_created(lost.created.site())
        if not is_ignored(info, [*common, *builtin_ignores(info.kind)]):
            records.setdefault(lost.kind, []).append(info)
    return records


def _sort_key(info: InfoRecord) -> Tuple[Any, ...]:
    return info.sort_key()
