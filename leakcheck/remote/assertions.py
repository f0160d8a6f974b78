"""Keyword assertions on live stacks: the ``pprof ... | grep handler`` check.

They look at every live stack of this process except the caller's own (whose
stack holds the test that asks, and would match its own keywords), or, given
a ``source=``, at another process's: fetched again until the condition holds
or the timeout ends.  They live with the remote side because a ``source=``
needs it; this process's stacks come from :mod:`leakcheck.engine.stacks`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable, List, Optional, Sequence, Tuple

from ..engine.matching import StackPattern, StackPatterns, validate_patterns
from ..engine.options import check_timeout
from ..engine.stacks import live_described, matching_stacks, stack_kinds, stacks_gone
from ..engine.wait import Steps, backoff_deadlines, run_blocking
from ..kinds.base import InfoRecord, live_block
from ..kinds.registry import kinds
from ..reporting.report import LeakError, LeakReport
from ..reporting.snapshot import Snapshot

if TYPE_CHECKING:
    from .client import Source

REMOTE_POLL_CAP = 0.2
"""Longest pause between two fetches of another process's stacks."""
FETCH_TIMEOUT = 5.0


def _patterns(patterns: Sequence[StackPattern], what: str) -> StackPatterns:
    if not patterns:
        raise TypeError(f"{what} needs at least one keyword (a str or a compiled pattern)")
    return validate_patterns(patterns, what)


def _matching(taken: Snapshot, patterns: StackPatterns) -> List[InfoRecord]:
    registered = kinds()
    infos = [info for name, records in taken.records if registered[name].has_stacks for info in records]
    return [info for info in infos if any(p.matches(info) for p in patterns)]


def _poll_source(
    source: Source,
    token: Optional[str],
    patterns: StackPatterns,
    timeout: float,
    done: Callable[[List[InfoRecord]], bool],
) -> Tuple[List[InfoRecord], Snapshot, float]:
    """Fetch ``source`` until ``done(matches)`` or ``timeout``; the last matches, snapshot and time waited."""
    from .client import RemoteError, take
    from .endpoint import check_token

    secret = check_token(token)
    started = time.monotonic()
    deadline = started + timeout
    for slice_deadline in backoff_deadlines(deadline, first=0.01, cap=REMOTE_POLL_CAP):
        try:
            # Each fetch may use the time left, but at least a moment: a timeout of 0 still fetches once.
            taken = take(source, min(FETCH_TIMEOUT, max(deadline - time.monotonic(), 0.5)), secret)
        except RemoteError:
            if time.monotonic() >= deadline:
                raise  # never reached within the timeout: the last reason why
        else:
            found = _matching(taken, patterns)
            if done(found) or isinstance(source, Snapshot) or time.monotonic() >= deadline:
                return found, taken, time.monotonic() - started
        time.sleep(max(0.0, slice_deadline - time.monotonic()))  # the other process's stacks can only be polled
    raise AssertionError("unreachable")  # pragma: no cover


def _source(source: object, token: object, what: str) -> Optional[Source]:
    checked = None
    if source is not None:
        from .client import check_source

        checked = check_source(source, what)
    if token is not None and not isinstance(checked, str):
        raise TypeError(f"{what}: token= goes with a URL source=")
    return checked


def find_stacks(
    *patterns: StackPattern, source: Optional[Source] = None, token: Optional[str] = None
) -> List[InfoRecord]:
    """Every live thread and task whose dump block matches any of ``patterns``.

    A ``str`` is a substring, a compiled pattern is searched; both are applied
    to the block's header line (kind, name) and its stack.  With ``source``
    (a stack endpoint's URL, an agent's pid, or a :class:`Snapshot`), another
    process's stacks are searched; ``token`` is the endpoint's bearer token.
    """
    checked = _patterns(patterns, "find_stacks")
    remote = _source(source, token, "find_stacks")
    if remote is not None:
        return _poll_source(remote, token, checked, 0.0, lambda found: True)[0]
    return [info for _, _, info in matching_stacks(checked)]


def _gone_steps(patterns: StackPatterns, timeout: float) -> Steps[LeakReport]:
    started = time.monotonic()
    still_matching = yield from stacks_gone(patterns, started + timeout)
    return LeakReport(
        forbidden=tuple(still_matching),
        forbid=tuple(repr(p) for p in patterns),
        waited=time.monotonic() - started,
        timeout=timeout,
    )


def assert_no_stack_match(
    *patterns: StackPattern, timeout: float = 0.0, source: Optional[Source] = None, token: Optional[str] = None
) -> None:
    """Fail unless, within ``timeout`` seconds, no live stack matches ``patterns``.

    Returns as soon as the matching threads and tasks are gone; raises
    :class:`LeakError` listing every stack that still matches.  With
    ``source``, another process's stacks are fetched again until none
    matches; the error lists the stacks last fetched.
    """
    checked = _patterns(patterns, "assert_no_stack_match")
    seconds = check_timeout(timeout)
    remote = _source(source, token, "assert_no_stack_match")
    if remote is not None:
        found, _, waited = _poll_source(remote, token, checked, seconds, lambda found: not found)
        report = LeakReport(
            forbidden=tuple(found), forbid=tuple(repr(p) for p in checked), waited=waited, timeout=seconds
        )
    else:
        report = run_blocking(_gone_steps(checked, seconds))
    if report:
        raise LeakError(report)


def assert_stack_match(
    *patterns: StackPattern, timeout: float = 0.0, source: Optional[Source] = None, token: Optional[str] = None
) -> List[InfoRecord]:
    """Fail unless, within ``timeout`` seconds, some live stack matches ``patterns``.

    Use it for preconditions, e.g. that a handler is blocked right now.
    Returns the matching threads and tasks.  With ``source``, another
    process's stacks are fetched again until one matches; the error shows
    the stacks last fetched.
    """
    checked = _patterns(patterns, "assert_stack_match")
    seconds = check_timeout(timeout)
    wanted = ", ".join(repr(p) for p in checked)
    remote = _source(source, token, "assert_stack_match")
    if remote is not None:
        found, taken, _ = _poll_source(remote, token, checked, seconds, bool)
        if found:
            return found
        raise AssertionError(
            f"leakcheck: no stack matches {wanted} after {seconds:.2f}s; stacks of {taken.pid}:\n\n{taken}"
        )
    deadline = time.monotonic() + seconds
    for slice_deadline in backoff_deadlines(deadline):
        matched = matching_stacks(checked)
        if matched:
            return [info for _, _, info in matched]
        if time.monotonic() >= deadline:
            break
        time.sleep(max(0.0, slice_deadline - time.monotonic()))
    live = "\n".join(live_block(info) for _, _, info in live_described(stack_kinds()))
    raise AssertionError(f"leakcheck: no live stack matches {wanted} after {timeout:.2f}s; live stacks:\n\n{live}")
