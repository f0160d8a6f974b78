"""The options vocabulary shared by every entry point, validated up front.

Every public entry point takes the same keyword names, and every mistake is a
``TypeError`` or ``ValueError`` raised where the option is given, never a
surprise when the checked block ends.
"""

from __future__ import annotations

import math
import numbers
import threading
from typing import Callable, Dict, NamedTuple, Tuple, Union

from ..reporting.report import LeakReport
from .matching import MatcherLike, StackPatterns, validate_matchers, validate_patterns

OnLeak = Union[str, Callable[[LeakReport], object]]
_ON_LEAK_ACTIONS = ("raise", "warn")
KINDS = ("threads", "tasks")
"""The kinds of resource a check can cover, each turned on by the option of that name."""


class Options(NamedTuple):  # not a dataclass: a NamedTuple class costs a tenth as much to create at import
    threads: bool = True
    tasks: bool = True
    timeout: float = 1.0
    ignore: Tuple[MatcherLike, ...] = ()
    forbid: StackPatterns = ()
    on_leak: OnLeak = "raise"
    cancel_tasks: bool = False


def check_timeout(timeout: object, what: str = "timeout") -> float:
    if isinstance(timeout, (bool, complex)) or not isinstance(timeout, numbers.Number):
        raise TypeError(f"{what} must be a number of seconds, not {type(timeout).__name__}")
    value = float(timeout)  # type: ignore[arg-type]
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {timeout!r}")
    if value > threading.TIMEOUT_MAX:  # what Thread.join and Event.wait accept
        raise ValueError(f"{what} must be at most threading.TIMEOUT_MAX ({threading.TIMEOUT_MAX:g} s), not {timeout!r}")
    return value


def _check_flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, not {value!r}")
    return value


def _check_on_leak(on_leak: object) -> OnLeak:
    if isinstance(on_leak, str):
        if on_leak not in _ON_LEAK_ACTIONS:
            raise ValueError(f"on_leak must be 'raise', 'warn' or a callable, not {on_leak!r}")
        return on_leak
    if callable(on_leak):
        return on_leak
    raise TypeError(f"on_leak must be 'raise', 'warn' or a callable, not {type(on_leak).__name__}")


def make_options(
    *,
    threads: object = True,
    tasks: object = True,
    timeout: object = 1.0,
    ignore: object = (),
    forbid: object = (),
    on_leak: object = "raise",
    cancel_tasks: object = False,
) -> Options:
    """Validate raw keyword options into an :class:`Options`."""
    options = Options(
        threads=_check_flag(threads, "threads"),
        tasks=_check_flag(tasks, "tasks"),
        timeout=check_timeout(timeout),
        ignore=validate_matchers(ignore),
        forbid=validate_patterns(forbid, "forbid"),
        on_leak=_check_on_leak(on_leak),
        cancel_tasks=_check_flag(cancel_tasks, "cancel_tasks"),
    )
    if not checks_anything(options):
        raise ValueError(NOTHING_CHECKED)
    return options


NOTHING_CHECKED = (
    "threads=False and tasks=False leave nothing to check: turn one of them on, "
    "or give forbid=[...] to check only that no live stack matches"
)


def checks_anything(options: Options) -> bool:
    """Whether a check with ``options`` looks at anything: a kind of resource, or live stacks for ``forbid``."""
    return options.threads or options.tasks or bool(options.forbid)


def parse_seconds(text: str, what: str) -> float:
    """A grace period given as text, on a command line or in an ini file."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, not {text!r}") from None
    return check_timeout(number, what)


def parse_kinds(text: str, what: str) -> Dict[str, bool]:
    """``"threads,tasks"`` as options: which kinds to check."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names or any(name not in KINDS for name in names):
        raise ValueError(f"{what} must be a comma-separated list of {', '.join(KINDS)}, not {text!r}")
    return {kind: kind in names for kind in KINDS}
