"""Live stacks of every kind that has them, and polling until none matches a pattern.

Used by ``forbid=`` and the keyword assertions; a check's comparison does not
need it.
"""

from __future__ import annotations

import time
from typing import Any, Dict, List, Sequence, Tuple

from ..kinds.base import InfoRecord, Kind
from ..kinds.registry import kinds
from .matching import StackPatterns
from .wait import Steps, Wait, backoff_deadlines

Described = Tuple[Kind, Any, InfoRecord]


def stack_kinds() -> List[Kind]:
    """The kinds with stacks that can be looked at here (a kind this platform lacks is left out)."""
    found = []
    for kind in kinds().values():
        if kind.has_stacks:
            try:
                kind.check_supported()
            except ValueError:
                continue
            found.append(kind)
    return found


def live_described(of: Sequence[Kind]) -> List[Described]:
    """Every live object of the kinds ``of`` except the caller's own, with its description."""
    found: List[Described] = []
    for kind in of:
        objs = [obj for obj in kind.live() if not kind.is_exempt(obj)]
        found.extend((kind, obj, info) for obj, info in zip(objs, kind.describe(objs), strict=True))
    return found


def matching_stacks(patterns: StackPatterns) -> List[Described]:
    """Live stacks of every kind that has them, except the caller's, whose block matches a pattern."""
    return [found for found in live_described(stack_kinds()) if any(p.matches(found[2]) for p in patterns)]


def stacks_gone(patterns: StackPatterns, deadline: float) -> Steps[List[InfoRecord]]:
    """Poll until no live stack matches ``patterns`` or ``deadline``; the last matches.

    Waiting for the matching threads (awaiting the tasks) returns the moment
    they end; a stack that changes without its thread ending is seen at the
    next backoff slice.
    """
    for slice_deadline in backoff_deadlines(deadline):
        found = matching_stacks(patterns)
        if not found or time.monotonic() >= deadline:
            return [info for _, _, info in found]
        by_kind: Dict[Kind, List[Any]] = {}
        for kind, obj, _ in found:
            by_kind.setdefault(kind, []).append(obj)
        del found
        yield Wait(tuple(by_kind.items()), slice_deadline, poll=True)
    raise AssertionError("unreachable: backoff_deadlines never ends")
