"""A connection never given back to its pool, caught by a leakcheck probe, then fixed.

leakcheck knows threads, tasks, processes and file descriptors, but not your
connection pool.  A *probe* tells it about one: an object with a ``name`` and a
``snapshot()`` that lists what is checked out right now, as a mapping from a
stable key (here the connection's number) to a description (here who took it,
and where).  ``no_leaks(probes=[...])`` lists the pool when the block starts
and again when it ends; a connection out at the end that was not out at the
start is a leak, after the same grace period as a thread: another thread may
still give it back.

The scenario: ``count_orders()`` checks a connection out of a small
thread-safe pool, and gives it back after its query, except on the early
return for a customer who has no account: that path forgets the connection.
Each such call keeps one connection out for good, until the pool is exhausted
and every caller blocks.

This script shows:

1. the leak caught by ``with no_leaks(probes=[PoolProbe(pool)])``; the report
   names the probe (``db-pool``), the connection's key, and the thread and line
   that checked it out;
2. the fix, ``count_orders_fixed()``: ``with pool.connection() as conn:`` gives
   the connection back on every path, so the same check passes.

Run it with ``python examples/connection_pool.py``: it exits 0 when the leak
was caught and the fix passed.
"""

from __future__ import annotations

import itertools
import os
import sqlite3
import sys
import threading
from types import TracebackType
from typing import Any, Dict, Hashable, List, Mapping, Optional, Tuple, Type

from leakcheck import LeakError, no_leaks

# A leak costs the whole grace period, so the leaky check uses a short one.  A
# clean check returns at once, so the fixed check can afford a generous one.
LEAK_GRACE = 0.2
FIXED_GRACE = 2.0


class PoolExhausted(RuntimeError):
    """Every connection stayed checked out for the whole of ``checkout(timeout=...)``."""


class Connection:
    """One database connection of a pool: ``id`` is its number in the pool, stable for its life."""

    def __init__(self, conn_id: int, database: str) -> None:
        self.id = conn_id
        # check_same_thread=False: a pooled connection is used by whichever thread checks it out.
        self._db = sqlite3.connect(database, uri=True, check_same_thread=False)

    def query(self, sql: str, *params: object) -> List[Tuple[Any, ...]]:
        return self._db.execute(sql, params).fetchall()

    def execute(self, sql: str, *params: object) -> None:
        with self._db:
            self._db.execute(sql, params)

    def close(self) -> None:
        self._db.close()

    def __repr__(self) -> str:
        return f"<Connection {self.id}>"


class ConnectionPool:
    """At most ``size`` connections to one database, opened on demand and reused.

    Thread-safe: ``checkout()`` blocks while all are out; ``give_back()``
    returns one; ``with pool.connection() as conn:`` does both.  Each
    checked-out connection records who took it and where, for :class:`PoolProbe`.
    """

    def __init__(self, database: str, size: int = 4) -> None:
        self._database = database
        self._size = size
        self._lock = threading.Condition()
        self._idle: List[Connection] = []
        self._out: Dict[int, Tuple[Connection, str]] = {}
        self._opened = 0
        self._closed = False

    def checkout(self, timeout: Optional[float] = None, *, stacklevel: int = 1) -> Connection:
        """A connection for the caller alone, until :meth:`give_back`.

        Raises :class:`PoolExhausted` if none is free within ``timeout``
        seconds (``None``: wait as long as it takes).  ``stacklevel`` says
        which caller to record, as for :func:`warnings.warn`.
        """
        taken_by = f"checked out by {threading.current_thread().name} at {_call_site(stacklevel + 1)}"
        with self._lock:
            if not self._lock.wait_for(self._can_check_out, timeout):
                raise PoolExhausted(f"all {self._size} connections are checked out: {self.checked_out()}")
            if self._closed:
                raise RuntimeError("the pool is closed")
            if self._idle:
                conn = self._idle.pop()
            else:
                self._opened += 1
                conn = Connection(self._opened, self._database)
            self._out[conn.id] = (conn, taken_by)
            return conn

    def give_back(self, conn: Connection) -> None:
        """Return a connection that :meth:`checkout` gave; the pool may hand it to the next caller."""
        with self._lock:
            if self._closed:  # close() closed it already
                return
            if self._out.get(conn.id, (None, ""))[0] is not conn:
                raise ValueError(f"{conn!r} is not checked out of this pool")
            del self._out[conn.id]
            self._idle.append(conn)
            self._lock.notify()

    def connection(self, timeout: Optional[float] = None) -> _Lease:
        """``with pool.connection() as conn:``: checked out on entry, given back on exit, however it exits."""
        return _Lease(self, timeout)

    def checked_out(self) -> Dict[int, str]:
        """Every connection out now: its id, and who checked it out where."""
        with self._lock:
            return {conn_id: taken_by for conn_id, (_, taken_by) in self._out.items()}

    def close(self) -> None:
        """Close every connection, the checked-out ones too: their holders' next query fails."""
        with self._lock:
            self._closed = True
            for conn in [*self._idle, *(conn for conn, _ in self._out.values())]:
                conn.close()
            self._idle.clear()
            self._out.clear()
            self._lock.notify_all()

    def _can_check_out(self) -> bool:
        return self._closed or bool(self._idle) or self._opened < self._size


