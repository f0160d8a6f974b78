"""Comparison: what is alive now that was not alive before, and stays alive.

The order of the steps is what makes a check both cheap and fair:

1. A census of identities (no stacks) fixes the suspects the moment the block
   ends; anything that appears later is not the block's doing.
2. A clean block stops there, without capturing a stack or waiting.
3. Suspects already reported by an earlier check, leakcheck's own helpers, the
   checking thread and task are dropped, then ignore rules are applied, so a
   known-harmless thread never costs a grace period.
4. The rest get the grace period (joined or awaited, see :mod:`leakcheck.engine.wait`).
5. Whatever is still alive is described again, filtered again, and reported.
"""

from __future__ import annotations

import functools
import gc
import threading
import time
import weakref
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Tuple

from ..kinds import asyncio_compat as compat
from ..kinds.base import Census, Probe
from ..kinds.tasks import TaskProbe, cancel, is_on_closed_loop
from ..kinds.thread_pools import global_holding, idle_worker_matcher
from ..kinds.threads import ThreadProbe
from ..records import Info, TaskInfo, ThreadInfo
from ..reporting.report import LeakReport
from .matching import MatcherLike, StackPatterns, builtin_ignores, global_matchers, is_ignored
from .options import Options
from .wait import Steps, Wait, backoff_deadlines

THREADS = ThreadProbe()
TASKS = TaskProbe()
PROBES: Tuple[Probe, ...] = (THREADS, TASKS)
_NOTHING: FrozenSet[Any] = frozenset()

_reported: weakref.WeakSet[Any] = weakref.WeakSet()
_reported_lock = threading.Lock()


def _thread_order(info: ThreadInfo) -> Tuple[str, int]:
    return (info.name, info.native_id or 0)


def _task_order(info: TaskInfo) -> Tuple[str, str]:
    return (info.name, info.coro)


@functools.lru_cache(maxsize=32)
def _clean_report(timeout: float) -> LeakReport:
    return LeakReport(timeout=timeout)


_last_enabled: Tuple[Optional[Options], Tuple[Probe, ...]] = (None, ())


def enabled_probes(options: Options) -> Tuple[Probe, ...]:
    global _last_enabled
    last_options, probes = _last_enabled  # one tuple: consistent even when threads race
    if options is not last_options:  # runners reuse one Options object for most checks
        probes = _probes_for(tuple(getattr(options, probe.option) for probe in PROBES))
        _last_enabled = (options, probes)
    return probes


@functools.cache  # one entry per combination of kinds
def _probes_for(enabled: Tuple[bool, ...]) -> Tuple[Probe, ...]:
    return tuple(probe for probe, on in zip(PROBES, enabled, strict=True) if on)


def take_census(probes: Sequence[Probe]) -> Census:
    census: Census = {}
    for probe in probes:  # not a comprehension: this runs for every test, and a loop is cheaper
        census[probe.option] = probe.census()
    return census


def started_since(before: Census, probes: Sequence[Probe]) -> Census:
    """The census tokens of what ``probes`` find alive now and ``before`` did not list."""
    return {probe.option: probe.new_since(before.get(probe.option, _NOTHING)) for probe in probes}


def anything_started(before: Census, probes: Sequence[Probe]) -> bool:
    """Whether ``probes`` find anything alive now that ``before`` did not list."""
    for probe in probes:  # noqa: SIM110 - runs for every test: no generator for any()
        if probe.new_since(before.get(probe.option, _NOTHING)):
            return True
    return False


def _exempt_objects() -> List[Any]:
    """The checking thread and task: never a leak of their own check."""
    exempt: List[Any] = [threading.current_thread()]
    task = compat.current_task()
    if task is not None:
        exempt.append(task)
    return exempt


def _not_ignored(probe: Probe, objs: Sequence[Any], matchers: Sequence[MatcherLike]) -> Tuple[List[Any], List[Info]]:
    kept_objs, kept_infos = [], []
    for obj, info in zip(objs, probe.describe(objs), strict=True):
        if not is_ignored(info, matchers):
            kept_objs.append(obj)
            kept_infos.append(info)
    return kept_objs, kept_infos


def live_described(probes: Sequence[Probe]) -> List[Tuple[Probe, Any, Info]]:
    """Every live object of ``probes`` except the caller, with its description."""
    exempt = _exempt_objects()
    found: List[Tuple[Probe, Any, Info]] = []
    for probe in probes:
        objs = [obj for obj in probe.live() if obj not in exempt]
        found.extend((probe, obj, info) for obj, info in zip(objs, probe.describe(objs), strict=True))
    return found


def matching_stacks(patterns: StackPatterns) -> List[Tuple[Probe, Any, Info]]:
    """Live threads and tasks of every kind, except the caller, whose block matches a pattern."""
    return [found for found in live_described(PROBES) if any(p.matches(found[2]) for p in patterns)]


def stacks_gone(patterns: StackPatterns, deadline: float) -> Steps[List[Info]]:
    """Poll until no live stack matches ``patterns`` or ``deadline``; the last matches.

    Joining the matching threads (awaiting the tasks) returns the moment they
    end; a stack that changes without its thread ending is seen at the next
    backoff slice.
    """
    for slice_deadline in backoff_deadlines(deadline):
        found = matching_stacks(patterns)
        if not found or time.monotonic() >= deadline:
            return [info for _, _, info in found]
        by_probe: Dict[Probe, List[Any]] = {}
        for probe, obj, _ in found:
            by_probe.setdefault(probe, []).append(obj)
        del found
        yield Wait(tuple(by_probe.items()), slice_deadline, poll=True)
    raise AssertionError("unreachable: backoff_deadlines never ends")


