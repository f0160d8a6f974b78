"""leakcheck.kinds.threads.live_threads: the census's lock-free read of threading's private dicts."""

from __future__ import annotations

import threading

import helpers
import pytest

from leakcheck import no_leaks
from leakcheck.kinds.threads import ThreadKind, live_threads


@pytest.fixture
def parked_threads():
    """Three threads blocked on an event, released and joined afterwards."""
    with helpers.parked_threads() as parked:
        yield [parked.start(name=f"parked-{n}") for n in range(3)]


def test_lists_what_enumerate_lists(parked_threads):
    assert set(live_threads()) == set(threading.enumerate())
    assert set(parked_threads) <= set(live_threads())
    assert len(live_threads()) == len(set(live_threads()))


def test_lists_a_thread_that_is_still_starting(monkeypatch):
    starting = threading.Thread(target=lambda: None, name="starting")
    limbo = {starting: starting}  # where Thread.start() puts a thread before it runs
    monkeypatch.setattr(threading, "_limbo", limbo)
    assert starting in live_threads()
    assert threading.main_thread() in live_threads()


class _NotPlainDict(dict):  # type: ignore[type-arg]
    """What threading keeps in a version whose private dicts leakcheck does not know."""


@pytest.fixture
def unknown_threading_internals(monkeypatch):
    # Only _limbo is replaced: threads move out of it at once, so threading keeps working.
    monkeypatch.setattr(threading, "_limbo", _NotPlainDict(threading._limbo))


def test_falls_back_to_enumerate_without_the_private_dicts(unknown_threading_internals, parked_threads, monkeypatch):
    calls = []
    enumerate_threads = threading.enumerate

    def counting_enumerate():
        calls.append(1)
        return enumerate_threads()

    monkeypatch.setattr(threading, "enumerate", counting_enumerate)
    assert set(live_threads()) == set(enumerate_threads())
    assert calls == [1]
    assert set(parked_threads) <= set(live_threads())


def test_reads_the_private_dicts_without_enumerate(monkeypatch):
    def no_enumerate():
        raise AssertionError("live_threads() called threading.enumerate()")

    monkeypatch.setattr(threading, "enumerate", no_enumerate)
    assert threading.main_thread() in live_threads()


def test_a_check_still_finds_a_leak_with_the_fallback(unknown_threading_internals):
    release = threading.Event()
    leaked = threading.Thread(target=release.wait, name="fallback-leak", daemon=True)
    try:
        with pytest.raises(AssertionError, match="fallback-leak"), no_leaks(timeout=0):
            leaked.start()
    finally:
        release.set()
        leaked.join(5)


def test_a_clean_check_passes_with_the_fallback(unknown_threading_internals):
    with no_leaks(timeout=1):
        thread = threading.Thread(target=lambda: None, name="fallback-clean")
        thread.start()
        thread.join()


def test_never_misses_a_thread_started_before_the_census_while_others_start_and_end():
    stop = threading.Event()
    release = threading.Event()

    def churn() -> None:
        while not stop.is_set():
            thread = threading.Thread(target=lambda: None, daemon=True)
            thread.start()
            thread.join()

    churners = [threading.Thread(target=churn, name=f"churn-{n}", daemon=True) for n in range(2)]
    for thread in churners:
        thread.start()
    probe = ThreadKind()
    try:
        for round_number in range(200):
            steady = threading.Thread(target=release.wait, name=f"steady-{round_number}", daemon=True)
            steady.start()
            census = probe.census()
            assert all(ref() is not None for ref in census)
            assert any(ref() is steady for ref in census)
            assert not any(ref() is steady for ref in probe.new_since(census))
    finally:
        stop.set()
        release.set()
        for thread in churners:
            thread.join(5)
