"""User-defined probes (``probes=[...]``): the worked example, and the kind end to end.

Most tests use the example's own pool (``examples/connection_pool.py``),
loaded in process: a leak is a connection checked out inside the block and
not given back.  Tests that need odd names, keys or failures use
:class:`DictProbe`, a probe over a plain dict.  Nothing here sleeps: a
connection given back "later" is given back by a thread that waits for the
check to look at the pool.
"""

from __future__ import annotations

import importlib.util
import inspect
import pickle
import subprocess
import sys
import textwrap
import threading
import time
import unittest
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Dict, Hashable, Iterator, List, Mapping, Optional, Tuple

import pytest

import leakcheck
from leakcheck import LeakCheckTestCase, LeakError, ProbeInfo, Snapshot, find_leaks, ignore_name, no_leaks, snapshot

pytest_plugins = ["pytester"]

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "connection_pool.py"
GRACE = 0.05
LONG_GRACE = 10.0  # for checks that must end long before it: a clean check never waits it out
JOIN = 10.0
# As in test_pytest_plugin: plugins that cost time in every in-process session and do not matter here.
QUIET = ("-p", "no:hypothesispytest", "-p", "no:benchmark", "-o", "asyncio_default_fixture_loop_scope=function")


@cache
def example() -> ModuleType:
    name = "probes_example_connection_pool"
    spec = importlib.util.spec_from_file_location(name, EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def pool() -> Iterator[Any]:
    """A fresh pool of the example, closed (every connection, out or not) after the test."""
    made = example().new_pool()
    try:
        yield made
    finally:
        made.close()


def probe_of(pool: Any, name: str = "db-pool") -> Any:
    return example().PoolProbe(pool, name)


class DictProbe:
    """A probe that lists ``self.out``: tests put keys in and take them out."""

    def __init__(self, name: str = "db-pool", out: Optional[Mapping[Hashable, str]] = None) -> None:
        self.name = name
        self.out: Dict[Hashable, str] = dict(out or {})

    def snapshot(self) -> Mapping[Hashable, str]:
        return dict(self.out)


def probe_infos(error: LeakError) -> Tuple[ProbeInfo, ...]:
    infos = error.report.of("probes")
    assert all(isinstance(info, ProbeInfo) for info in infos)
    return infos  # type: ignore[return-value]


def line_of(function: Any, text: str) -> int:
    """The line number of the one line of ``function`` that holds ``text``."""
    lines, first = inspect.getsourcelines(function)
    (index,) = [i for i, line in enumerate(lines) if text in line]
    return first + index


def previous_line() -> int:
    """The number of the line before the caller's current line."""
    return sys._getframe(1).f_lineno - 1


# --- the example script -------------------------------------------------------


def test_example_script_reports_the_forgotten_connection_and_passes_the_fix() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    checkout_line = line_of(example().count_orders, "pool.checkout(")
    assert "Caught by no_leaks(probes=[PoolProbe(pool)]) (LeakError)" in out
    assert "leakcheck: 1 leaked probe resource (waited 0.2" in out
    assert "  - probe resource 'db-pool[1]'\n" in out
    assert (
        "Probe 'db-pool' key '1' [in use]:\n"
        f"  Description checked out by MainThread at connection_pool.py:{checkout_line} in count_orders\n"
    ) in out
    assert "give it back to db-pool before the block ends" in out
    assert "fixed count_orders passed no_leaks" in out
    assert "Result: the forgotten connection was caught, and the fixed count_orders passed." in out
    assert "UNEXPECTED" not in out
    assert result.stderr == ""


def test_example_leaky_check_names_the_connection_and_where_it_was_taken(pool: Any) -> None:
    error = example().check_leaky(pool, timeout=GRACE)
    assert isinstance(error, LeakError)
    checkout_line = line_of(example().count_orders, "pool.checkout(")
    assert probe_infos(error) == (
        ProbeInfo("db-pool", "1", f"checked out by MainThread at connection_pool.py:{checkout_line} in count_orders"),
    )
    assert error.report.threads == () and error.report.tasks == ()
    assert pool.checked_out() == {1: probe_infos(error)[0].description}


def test_example_fixed_check_passes_and_gives_every_connection_back(pool: Any) -> None:
    assert example().check_fixed(pool, timeout=LONG_GRACE) is None
    assert pool.checked_out() == {}


def test_example_pool_records_the_caller_of_connection_and_gives_back_on_error(pool: Any) -> None:
    with pytest.raises(KeyError), pool.connection() as conn:
        here = previous_line()
        assert pool.checked_out() == {
            conn.id: f"checked out by MainThread at test_probes.py:{here} in "
            "test_example_pool_records_the_caller_of_connection_and_gives_back_on_error"
        }
        raise KeyError("the block fails")
    assert pool.checked_out() == {}


def test_example_pool_reuses_connections_and_refuses_strangers(pool: Any) -> None:
    first = pool.checkout()
    pool.give_back(first)
    again = pool.checkout()
    assert again is first  # the same connection, so the same key: keys must be ids, stable while it is out
    pool.give_back(again)
    with pytest.raises(ValueError, match="is not checked out of this pool"):
        pool.give_back(again)


def test_example_pool_exhaustion_names_the_holders(pool: Any) -> None:
    taken = [pool.checkout() for _ in range(4)]
    with pytest.raises(example().PoolExhausted, match=r"all 4 connections are checked out: \{1: 'checked out by"):
        pool.checkout(timeout=0)
    for conn in taken:
        pool.give_back(conn)


# --- a leak is caught --------------------------------------------------------


def test_connection_kept_out_is_a_leak_naming_probe_key_and_description(pool: Any) -> None:
    probe = probe_of(pool)
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe], timeout=GRACE):
        conn = pool.checkout()
        taken_at = previous_line()
    (info,) = probe_infos(excinfo.value)
    description = (
        f"checked out by MainThread at test_probes.py:{taken_at} in "
        "test_connection_kept_out_is_a_leak_naming_probe_key_and_description"
    )
    assert (info.probe, info.key, info.description) == ("db-pool", repr(conn.id), description)
    assert info.name == f"db-pool[{conn.id!r}]"
    assert info.frames == ()
    text = str(excinfo.value.report)
    assert text == str(excinfo.value)
    assert text.startswith("leakcheck: 1 leaked probe resource (waited ")
    assert f"  - probe resource 'db-pool[{conn.id}]'\n" in text
    assert f"Probe 'db-pool' key '{conn.id}' [in use]:\n  Description {description}\n" in text
    assert (
        f"  * probe resource 'db-pool[{conn.id}]': give it back to db-pool before the block ends "
        "(release, close or return it).\n"
    ) in text
    assert f"ignore_name('^db-pool\\\\[{conn.id}\\\\]$')" in text


