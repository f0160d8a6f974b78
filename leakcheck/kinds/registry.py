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
    os_threads: bool
    probes: Sequence[Probe]


KIND_NAMES: Tuple[str, ...] = tuple(KindOptions.__annotations__)
"""Every kind, in the order reports and dumps list them."""
DEFAULT_KINDS: Tuple[str, ...] = ("threads", "tasks")
"""The kinds a check covers unless told otherwise; the others are opt-in (and not even imported until asked for)."""


@functools.cache
def kind(name: str) -> Kind:
    """The kind called ``name``, its module imported on first use; ``ValueError`` naming the valid ones for others."""
    if name not in KIND_NAMES:
        raise ValueError(f"unknown kind {name!r}: the kinds are {', '.join(KIND_NAMES)}")
    found = importlib.import_module(f"{__package__}.{name}").KIND
    if not isinstance(found, Kind) or found.name != name:
        raise RuntimeError(f"leakcheck.kinds.{name}.KIND is not the Kind named {name!r}")
    return found


def kinds() -> Dict[str, Kind]:
    """Every registered kind by name."""
    return {name: kind(name) for name in KIND_NAMES}


def flag_kinds() -> Tuple[str, ...]:
    """The kinds turned on by ``True`` (typed ``bool`` above): the values of ``--leakcheck-kinds``."""
    return tuple(name for name, annotation in KindOptions.__annotations__.items() if _is_bool(annotation))


def _is_bool(annotation: object) -> bool:
    # A string under ``from __future__ import annotations``, which TypedDict keeps as a ForwardRef.
    return annotation is bool or getattr(annotation, "__forward_arg__", annotation) == "bool"


def default_kinds() -> Tuple[str, ...]:
    return DEFAULT_KINDS
