"""``snapshot()``: every resource of the chosen kinds, with stacks."""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Tuple

from ..kinds.base import Kind
from ..kinds.registry import KIND_NAMES
from ..reporting.snapshot import Snapshot
from .compare import take_census
from .options import configure_kinds, unknown_option

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from ..kinds.registry import KindOptions


def snapshot(**kinds: Unpack[KindOptions]) -> Snapshot:
    """Capture every live thread and asyncio task (on any loop), with its stack; and any other kind asked for.

    ``snapshot(fds=True, processes=True)`` adds those kinds; ``threads=False``
    leaves threads out.  The calling thread is included, without leakcheck's
    own frames; leakcheck's helper threads are not.  The result holds no
    frames and can be kept freely.  It also serves as the baseline for
    :func:`find_leaks`, for the kinds it captured.
    """
    chosen = _default_kinds() if not kinds else _kinds(kinds)
    census = take_census(chosen)
    return Snapshot(
        records={kind.name: tuple(kind.describe(kind.live())) for kind in chosen},
        pid=os.getpid(),
        taken_at=time.time(),
        _census=census,
    )


def _kinds(given: KindOptions) -> Tuple[Kind, ...]:
    for name in given:
        if name not in KIND_NAMES:
            raise unknown_option(name, "snapshot()", KIND_NAMES)
    chosen = configure_kinds(given)
    if not chosen:
        raise ValueError(f"snapshot() with every kind off captures nothing: the kinds are {', '.join(KIND_NAMES)}")
    return chosen


@functools.lru_cache(maxsize=1)
def _default_kinds() -> Tuple[Kind, ...]:
    return configure_kinds({})
