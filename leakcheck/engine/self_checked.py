"""Which tests check themselves (``@no_leaks``, a LeakCheck base class), so that runners do not check them twice."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T")

_marked_any = False


def mark_self_checked(target: T) -> T:
    """Mark a function or class as running its own check, with its own options."""
    global _marked_any
    target._leakcheck_self_checked = True  # type: ignore[attr-defined]
    _marked_any = True
    return target


def may_have_self_checked_tests() -> bool:
    """Whether any test could be self-checked: lets runners skip looking at every test when none is."""
    return _marked_any


def is_self_checked(target: object) -> bool:
    """Whether ``target`` (a function or class) runs its own check: ``@no_leaks`` or a LeakCheck base class.

    Runners that check every test leave such tests to their own check, with
    their own options, instead of checking them twice.
    """
    return bool(getattr(target, "_leakcheck_self_checked", False))