def test_only_what_the_block_checked_out_is_blamed(pool: Any) -> None:
    before = pool.checkout()
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool)], timeout=GRACE):
        during = pool.checkout()
    assert [info.key for info in probe_infos(excinfo.value)] == [repr(during.id)]
    assert before.id != during.id


def test_every_connection_kept_out_is_reported(pool: Any) -> None:
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool)], timeout=GRACE):
        taken = [pool.checkout() for _ in range(3)]
    assert sorted(info.key for info in probe_infos(excinfo.value)) == sorted(repr(conn.id) for conn in taken)
    assert str(excinfo.value).startswith("leakcheck: 3 leaked probe resources (")


# --- clean blocks ------------------------------------------------------------


def test_connection_given_back_inside_the_block_is_clean(pool: Any) -> None:
    probe = probe_of(pool)
    with no_leaks(probes=[probe], timeout=LONG_GRACE):
        with pool.connection():
            pass
        pool.give_back(pool.checkout())
    assert probe.snapshot() == {}
    # Nothing was left for a later check to find either.
    assert not find_leaks(snapshot(probes=[probe]), probes=[probe], timeout=0)


class WatchedProbe:
    """A probe of the example's pool that tells when the check has looked at the pool twice since ``arm()``.

    The first look after the block is the check's census; by the second the
    connection is a suspect the check waits for, and it keeps looking until
    it is given back or the grace period ends.
    """

    name = "db-pool"

    def __init__(self, pool: Any) -> None:
        self._inner = probe_of(pool)
        self._armed = False
        self._looks = 0
        self.looked_twice = threading.Event()

    def arm(self) -> None:
        self._armed = True

    def snapshot(self) -> Mapping[Hashable, str]:
        listing: Mapping[Hashable, str] = self._inner.snapshot()
        if self._armed:
            self._looks += 1
            if self._looks == 2:
                self.looked_twice.set()
        return listing


