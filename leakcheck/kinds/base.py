"""The capture layer's contract: one probe per kind of resource.

A probe knows how to take a cheap census of its resources (identity only,
no stacks), how to turn new census entries back into live objects, how to
describe them with stacks, and how to wait for them to finish.  The
comparison in :mod:`leakcheck.engine.compare` only talks to this interface, so a new
kind (child processes, file descriptors, user-defined probes) plugs in beside
threads and tasks without touching it.
"""

from __future__ import annotations

import time
from typing import AbstractSet, Any, Dict, Hashable, List, Protocol, Sequence

from ..records import Info


class Probe(Protocol):
    option: str
    """The keyword option that turns this kind on, e.g. ``"threads"``."""

    def census(self) -> AbstractSet[Hashable]:
        """Identity tokens of every live resource; must be cheap, no stacks."""

    def new_since(self, before: AbstractSet[Hashable]) -> AbstractSet[Hashable]:
        """Tokens of live resources not in ``before`` (a :meth:`census`); as cheap."""

    def resolve(self, tokens: AbstractSet[Hashable]) -> List[Any]:
        """The live objects behind ``tokens``; dead ones are dropped."""

    def live(self) -> List[Any]:
        """Every live object of this kind."""

    def is_alive(self, obj: Any) -> bool: ...

    def describe(self, objs: Sequence[Any]) -> Sequence[Info]:
        """Infos with stacks, in the order of ``objs``."""

    def wait(self, objs: Sequence[Any], deadline: float) -> None:
        """Block until every one of ``objs`` has finished or ``deadline`` passed.

        Must work from any thread, including one that is not the caller's.
        Objects that cannot make progress while the caller blocks are skipped.
        """


Census = Dict[str, AbstractSet[Hashable]]
"""Census tokens per probe option."""


def remaining(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())