def _without_garbage_on_closed_loops(
    leaked: Dict[Probe, Tuple[List[Any], List[Info]]], matchers: Callable[[Probe], Sequence[MatcherLike]]
) -> Dict[Probe, Tuple[List[Any], List[Info]]]:
    """Collect garbage once if a leaked task's loop is closed; only the tasks that survive stay leaked.

    asyncio strands tasks on a closed loop in ordinary ways (the other children of a
    ``gather`` that one failed child ended, ``run_until_complete``'s wrapper after
    ``loop.stop()``); it marks them as not worth a warning, and only reference cycles
    keep them, so one collection frees them.  A task something still holds survives
    and is reported, described again: its state then says the loop is closed.
    """
    on_closed = [
        probe
        for probe, (objs, _) in leaked.items()
        if probe.option == "tasks" and any(is_on_closed_loop(task) for task in objs)
    ]
    if not on_closed:
        return leaked
    weak: Dict[Probe, List[Any]] = {}
    for probe in on_closed:  # popped from the caller's own dict: no strong reference may stay behind
        objs, _ = leaked.pop(probe)
        weak[probe] = [weakref.ref(task) for task in objs]
        del objs
    gc.collect()
    for probe, refs in weak.items():
        survivors = [task for task in (ref() for ref in refs) if task is not None and probe.is_alive(task)]
        leaked[probe] = _not_ignored(probe, survivors, matchers(probe))
    return leaked


def check_steps(before: Census, options: Options, probes: Optional[Sequence[Probe]] = None) -> Steps[LeakReport]:
    """Compare now with ``before``; see the module docstring for the order."""
    started = time.monotonic()
    deadline = started + options.timeout
    if probes is None:
        probes = enabled_probes(options)
    new_tokens = [(probe, probe.new_since(before.get(probe.option, _NOTHING))) for probe in probes]
    suspects: Dict[Probe, List[Any]] = {}
    if any(tokens for _, tokens in new_tokens):
        exempt = _exempt_objects()
        for probe, tokens in new_tokens:
            found = [obj for obj in probe.resolve(tokens) if obj not in exempt and obj not in _reported]
            if found:
                suspects[probe] = found
        del found, exempt  # hold suspects in `suspects` only: they may be collected as garbage below
    del new_tokens
    if not suspects and not options.forbid:
        return _clean_report(options.timeout)

    common: List[MatcherLike] = [*options.ignore, *global_matchers()]
    idle_worker = idle_worker_matcher(suspects.get(THREADS, ()))
    by_kind: Dict[str, List[MatcherLike]] = {  # a kind with no rule is not described before its grace period
        "threads": [*common, idle_worker] if idle_worker is not None else common,
        "tasks": [*common, *builtin_ignores()],
    }

    def matchers(probe: Probe) -> Sequence[MatcherLike]:
        return by_kind.get(probe.option, common)

    for probe in list(suspects):
        if matchers(probe):
            suspects[probe], _ = _not_ignored(probe, suspects[probe], matchers(probe))
    # A busy executor worker never ends, it turns idle (and so ignored): that
    # needs polling, where any other suspect can simply be joined or awaited.
    polling = idle_worker is not None and any(idle_worker.could_match(obj) for obj in suspects.get(THREADS, ()))
    slices = backoff_deadlines(deadline) if polling else iter((deadline,))
    leaked: Dict[Probe, Tuple[List[Any], List[Info]]] = {}
    for slice_deadline in slices:
        if any(suspects.values()):
            yield Wait(tuple(suspects.items()), slice_deadline, poll=polling)
        leaked = {
            probe: _not_ignored(probe, [obj for obj in objs if probe.is_alive(obj)], matchers(probe))
            for probe, objs in suspects.items()
        }
        suspects = {probe: objs for probe, (objs, _) in leaked.items() if objs}
        if not suspects or time.monotonic() >= deadline:
            break
    del suspects
    leaked = _without_garbage_on_closed_loops(leaked, matchers)

    forbidden: List[Info] = []
    if options.forbid:
        forbidden = yield from stacks_gone(options.forbid, deadline)

    with _reported_lock:
        # Checked and marked in one step: two overlapping checks never both
        # report the same thread or task.
        for probe, (objs, infos) in list(leaked.items()):
            fresh = [(obj, info) for obj, info in zip(objs, infos, strict=True) if obj not in _reported]
            _reported.update(obj for obj, _ in fresh)
            leaked[probe] = ([obj for obj, _ in fresh], [info for _, info in fresh])
    # By kind, not by probe object: a narrower probe (one loop's tasks) reports as its kind.
    thread_infos = [info for probe, (_, infos) in leaked.items() if probe.option == "threads" for info in infos]
    task_objs = [obj for probe, (objs, _) in leaked.items() if probe.option == "tasks" for obj in objs]
    task_infos = [info for probe, (_, infos) in leaked.items() if probe.option == "tasks" for info in infos]
    thread_objs = [obj for probe, (objs, _) in leaked.items() if probe.option == "threads" for obj in objs]
    held_by = tuple((thread.ident, holder) for thread in thread_objs for holder in [global_holding(thread)] if holder)
    report = LeakReport(
        threads=tuple(sorted((i for i in thread_infos if isinstance(i, ThreadInfo)), key=_thread_order)),
        tasks=tuple(sorted((i for i in task_infos if isinstance(i, TaskInfo)), key=_task_order)),
        forbidden=tuple(forbidden),
        forbid=tuple(repr(pattern) for pattern in options.forbid),
        waited=time.monotonic() - started,
        timeout=options.timeout,
        held_by=held_by,
    )
    if options.cancel_tasks and task_objs:
        for task in task_objs:
            cancel(task)
        # Give the cancelled tasks a chance to unwind, so they do not spill into later code.
        yield Wait(((TASKS, task_objs),), time.monotonic() + options.timeout)
    return report