def test_connection_given_back_by_another_thread_during_the_grace_period_is_clean(pool: Any) -> None:
    probe = WatchedProbe(pool)
    handed_over: List[Any] = []
    gave_back = threading.Event()

    def give_back_when_the_check_waits() -> None:
        if probe.looked_twice.wait(JOIN):
            pool.give_back(handed_over[0])
            gave_back.set()

    # Started before the block, so the check has no thread of its own to wait for: only the connection.
    helper = threading.Thread(target=give_back_when_the_check_waits, name="giver", daemon=True)
    helper.start()
    try:
        with no_leaks(probes=[probe], timeout=LONG_GRACE):
            handed_over.append(pool.checkout())
            probe.arm()
            block_ended = time.monotonic()
        waited = time.monotonic() - block_ended
    finally:
        probe.looked_twice.set()
        helper.join(JOIN)
    assert gave_back.is_set()
    assert pool.checked_out() == {}
    assert waited < LONG_GRACE / 2, f"the check waited {waited:.2f}s: it did not end when the connection came back"


def test_probes_that_list_nothing_new_are_clean() -> None:
    busy = DictProbe("busy", {"old": "taken before the block"})
    with no_leaks(probes=[busy, DictProbe("idle")], timeout=LONG_GRACE):
        busy.out["new"] = "taken and given back inside"
        del busy.out["new"]


# --- several probes, and bad probes --------------------------------------------


def test_several_probes_in_one_check_each_reported_by_name(pool: Any) -> None:
    cache_probe = DictProbe("cache-locks")
    other_pool = example().new_pool()
    try:
        with (
            pytest.raises(LeakError) as excinfo,
            no_leaks(probes=[probe_of(pool), cache_probe, probe_of(other_pool, "replica-pool")], timeout=GRACE),
        ):
            pool.checkout()
            other_pool.checkout()
            cache_probe.out[("user", 42)] = "lock held by the session of user 42"
    finally:
        other_pool.close()
    infos = probe_infos(excinfo.value)
    assert [(info.probe, info.key) for info in infos] == [
        ("cache-locks", "('user', 42)"),
        ("db-pool", "1"),
        ("replica-pool", "1"),
    ]
    assert infos[0].description == "lock held by the session of user 42"
    text = str(excinfo.value)
    assert text.startswith("leakcheck: 3 leaked probe resources (")
    for header in (
        "Probe 'cache-locks' key \"('user', 42)\" [in use]:",
        "Probe 'db-pool' key '1' [in use]:",
        "Probe 'replica-pool' key '1' [in use]:",
    ):
        assert header in text
    assert "give it back to cache-locks before the block ends" in text
    assert "give it back to replica-pool before the block ends" in text


def test_two_probes_with_one_name_are_a_value_error(pool: Any) -> None:
    with pytest.raises(ValueError, match="two probes are named 'db-pool'"):
        no_leaks(probes=[probe_of(pool), DictProbe("db-pool")])


@pytest.mark.parametrize("not_a_probe", [object(), "db-pool", {"name": "db-pool"}, DictProbe])
def test_an_object_that_is_no_probe_is_a_type_error(not_a_probe: object) -> None:
    with pytest.raises(TypeError, match=r"is not a leakcheck\.Probe: it needs a name and a snapshot"):
        no_leaks(probes=[DictProbe("fine"), not_a_probe])  # type: ignore[list-item]