class _Lease:
    """The context manager of :meth:`ConnectionPool.connection`."""

    def __init__(self, pool: ConnectionPool, timeout: Optional[float]) -> None:
        self._pool = pool
        self._timeout = timeout
        self._conn: Optional[Connection] = None

    def __enter__(self) -> Connection:
        self._conn = self._pool.checkout(self._timeout, stacklevel=2)
        return self._conn

    def __exit__(
        self, exc_type: Optional[Type[BaseException]], exc: Optional[BaseException], tb: Optional[TracebackType]
    ) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._pool.give_back(conn)


def _call_site(stacklevel: int) -> str:
    """``file:line in function`` of the frame ``stacklevel`` calls up (1: this function's caller); keeps no frame."""
    frame = sys._getframe(stacklevel)
    code = frame.f_code
    return f"{os.path.basename(code.co_filename)}:{frame.f_lineno} in {code.co_name}"


class PoolProbe:
    """A :class:`leakcheck.Probe` for a :class:`ConnectionPool`: its checked-out connections.

    The keys are the connections' ids (ints), never the connections
    themselves: a report or snapshot must not keep a connection alive, and
    an id stays the same for as long as the connection is out.
    """

    def __init__(self, pool: ConnectionPool, name: str = "db-pool") -> None:
        self.name = name
        self._pool = pool

    def snapshot(self) -> Mapping[Hashable, str]:
        # A copy taken under the pool's lock: the check reads it while other threads check out.
        return {conn_id: taken_by for conn_id, taken_by in self._pool.checked_out().items()}


# --- the application ----------------------------------------------------------


def create_schema(pool: ConnectionPool) -> None:
    with pool.connection() as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS accounts (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, account INTEGER)")
        conn.execute("INSERT OR REPLACE INTO accounts VALUES (1, 'ada')")
        conn.execute("INSERT OR REPLACE INTO orders VALUES (1, 1), (2, 1)")


def count_orders(pool: ConnectionPool, account: int) -> int:
    """The number of orders of ``account``; 0 for an unknown account."""
    conn = pool.checkout(timeout=5)
    if not conn.query("SELECT 1 FROM accounts WHERE id = ?", account):
        return 0  # BUG: this path never gives the connection back
    (count,) = conn.query("SELECT count(*) FROM orders WHERE account = ?", account)[0]
    pool.give_back(conn)
    return int(count)


def count_orders_fixed(pool: ConnectionPool, account: int) -> int:
    """The same, with the connection given back on every path."""
    with pool.connection(timeout=5) as conn:  # FIX: given back however the block exits
        if not conn.query("SELECT 1 FROM accounts WHERE id = ?", account):
            return 0
        (count,) = conn.query("SELECT count(*) FROM orders WHERE account = ?", account)[0]
        return int(count)


# --- the demo ----------------------------------------------------------------


_databases = itertools.count(1)


def new_pool() -> ConnectionPool:
    """A pool over a fresh in-memory database (shared by its connections), with the schema in place."""
    # A named in-memory database lives as long as a connection to it is open: the pool's.
    pool = ConnectionPool(f"file:orders-{os.getpid()}-{next(_databases)}?mode=memory&cache=shared", size=4)
    create_schema(pool)
    return pool


def check_leaky(pool: ConnectionPool, timeout: float = LEAK_GRACE) -> Optional[LeakError]:
    """Count the orders of a known and an unknown account inside ``no_leaks``; the error raised, if any."""
    try:
        with no_leaks(probes=[PoolProbe(pool)], timeout=timeout):
            assert count_orders(pool, 1) == 2
            assert count_orders(pool, 404) == 0
    except LeakError as error:
        return error
    return None


def check_fixed(pool: ConnectionPool, timeout: float = FIXED_GRACE) -> Optional[LeakError]:
    """The same with ``count_orders_fixed()``; the error raised, if any."""
    try:
        with no_leaks(probes=[PoolProbe(pool)], timeout=timeout):
            assert count_orders_fixed(pool, 1) == 2
            assert count_orders_fixed(pool, 404) == 0
    except LeakError as error:
        return error
    return None


def heading(text: str) -> None:
    print(f"\n=== {text} ===\n")


def run_demo() -> bool:
    """Print the demo; True when the leak was caught and the fix passed."""
    ok = True
    pool = new_pool()
    try:
        heading("1. Leaky count_orders(): the early return keeps its connection")
        print("Count the orders of account 1 (2 orders) and of account 404 (no such account).\n")
        error = check_leaky(pool)
        if error is not None and "count_orders" in str(error):
            print("Caught by no_leaks(probes=[PoolProbe(pool)]) (LeakError):\n")
            print(error)
        else:
            ok = False
            print(f"UNEXPECTED: no_leaks did not report the forgotten connection ({error!r})")
        print(f"Still checked out after the check: {pool.checked_out()}")
    finally:
        pool.close()

    heading("2. Fixed count_orders_fixed(): `with pool.connection()` gives it back on every path")
    pool = new_pool()
    try:
        error = check_fixed(pool)
        if error is None and not pool.checked_out():
            print("fixed count_orders passed no_leaks")
        else:
            ok = False
            print(f"UNEXPECTED: the fixed count_orders failed no_leaks:\n\n{error}")
    finally:
        pool.close()

    print()
    if ok:
        print("Result: the forgotten connection was caught, and the fixed count_orders passed.")
    else:
        print("Result: the demo did NOT behave as expected (see UNEXPECTED above).")
    return ok


def main() -> int:
    return 0 if run_demo() else 1


if __name__ == "__main__":
    sys.exit(main())
