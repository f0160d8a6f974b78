"""Keyword assertions on live stacks: the ``pprof ... | grep handler`` check.

They look at every live thread and task except the caller's own (whose stack
holds the test that asks, and would match its own keywords).
"""

from __future__ import annotations

import time
from typing import List, Sequence

from ._compare import PROBES, live_described, matching_stacks, stacks_gone
from ._matching import StackPattern, StackPatterns, validate_patterns
from ._model import Info, describe_block
from ._options import check_timeout
from ._report import LeakError, LeakReport
from ._wait import Steps, backoff_deadlines, run_blocking


def _patterns(patterns: Sequence[StackPattern], what: str) -> StackPatterns:
    if not patterns:
        raise TypeError(f"{what} needs at least one keyword (a str or a compiled pattern)")
    return validate_patterns(patterns, what)


def find_stacks(*patterns: StackPattern) -> List[Info]:
    """Every live thread and task whose dump block matches any of ``patterns``.

    A ``str`` is a substring, a compiled pattern is searched; both are applied
    to the block's header line (kind, name) and its stack.
    """
    return [info for _, _, info in matching_stacks(_patterns(patterns, "find_stacks"))]


def _gone_steps(patterns: StackPatterns, timeout: float) -> Steps[LeakReport]:
    started = time.monotonic()
    still_matching = yield from stacks_gone(patterns, started + timeout)
    return LeakReport(
        forbidden=tuple(still_matching),
        forbid=tuple(repr(p) for p in patterns),
        waited=time.monotonic() - started,
        timeout=timeout,
    )


def assert_no_stack_match(*patterns: StackPattern, timeout: float = 0.0) -> None:
    """Fail unless, within ``timeout`` seconds, no live stack matches ``patterns``.

    Returns as soon as the matching threads and tasks are gone; raises
    :class:`LeakError` listing every stack that still matches.
    """
    checked = _patterns(patterns, "assert_no_stack_match")
    report = run_blocking(_gone_steps(checked, check_timeout(timeout)))
    if report:
        raise LeakError(report)


def assert_stack_match(*patterns: StackPattern, timeout: float = 0.0) -> List[Info]:
    """Fail unless, within ``timeout`` seconds, some live stack matches ``patterns``.

    Use it for preconditions, e.g. that a handler is blocked right now.
    Returns the matching threads and tasks.
    """
    checked = _patterns(patterns, "assert_stack_match")
    deadline = time.monotonic() + check_timeout(timeout)
    for slice_deadline in backoff_deadlines(deadline):
        found = matching_stacks(checked)
        if found:
            return [info for _, _, info in found]
        if time.monotonic() >= deadline:
            break
        time.sleep(max(0.0, slice_deadline - time.monotonic()))
    live = "\n".join(describe_block(info) for _, _, info in live_described(PROBES))
    wanted = ", ".join(repr(p) for p in checked)
    raise AssertionError(f"leakcheck: no live stack matches {wanted} after {timeout:.2f}s; live stacks:\n\n{live}")
