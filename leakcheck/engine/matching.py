"""Matching: stack patterns (``forbid=``, keyword assertions) and ignore rules.

The ignore vocabulary follows goleak (``IgnoreTopFunction`` and friends) with
Python names.  A matcher is any callable taking a :class:`ThreadInfo` or
:class:`TaskInfo` and returning ``True`` for things that are never leaks.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable
from typing import Callable, List, Pattern, Tuple, Union

from ..kinds.base import InfoRecord, live_block
from ..kinds.stack_top import top_frame

StackPattern = Union[str, Pattern[str]]
"""A keyword: a ``str`` is a substring, a compiled pattern is searched."""

MatcherLike = Callable[[InfoRecord], bool]


class Matcher:
    """Base class of the built-in ignore matchers: callable, with a readable repr."""

    def __call__(self, info: InfoRecord) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class _NameMatcher(Matcher):
    def __init__(self, pattern: Pattern[str]) -> None:
        self._pattern = pattern

    def __call__(self, info: InfoRecord) -> bool:
        return self._pattern.search(info.name) is not None

    def __repr__(self) -> str:
        return f"ignore_name({self._pattern.pattern!r})"


class _TopFunctionMatcher(Matcher):
    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, info: InfoRecord) -> bool:
        if not info.frames:
            return False
        top = top_frame(info.frames)
        # The innermost frame itself still counts, so a spelling that named the waiting primitive keeps working.
        return info.frames[-1].function == self._qualname or (top is not None and top.function == self._qualname)

    def __repr__(self) -> str:
        return f"ignore_top_function({self._qualname!r})"


class _AnyFunctionMatcher(_TopFunctionMatcher):
    def __call__(self, info: InfoRecord) -> bool:
        return any(frame.function == self._qualname for frame in info.frames)

    def __repr__(self) -> str:
        return f"ignore_any_function({self._qualname!r})"


class _CreatedByMatcher(_TopFunctionMatcher):
    def __call__(self, info: InfoRecord) -> bool:
        created = info.created
        return created is not None and any(frame.function == self._qualname for frame in created.frames)

    def __repr__(self) -> str:
        return f"ignore_created_by({self._qualname!r})"


class _TaskCoroutineMatcher(Matcher):
    """A task whose own coroutine (the outermost frame of its await chain) runs ``qualname``."""

    applies_to = "task"
    """The record noun it can match: a check of another kind skips it, and needs no description for it."""

    def __init__(self, qualname: str) -> None:
        self._qualname = qualname

    def __call__(self, info: InfoRecord) -> bool:
        return info.kind == "task" and bool(info.frames) and info.frames[0].function == self._qualname

    def __repr__(self) -> str:
        return f"<task running {self._qualname}>"


BUILTIN_IGNORES: Tuple[Matcher, ...] = (
    # anyio starts it once per event loop, the first time the loop's process pool is used, and it
    # waits in sleep(inf) until the loop shuts down, when it kills the pool's workers.
    _TaskCoroutineMatcher("anyio._backends._asyncio._shutdown_process_pool_on_exit"),
)
"""Library infrastructure that lives exactly as long as its event loop: never a test's leak.

