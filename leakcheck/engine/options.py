"""The options vocabulary shared by every entry point: defined once, validated up front.

:class:`NoLeaksOptions` is the one definition.  ``no_leaks``, ``find_leaks``
and ``snapshot`` take its keywords as ``**options: Unpack[...]`` (PEP 692),
so type checkers see every keyword without a signature repeating them;
:func:`make_options` validates them, the pytest marker and the unittest
runner build theirs through it, and ``--leakcheck-kinds`` lists the kinds of
the registry.  A mistake is a ``TypeError`` or ``ValueError`` raised where the
option is given, never a surprise when the checked block ends.
"""

from __future__ import annotations

import math
import numbers
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Tuple, Union

from ..kinds.base import Kind
from ..kinds.registry import DEFAULT_KINDS, KIND_NAMES, KindOptions, flag_kinds, kind
from ..kinds.tracking import env_default, is_tracking
from .matching import MatcherLike, StackPattern, StackPatterns, validate_matchers, validate_patterns

if TYPE_CHECKING:
    from ..reporting.report import LeakReport

OnLeak = Union[str, Callable[["LeakReport"], object]]
_ON_LEAK_ACTIONS = ("raise", "warn")


class SnapshotOptions(KindOptions, total=False):
    """The options of :func:`~leakcheck.snapshot`: the kinds, and whether records carry creation sites."""

    track_creation: bool


class FindOptions(SnapshotOptions, total=False):
    """The options of :func:`~leakcheck.find_leaks`: the kinds, and how to judge and wait."""

    timeout: float
    ignore: Iterable[MatcherLike]
    forbid: Union[StackPattern, Iterable[StackPattern]]
    cancel_tasks: bool


class NoLeaksOptions(FindOptions, total=False):
    """The options of :func:`~leakcheck.no_leaks`, the marker, the fixture and ``leakcheck_options``."""

    on_leak: OnLeak


class Options(NamedTuple):  # not a dataclass: a NamedTuple class costs a tenth as much to create at import
    """Validated options.  ``kinds`` are the kinds checked, configured, in the registry's order."""

    kinds: Tuple[Kind, ...]
    timeout: float = 1.0
    ignore: Tuple[MatcherLike, ...] = ()
    forbid: StackPatterns = ()
    on_leak: OnLeak = "raise"
    cancel_tasks: bool = False
    track_creation: Optional[bool] = None
    """``None``: as ``LEAKCHECK_TRACK`` says, else whether tracking is on when the check starts."""

    def checks(self, kind_name: str) -> bool:
        """Whether the kind called ``kind_name`` is checked."""
        return any(kind.name == kind_name for kind in self.kinds)


def check_timeout(timeout: object, what: str = "timeout") -> float:
    if isinstance(timeout, (bool, complex)) or not isinstance(timeout, numbers.Number):
        raise TypeError(f"{what} must be a number of seconds, not {type(timeout).__name__}")
    try:
        value = float(timeout)  # type: ignore[arg-type]
    except (OverflowError, ValueError):  # 10**400; Decimal("sNaN")
        shown = repr(timeout) if len(repr(timeout)) <= 40 else repr(timeout)[:40] + "..."
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {shown}") from None
    if math.isnan(value) or value < 0 or math.isinf(value):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, not {timeout!r}")
    if value > threading.TIMEOUT_MAX:  # what Thread.join and Event.wait accept
        raise ValueError(f"{what} must be at most threading.TIMEOUT_MAX ({threading.TIMEOUT_MAX:g} s), not {timeout!r}")
    return value


def check_flag(value: object, name: str) -> bool:
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


# How each option that is not a kind is validated, and its default.
_VALIDATORS: Dict[str, Tuple[Callable[[Any], Any], Any]] = {
    "timeout": (check_timeout, 1.0),
    "ignore": (validate_matchers, ()),
    "forbid": (lambda value: validate_patterns(value, "forbid"), ()),
    "cancel_tasks": (lambda value: check_flag(value, "cancel_tasks"), False),
    "on_leak": (_check_on_leak, "raise"),
    "track_creation": (lambda value: check_flag(value, "track_creation"), None),
}
OPTION_NAMES: Tuple[str, ...] = (*KIND_NAMES, *_VALIDATORS)
"""Every keyword of :class:`NoLeaksOptions`, kinds first."""
FIND_OPTION_NAMES = tuple(name for name in OPTION_NAMES if name != "on_leak")


class UnknownOption(TypeError, ValueError):
    """An option no entry point has: a ``TypeError`` as for any unexpected keyword, and a ``ValueError``."""

    __module__ = "leakcheck"


def unknown_option(name: str, where: str, allowed: Iterable[str]) -> UnknownOption:
    others = [option for option in allowed if option not in KIND_NAMES]
    also = f"; the other options are {', '.join(others)}" if others else ""
    return UnknownOption(f"{where} got an unknown option {name!r}: the kinds are {', '.join(KIND_NAMES)}{also}")


NOTHING_CHECKED = (
    "threads=False and tasks=False leave nothing to check: turn a kind on "
    f"({', '.join(KIND_NAMES)}), or give forbid=[...] to check only that no live stack matches"
)


def configure_kinds(values: Mapping[str, object]) -> Tuple[Kind, ...]:
    """The kinds to check for these kind options (the others at their defaults), validated."""
    configured: List[Optional[Kind]] = []
    for name in KIND_NAMES:
        if name in values:
            configured.append(kind(name).configure(values[name]))
        elif name in DEFAULT_KINDS:
            configured.append(kind(name))
    return tuple(on for on in configured if on is not None)


def make_options(
    given: Optional[Mapping[str, Any]] = None, *, where: str = "no_leaks()", allowed: Tuple[str, ...] = OPTION_NAMES
) -> Options:
    """Validate keyword options into :class:`Options`; ``allowed`` are those the entry point ``where`` takes."""
    given = given or {}
    for name in given:
        if name not in allowed:
            raise unknown_option(name, where, allowed)
    values: Dict[str, Any] = {}
    for name, (validate, default) in _VALIDATORS.items():
        values[name] = validate(given[name]) if name in given else default
    options = Options(kinds=configure_kinds(given), **values)
    if not checks_anything(options):
        raise ValueError(NOTHING_CHECKED)
    return options


def checks_anything(options: Options) -> bool:
    """Whether a check with ``options`` looks at anything: a kind of resource, or live stacks for ``forbid``."""
    return bool(options.kinds) or bool(options.forbid)


def parse_seconds(text: str, what: str) -> float:
    """A grace period given as text, on a command line or in an ini file."""
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{what} must be a number of seconds, not {text!r}") from None
    return check_timeout(number, what)


def tracks_creation(options: Options) -> bool:
    """Whether a check with ``options`` starting now tracks creation (see :attr:`Options.track_creation`).

    ``ValueError`` for a ``LEAKCHECK_TRACK`` that says neither yes nor no.
    """
    if options.track_creation is not None:
        return options.track_creation
    from_env = env_default()
    return is_tracking() if from_env is None else from_env


def parse_kinds(text: str, what: str) -> Dict[str, bool]:
    """``"threads,tasks,fds"`` as kind options: these kinds on, every other flag kind off."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    valid = flag_kinds()
    unknown = [name for name in names if name not in valid]
    if not names or unknown:
        problem = f"unknown kind {unknown[0]!r}" if unknown else "no kind given"
        raise ValueError(f"{what}: {problem}; it must be a comma-separated list of {', '.join(valid)}, not {text!r}")
    return {kind: kind in names for kind in valid}