@pytest.mark.parametrize("probes", ["x", b"x", DictProbe("x"), {DictProbe("x")}, None])
def test_probes_that_is_no_list_is_a_type_error(probes: object) -> None:
    with pytest.raises(TypeError, match=r"probes must be a list of leakcheck\.Probe objects"):
        no_leaks(probes=probes)  # type: ignore[call-overload]


@pytest.mark.parametrize("name", [None, 5, b"db-pool"])
def test_a_probe_name_that_is_no_str_is_a_type_error(name: object) -> None:
    probe = DictProbe()
    probe.name = name  # type: ignore[assignment]
    with pytest.raises(TypeError, match=r"\.name must be a str"):
        no_leaks(probes=[probe])


def test_an_empty_probe_name_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="name"):
        no_leaks(probes=[DictProbe("")])


class ListingProbe:
    name = "lister"

    def snapshot(self) -> Any:
        return [1, 2]


def test_a_probe_whose_snapshot_is_no_mapping_is_a_type_error_naming_it() -> None:
    expected = r"^probe 'lister': snapshot\(\) must return a mapping, not list$"
    with pytest.raises(TypeError, match=expected), no_leaks(probes=[ListingProbe()]):
        pass


class PoolGone(Exception):
    pass


class BrokenProbe:
    """A probe whose ``snapshot()`` raises from its ``fail_from``-th call on (1: the first)."""

    name = "broken"

    def __init__(self, fail_from: int) -> None:
        self.fail_from = fail_from
        self.calls = 0
        self.error = PoolGone("the pool was closed under the probe")

    def snapshot(self) -> Mapping[Hashable, str]:
        self.calls += 1
        if self.calls >= self.fail_from:
            raise self.error
        return {}


@pytest.mark.parametrize("fail_from", [1, 2], ids=["when-the-block-starts", "when-it-ends"])
def test_an_error_in_snapshot_propagates_unchanged(fail_from: int) -> None:
    probe = BrokenProbe(fail_from)
    ran = []
    with pytest.raises(PoolGone) as excinfo, no_leaks(probes=[probe], timeout=GRACE):
        ran.append("body")
    assert excinfo.value is probe.error
    assert excinfo.value.__cause__ is None and excinfo.value.__context__ is None
    assert getattr(excinfo.value, "__notes__", []) == []
    assert ran == ([] if fail_from == 1 else ["body"])


# --- probes with other kinds ---------------------------------------------------


def test_a_leaked_thread_and_a_leaked_connection_in_one_report_threads_first(pool: Any) -> None:
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, name="orders-worker", daemon=True)
    try:
        with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool)], timeout=GRACE):
            conn = pool.checkout()
            worker.start()
    finally:
        stop.set()
        worker.join(JOIN)
    report = excinfo.value.report
    assert report.kinds == ("threads", "probes")
    assert [info.name for info in report.leaks] == ["orders-worker", f"db-pool[{conn.id}]"]
    assert [info.name for info in report.threads] == ["orders-worker"]
    text = str(report)
    assert text.startswith("leakcheck: 1 leaked thread, 1 leaked probe resource (")
    summaries = [line for line in text.splitlines() if line.startswith("  - ")]
    assert summaries[0].startswith("  - thread 'orders-worker' in ")
    assert summaries[1] == f"  - probe resource 'db-pool[{conn.id}]'"
    assert 0 < text.index("Thread 'orders-worker'") < text.index(f"Probe 'db-pool' key '{conn.id}' [in use]:")
    assert text.index("  * thread 'orders-worker': ") < text.index(f"  * probe resource 'db-pool[{conn.id}]': ")