Each entry names one coroutine by its exact qualified name, so a user's own
task is never hidden by it.  ``use_builtin_ignores(False)`` turns them off.
"""

_builtin_enabled = True


def use_builtin_ignores(enabled: bool) -> None:
    """Apply :data:`BUILTIN_IGNORES` in every check (the default), or not."""
    global _builtin_enabled
    if not isinstance(enabled, bool):
        raise TypeError(f"use_builtin_ignores takes True or False, not {enabled!r}")
    _builtin_enabled = enabled


def _regex(pattern: object, what: str) -> Pattern[str]:
    if isinstance(pattern, str):
        return re.compile(pattern)
    if isinstance(pattern, re.Pattern) and isinstance(pattern.pattern, str):
        return pattern
    raise TypeError(f"{what} takes a str regex or a compiled str pattern, not {type(pattern).__name__}")


def _qualname(qualname: object, what: str) -> str:
    if not isinstance(qualname, str):
        raise TypeError(f"{what} takes a qualified name as str, not {type(qualname).__name__}")
    if (
        not qualname
        or qualname != qualname.strip()
        or "." not in qualname
        or qualname.startswith(".")
        or qualname.endswith(".")
        or ".." in qualname
    ):
        raise ValueError(
            f"{what} takes a module-qualified name such as 'socketserver.BaseServer.serve_forever', not {qualname!r}"
        )
    return qualname


def ignore_name(pattern: StackPattern) -> Matcher:
    """Ignore threads and tasks whose name matches ``pattern`` (``re.search``)."""
    return _NameMatcher(_regex(pattern, "ignore_name"))


def ignore_top_function(qualname: str) -> Matcher:
    """Ignore threads and tasks whose top function is ``qualname``.

    The top function is the innermost frame that is not a waiting primitive of
    the standard library (``threading.Condition.wait``, ``selectors`` and the
    like; the README lists them): a ``serve_forever`` thread waiting in its
    selector has ``"socketserver.BaseServer.serve_forever"`` on top.
    ``qualname`` is module-qualified.
    """
    return _TopFunctionMatcher(_qualname(qualname, "ignore_top_function"))


def ignore_any_function(qualname: str) -> Matcher:
    """Ignore threads and tasks with a frame running ``qualname`` anywhere in their stack."""
    return _AnyFunctionMatcher(_qualname(qualname, "ignore_any_function"))


def ignore_created_by(qualname: str) -> Matcher:
    """Ignore threads, tasks and processes started by code running ``qualname``: a frame of their creation stack.

    Creation stacks are recorded while tracking is on (see
    :func:`leakcheck.track_creation`); a resource tracking did not see start
    is never ignored by this rule.  ``qualname`` is module-qualified, such as
    ``"myapp.server.start_workers"``.
    """
    return _CreatedByMatcher(_qualname(qualname, "ignore_created_by"))


def validate_matchers(matchers: object, what: str = "ignore") -> Tuple[MatcherLike, ...]:
    """Check an ``ignore=`` value: a matcher, or an iterable of matchers."""
    if matchers == ():
        return ()
    if callable(matchers):
        return (matchers,)
    if isinstance(matchers, (str, bytes)) or not isinstance(matchers, Iterable):
        hint = " (use ignore_name() to ignore by name)" if isinstance(matchers, str) else ""
        raise TypeError(
            f"{what} takes matchers such as ignore_name('worker'), or callables, not {type(matchers).__name__}{hint}"
        )
    checked = tuple(matchers)
    for matcher in checked:
        if not callable(matcher):
            hint = " (use ignore_name() to ignore by name)" if isinstance(matcher, (str, re.Pattern)) else ""
            raise TypeError(f"{what} items must be matchers or callables, not {type(matcher).__name__}{hint}")
    return checked


class _StackPatternMatcher:
    __slots__ = ("_search", "source")

    def __init__(self, source: StackPattern) -> None:
        self.source = source
        if isinstance(source, str):
            needle = source
            self._search: Callable[[str], bool] = lambda text: needle in text
        else:
            regex = source
            self._search = lambda text: regex.search(text) is not None

    def matches(self, info: InfoRecord) -> bool:
        return self._search(live_block(info))

    def __repr__(self) -> str:
        return repr(self.source.pattern if isinstance(self.source, re.Pattern) else self.source)


def validate_patterns(patterns: object, what: str) -> Tuple[_StackPatternMatcher, ...]:
    """Check stack keywords: a str, a compiled pattern, or an iterable of those."""
    if patterns == ():
        return ()
    items: Iterable[object]
    if isinstance(patterns, (str, re.Pattern)):
        items = (patterns,)
    elif isinstance(patterns, Iterable) and not isinstance(patterns, bytes):
        items = tuple(patterns)
    else:
        raise TypeError(f"{what} takes str keywords or compiled patterns, not {type(patterns).__name__}")
    checked: List[_StackPatternMatcher] = []
    for item in items:
        if isinstance(item, str):
            if not item:
                raise ValueError(f"{what}: an empty keyword would match every stack")
        elif not (isinstance(item, re.Pattern) and isinstance(item.pattern, str)):
            raise TypeError(f"{what} items must be str or compiled str patterns, not {type(item).__name__}")
        checked.append(_StackPatternMatcher(item))
    return tuple(checked)


StackPatterns = Tuple[_StackPatternMatcher, ...]


_global_lock = threading.Lock()
_global_matchers: List[MatcherLike] = []


def ignore_globally(*matchers: MatcherLike) -> Callable[[], None]:
    """Register matchers for every later check in this process.

    Meant for ``conftest.py`` and for libraries whose background threads are
    process-wide singletons.  Returns a function that unregisters them again.
    """
    checked = validate_matchers(matchers, "ignore_globally")
    with _global_lock:
        _global_matchers.extend(checked)

    def unregister() -> None:
        with _global_lock:
            for matcher in checked:
                if matcher in _global_matchers:
                    _global_matchers.remove(matcher)

    return unregister


def global_matchers() -> Tuple[MatcherLike, ...]:
    """The matchers of :func:`ignore_globally`, which every check applies."""
    with _global_lock:
        return tuple(_global_matchers)


def builtin_ignores(noun: str) -> Tuple[MatcherLike, ...]:
    """The :data:`BUILTIN_IGNORES` for records of the kind ``noun`` (``"task"``), unless turned off."""
    if not _builtin_enabled:
        return ()
    return tuple(matcher for matcher in BUILTIN_IGNORES if getattr(matcher, "applies_to", noun) == noun)


def is_ignored(info: InfoRecord, matchers: Iterable[MatcherLike]) -> bool:
    return any(matcher(info) for matcher in matchers)
