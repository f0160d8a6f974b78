"""The registered kinds: one line each, in :class:`KindOptions`.

A kind is the module ``leakcheck.kinds.<name>``, whose ``KIND`` is a
:class:`~leakcheck.kinds.base.Kind`.  Registering it is one line here: its
option, typed.  The option keywords of ``no_leaks``, ``find_leaks`` and
``snapshot``, their validation, the values of ``--leakcheck-kinds``, the
dump and the report all come from this list.
"""

from __future__ import annotations

import functools
import importlib
from typing import (
    TYPE_CHECKING,
    Dict,
    Sequence,
    Tuple,
    TypedDict,  # typing_extensions only for Unpack, and only for type checkers
)

from .base import Kind

if TYPE_CHECKING:
    from .probes import Probe


class KindOptions(TypedDict, total=False):
    """The kinds of resource a check covers, each turned on by the option of its name."""

    threads: bool
    tasks: bool
    processes: bool
    fds: bool
    # os_threads: bool  # TEMP
    probes: Sequence[Probe]


KIND_NAMES: Tuple[str, ...] = tuple(KindOptions.__annotations__)
"""Every kind, in the order reports and dumps list them."""


@functools.cache
def kinds() -> Dict[str, Kind]:
    """Every registered kind by name, its module imported on first use."""
    found: Dict[str, Kind] = {}
    for name in KIND_NAMES:
        kind = importlib.import_module(f"{__package__}.{name}").KIND
        if not isinstance(kind, Kind) or kind.name != name:
            raise RuntimeError(f"leakcheck.kinds.{name}.KIND is not the Kind named {name!r}")
        found[name] = kind
    return found


def kind(name: str) -> Kind:
    """The kind called ``name``; ``ValueError`` naming the valid ones for any other."""
    found = kinds().get(name)
    if found is None:
        raise ValueError(f"unknown kind {name!r}: the kinds are {', '.join(KIND_NAMES)}")
    return found


def flag_kinds() -> Tuple[str, ...]:
    """The kinds turned on by ``True``: the values of ``--leakcheck-kinds``."""
    return tuple(name for name, found in kinds().items() if found.flag)


def default_kinds() -> Tuple[str, ...]:
    return tuple(name for name, found in kinds().items() if found.default)