def test_ignore_name_matches_probe_and_key(pool: Any) -> None:
    locks = DictProbe("cache-locks")
    ignored = ignore_name(r"^db-pool\[")
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool), locks], ignore=[ignored], timeout=GRACE):
        pool.checkout()
        locks.out["user:1"] = "held"
    assert [info.name for info in probe_infos(excinfo.value)] == ["cache-locks['user:1']"]
    assert "db-pool" not in str(excinfo.value)
    # Ignored, so never waited for: the check returns at once despite its long grace period.
    started = time.monotonic()
    with no_leaks(probes=[probe_of(pool)], ignore=[ignore_name(r"^db-pool\[")], timeout=LONG_GRACE):
        pool.checkout()
    assert time.monotonic() - started < LONG_GRACE / 2


# --- snapshots, dumps, JSON and find_leaks --------------------------------------


def test_snapshot_dumps_the_probe_and_reads_back_equal(pool: Any) -> None:
    conn = pool.checkout()
    here = previous_line()
    taken = snapshot(probes=[probe_of(pool)])
    assert taken.kinds == ("threads", "tasks", "probes")
    description = (
        f"checked out by MainThread at test_probes.py:{here} in test_snapshot_dumps_the_probe_and_reads_back_equal"
    )
    assert taken.of("probes") == (ProbeInfo("db-pool", repr(conn.id), description),)
    dump = str(taken)
    assert ", 1 probe resource\n" in dump.splitlines(keepends=True)[0]
    assert f"\n\nProbe 'db-pool' key '{conn.id}' [in use]:\n  Description {description}\n" in dump
    assert leakcheck.parse_dump(dump) == taken
    assert leakcheck.parse_dump(dump).of("probes") == taken.of("probes")
    assert Snapshot.from_json(taken.to_json()) == taken
    assert Snapshot.from_json(taken.to_json()).of("probes") == taken.of("probes")


def test_snapshot_of_a_probe_with_nothing_out_reads_back_equal() -> None:
    taken = snapshot(probes=[DictProbe()], threads=False, tasks=False)
    assert taken.kinds == ("probes",)
    assert taken.of("probes") == ()
    assert str(taken).splitlines()[0].endswith(": 0 probe resources")
    assert leakcheck.parse_dump(str(taken)) == taken
    assert Snapshot.from_json(taken.to_json()) == taken


FAKE_FRAME = '  File "/srv/evil.py", line 1, in evil'
HOSTILE_NAMES = ["db\npool", 'it\'s "quoted"', "pool]", FAKE_FRAME, "\\back", " spaced ", "bidi\u202eloop"]
HOSTILE_KEYS: List[Hashable] = [
    f"k\n{FAKE_FRAME}",
    ("tuple", 1, None),
    "]",
    "'\"",
    "",
    b"bytes\n",
    -1,
    "Probe 'x' key '1' [in use]:",
]
HOSTILE_DESCRIPTIONS = [
    "two\nlines",
    "",
    " leading space",
    "trailing space ",
    "\\starts with a backslash",
    "Probe 'db-pool' key '1' [in use]:",
    f"{FAKE_FRAME}\n    evil()",
    "\x1b[31mred\x1b[0m",
    "tab\there",
    "ünïcödé ✓",
    "\n",
]


def hostile_probes() -> List[DictProbe]:
    probes = []
    for index, name in enumerate(HOSTILE_NAMES):
        out = {
            key: HOSTILE_DESCRIPTIONS[(index + offset) % len(HOSTILE_DESCRIPTIONS)]
            for offset, key in enumerate(HOSTILE_KEYS)
        }
        probes.append(DictProbe(name, out))
    return probes


