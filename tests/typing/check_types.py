"""Static checks of the public API's types, run by ``mypy --strict`` in .ci/run.

Not a test module: pytest does not collect it.  ``assert_type`` fails the
mypy run when a decorator loses a signature or a return type; a misuse
line carries ``# type: ignore[code]``, which ``--strict`` reports as unused
(``warn_unused_ignores``) the day the misuse stops being a type error.
"""

from __future__ import annotations

import unittest
from typing import Hashable, Mapping, Optional, Tuple

from typing_extensions import assert_type

import leakcheck
from leakcheck import LeakCheck, LeakReport, Snapshot, no_leaks
from leakcheck.kinds.base import InfoRecord


@no_leaks
def plain(a: int, *, b: str = "") -> float:
    return 1.0


@no_leaks(timeout=0.5, on_leak="warn")
def configured(a: int) -> str:
    return str(a)


@no_leaks
async def coroutine(a: int) -> bytes:
    return b""


@no_leaks(tasks=False)
class Tests(unittest.TestCase):
    def test_it(self) -> None: ...


assert_type(plain(1, b="x"), float)
assert_type(configured(1), str)
assert_type(Tests, type[Tests])
assert_type(no_leaks(timeout=1), LeakCheck)
assert_type(leakcheck.snapshot(), Snapshot)
assert_type(leakcheck.find_leaks(leakcheck.snapshot()), LeakReport)


async def uses_coroutine() -> None:
    assert_type(await coroutine(1), bytes)



def on_leak(report: LeakReport) -> None:
    print(report.threads, report.tasks, report.forbidden)


assert_type(no_leaks(on_leak=on_leak), LeakCheck)


# -- kinds: every kind is a typed keyword of no_leaks, find_leaks and snapshot


class Pool:
    """A probe: anything with a name and a snapshot() of what is in use."""

    name = "pool"

    def snapshot(self) -> Mapping[Hashable, str]:
        return {}


probe: leakcheck.Probe = Pool()
assert_type(no_leaks(fds=True, processes=True, os_threads=True, probes=[probe]), LeakCheck)
assert_type(no_leaks(threads=False, tasks=False, fds=True), LeakCheck)
snap = leakcheck.snapshot(fds=True)
assert_type(snap, Snapshot)
assert_type(leakcheck.snapshot(processes=True, os_threads=True, probes=(probe,)), Snapshot)
assert_type(snap.dump(group=True), str)
snap.dump(True)  # type: ignore[call-arg]  # group is keyword-only
report = leakcheck.find_leaks(snap, fds=True, timeout=0.5)
assert_type(report, LeakReport)
assert_type(report.of("fds"), Tuple[InfoRecord, ...])
assert_type(snap.of("processes"), Tuple[InfoRecord, ...])
assert_type(report.leaks, Tuple[InfoRecord, ...])
assert_type(snap.kinds, Tuple[str, ...])
assert_type(report.threads, Tuple[leakcheck.ThreadInfo, ...])
assert_type(snap.tasks, Tuple[leakcheck.TaskInfo, ...])
fds: Tuple[InfoRecord, ...] = report.of("fds")


@no_leaks(fds=True, processes=True)
def checked_for_files(path: str) -> int:
    return len(path)


assert_type(checked_for_files("x"), int)

# -- creation tracking: an option of every entry point, a context manager and a plain call

assert_type(no_leaks(track_creation=True), LeakCheck)
assert_type(leakcheck.snapshot(track_creation=True, fds=True), Snapshot)
assert_type(leakcheck.find_leaks(snap, track_creation=False), LeakReport)
with leakcheck.track_creation() as tracking:
    assert_type(tracking, leakcheck.TrackCreation)
assert_type(leakcheck.track_creation(), leakcheck.TrackCreation)
assert_type(leakcheck.stop_tracking_creation(), None)
assert_type(leakcheck.is_tracking_creation(), bool)
assert_type(leakcheck.ignore_created_by("app.start_workers"), leakcheck.Matcher)
site = report.leaks[0].created
assert_type(site, Optional[leakcheck.CreationSite])
if site is not None:
    assert_type(site.frames, Tuple[leakcheck.Frame, ...])
    assert_type(site.blamed, Optional[leakcheck.Frame])

# Misuse: each line must be a type error (mypy --strict warns about an unused "type: ignore").
no_leaks(track_creation="yes")  # type: ignore[call-overload]
leakcheck.snapshot(track_creation=1)  # type: ignore[arg-type]
no_leaks(fds="yes")  # type: ignore[call-overload]
no_leaks(processes=1)  # type: ignore[call-overload]
no_leaks(probes=probe)  # type: ignore[call-overload]
no_leaks(sockets=True)  # type: ignore[call-overload]
leakcheck.find_leaks(snap, on_leak="warn")  # type: ignore[call-arg]
leakcheck.find_leaks(snap, fds="yes")  # type: ignore[arg-type]
leakcheck.find_leaks(snap, sockets=True)  # type: ignore[call-arg]
leakcheck.snapshot(timeout=1.0)  # type: ignore[call-arg]
leakcheck.snapshot(fds=1)  # type: ignore[arg-type]
