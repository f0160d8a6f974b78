"""``snapshot()``: every resource of the chosen kinds, with stacks."""

from __future__ import annotations

import functools
import os
import time
from typing import TYPE_CHECKING, Mapping, Tuple

from ..kinds.base import InfoRecord, Kind
from ..kinds.registry import KIND_NAMES
from ..kinds.tracking import env_default, is_tracking
from ..reporting.snapshot import Snapshot
from .compare import take_census
from .options import check_flag, configure_kinds, unknown_option
from .window import Tracked

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from .options import SnapshotOptions

_OPTION_NAMES = (*KIND_NAMES, "track_creation")


def snapshot(**options: Unpack[SnapshotOptions]) -> Snapshot:
    """Capture every live thread and asyncio task (on any loop), with its stack; and any other kind asked for.

    ``snapshot(fds=True, processes=True)`` adds those kinds; ``threads=False``
    leaves threads out.  The calling thread is included, without leakcheck's
    own frames; leakcheck's helper threads are not.  The result holds no
    frames and can be kept freely.  It also serves as the baseline for
    :func:`find_leaks`, for the kinds it captured.

    With creation tracking on (``track_creation=True``, ``LEAKCHECK_TRACK=1``
    or :func:`~leakcheck.track_creation`), each record carries where its
    resource was started, if tracking saw it start.  ``track_creation=True``
    (or ``LEAKCHECK_TRACK=1``) also keeps tracking on for as long as the
    snapshot is kept, so that a :func:`find_leaks` against it can tell where
    the new resources began.
    """
    kinds = {name: value for name, value in options.items() if name != "track_creation"}
    for name in kinds:
        if name not in KIND_NAMES:
            raise unknown_option(name, "snapshot()", _OPTION_NAMES)
    chosen = _default_kinds() if not kinds else _kinds(kinds)
    track = check_flag(options["track_creation"], "track_creation") if "track_creation" in options else None
    from_env = env_default() if track is None else track
    sites = is_tracking() if from_env is None else from_env
    tracked = Tracked(block=False) if from_env else None
    census = take_census(chosen)
    return Snapshot(
        records={kind.name: _records(kind, sites) for kind in chosen},
        pid=os.getpid(),
        taken_at=time.time(),
        _census=census,
        _tracked=tracked,
    )


def _records(kind: Kind, sites: bool) -> Tuple[InfoRecord, ...]:
    live = kind.live()
    infos = kind.describe(live)
    if not sites:
        return tuple(infos)
    return tuple(
        info if created is None else info.with_created(created.site())
        for obj, info in zip(live, infos, strict=True)
        for created in [kind.creation(obj)]
    )


def _kinds(given: Mapping[str, object]) -> Tuple[Kind, ...]:
    chosen = configure_kinds(given)
    if not chosen:
        raise ValueError(f"snapshot() with every kind off captures nothing: the kinds are {', '.join(KIND_NAMES)}")
    return chosen


@functools.lru_cache(maxsize=1)
def _default_kinds() -> Tuple[Kind, ...]:
    return configure_kinds({})