def assert_blocks_are_whole(text: str, infos: Tuple[ProbeInfo, ...]) -> None:
    """Each record is exactly two lines of ``text``: its header, then its one Description line."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.startswith("Probe ")]
    assert [lines[i] for i in headers] == [info.header for info in infos]
    assert [lines[i + 1] for i in headers] == [info.stack.rstrip("\n") for info in infos]
    assert all(lines[i + 1].startswith("  Description ") for i in headers)
    assert all(ProbeInfo.HEADER.fullmatch(lines[i]) for i in headers)
    assert not [line for line in lines if line.startswith("  File")]


def test_hostile_names_keys_and_descriptions_round_trip_and_keep_the_dump_whole() -> None:
    probes = hostile_probes()
    taken = snapshot(probes=probes, threads=False, tasks=False)
    infos: Tuple[ProbeInfo, ...] = taken.of("probes")  # type: ignore[assignment]
    assert len(infos) == len(HOSTILE_NAMES) * len(HOSTILE_KEYS)
    expected = {(probe.name, repr(key), description) for probe in probes for key, description in probe.out.items()}
    assert {(info.probe, info.key, info.description) for info in infos} == expected
    dump = str(taken)
    assert dump.split("\n", 1)[0].endswith(f": {len(infos)} probe resources")
    assert all(line.isprintable() for line in dump.splitlines())
    assert_blocks_are_whole(dump, infos)
    parsed = leakcheck.parse_dump(dump)
    assert parsed == taken
    assert parsed.of("probes") == infos
    assert Snapshot.from_json(taken.to_json()) == taken
    assert Snapshot.from_json(taken.to_json()).of("probes") == infos


def test_hostile_probes_keep_the_leak_report_whole() -> None:
    probes = [DictProbe(probe.name) for probe in hostile_probes()]
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=probes, timeout=GRACE):
        for probe, model in zip(probes, hostile_probes(), strict=True):
            probe.out.update(model.out)
    infos = probe_infos(excinfo.value)
    assert len(infos) == len(HOSTILE_NAMES) * len(HOSTILE_KEYS)
    text = str(excinfo.value)
    assert all(line.isprintable() for line in text.splitlines())
    # Identical descriptions make one group: the blocks shown are those of each group's first record.
    shown_blocks = [info for info in infos if f"{info.header}\n{info.stack}" in text]
    assert len(shown_blocks) == len({info.stack for info in infos})
    assert_blocks_are_whole(text, tuple(shown_blocks))


def test_find_leaks_with_a_baseline_that_captured_the_probe(pool: Any) -> None:
    probe = probe_of(pool)
    old = pool.checkout()
    baseline = snapshot(probes=[probe])
    assert not find_leaks(baseline, probes=[probe], timeout=0)
    new = pool.checkout()
    report = find_leaks(baseline, probes=[probe], timeout=GRACE)
    assert report.of("probes") == (ProbeInfo("db-pool", repr(new.id), pool.checked_out()[new.id]),)
    assert old.id != new.id
    assert "Probe 'db-pool' key" in str(report)


def test_find_leaks_with_a_baseline_without_probes_is_a_value_error(pool: Any) -> None:
    with pytest.raises(ValueError, match=r"needs a baseline that captured probes: take it with leakcheck\.snapshot"):
        find_leaks(snapshot(), probes=[probe_of(pool)])


def test_find_leaks_with_a_probe_the_baseline_lacks_is_a_value_error_naming_it(pool: Any) -> None:
    probe = probe_of(pool)
    baseline = snapshot(probes=[probe])
    with pytest.raises(ValueError, match=r"the baseline was taken without the probe 'replica'"):
        find_leaks(baseline, probes=[probe, DictProbe("replica")], timeout=0)


# --- each leak reported once, and again once it is given back and leaked again; records pickle


def test_a_connection_given_back_and_leaked_again_is_reported_again(pool: Any) -> None:
    probe = probe_of(pool)
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe], timeout=GRACE):
        conn = pool.checkout()
    assert [info.key for info in probe_infos(excinfo.value)] == ["1"]
    pool.give_back(conn)
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe], timeout=GRACE):  # this one does not raise
        again = pool.checkout()
    assert again is conn
    assert [info.key for info in probe_infos(excinfo.value)] == ["1"]


def test_a_leak_reported_by_an_inner_check_is_not_reported_again_by_the_enclosing_one(pool: Any) -> None:
    with no_leaks(probes=[probe_of(pool)], timeout=GRACE):
        with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool)], timeout=GRACE):
            conn = pool.checkout()
        assert [info.key for info in probe_infos(excinfo.value)] == [repr(conn.id)]


def test_probe_records_reports_and_snapshots_pickle(pool: Any) -> None:
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe_of(pool)], timeout=GRACE):
        pool.checkout()
    (info,) = probe_infos(excinfo.value)
    assert pickle.loads(pickle.dumps(info)) == info
    error = pickle.loads(pickle.dumps(excinfo.value))
    assert error.report == excinfo.value.report and str(error) == str(excinfo.value)
    taken = snapshot(probes=[probe_of(pool)])
    assert pickle.loads(pickle.dumps(taken)) == taken


def test_a_probe_named_probe_reports_its_leaks() -> None:
    probe = DictProbe("probe")
    with pytest.raises(LeakError) as excinfo, no_leaks(probes=[probe], timeout=GRACE):
        probe.out[1] = "checked out"
    assert [info.name for info in probe_infos(excinfo.value)] == ["probe[1]"]


def test_a_baseline_without_a_probe_is_refused_whatever_another_probe_lists() -> None:
    named_probe = DictProbe("probe", {"replica": "a key that happens to be another probe's name"})
    replica = DictProbe("replica", {"old": "out before the baseline was taken"})
    baseline = snapshot(probes=[named_probe])
    with pytest.raises(ValueError, match="the baseline was taken without the probe 'replica'"):
        find_leaks(baseline, probes=[named_probe, replica], timeout=0)


# --- the pytest marker and the unittest base class -------------------------------

INNER_TESTS = """
    import pytest


    class DictProbe:
        name = "db-pool"

        def __init__(self):
            self.out = {}

        def snapshot(self):
            return dict(self.out)


    PROBE = DictProbe()


    @pytest.mark.leakcheck(probes=[PROBE], timeout=0.05)
    def test_leaks():
        PROBE.out[7] = "checked out by test_leaks"


    @pytest.mark.leakcheck(probes=[PROBE], timeout=10)
    def test_gives_back():
        PROBE.out[8] = "checked out by test_gives_back"
        del PROBE.out[8]


    def test_unmarked_leaks_unchecked():
        PROBE.out[9] = "checked out by test_unmarked_leaks_unchecked"
"""


def test_pytest_marker_with_probes_fails_the_leaking_test_naming_the_key(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_inner=textwrap.dedent(INNER_TESTS))
    result = pytester.runpytest(*QUIET)
    result.assert_outcomes(passed=3, errors=1)
    out = str(result.stdout)
    reports = [line for line in result.outlines if line.startswith("leakcheck: ")]
    assert len(reports) == 1
    assert reports[0].startswith("leakcheck: test_inner.py::test_leaks: 1 leaked probe resource (")
    assert "Probe 'db-pool' key '7' [in use]:" in out
    assert "  Description checked out by test_leaks" in out
    assert "give it back to db-pool before the block ends" in out
    assert "key '8'" not in out and "key '9'" not in out
    result.stdout.fnmatch_lines(["*ERROR at teardown of test_leaks*"])


def run_case(case_class: type) -> unittest.TestResult:
    result = unittest.TestResult()
    unittest.TestLoader().loadTestsFromTestCase(case_class).run(result)
    return result


def test_leakcheck_testcase_with_probes_option_fails_the_leaking_test(pool: Any) -> None:
    probe = probe_of(pool)

    class Inner(LeakCheckTestCase):
        leakcheck_options: ClassVar[Dict[str, Any]] = {"probes": [probe], "timeout": GRACE}

        def test_gives_back(self) -> None:
            with pool.connection():
                pass

        def test_keeps_one(self) -> None:
            self.kept = pool.checkout()

    result = run_case(Inner)
    assert result.testsRun == 2
    assert result.errors == []
    failures = {test.id().rsplit(".", 1)[1]: text for test, text in result.failures}
    assert list(failures) == ["test_keeps_one"]
    assert "1 leaked probe resource" in failures["test_keeps_one"]
    assert "Probe 'db-pool' key '1' [in use]:" in failures["test_keeps_one"]
    assert "in test_keeps_one" in failures["test_keeps_one"]
    assert list(pool.checked_out()) == [1]
