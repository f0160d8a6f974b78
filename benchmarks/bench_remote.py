"""Cross-process checks benchmark: what a dump costs through the endpoint, against taking it in process.

Run from the repository root::

    python benchmarks/bench_remote.py              # 100 parked threads, 200 requests of each kind
    python benchmarks/bench_remote.py --threads 1000 --requests 50

It parks ``--threads`` threads in a function of their own and measures, in
one run and interleaved:

- ``snapshot()`` plus ``str()``: the bare baseline, no HTTP;
- a GET of the text dump from ``serve_stacks()`` (a new connection each time);
- ``fetch_snapshot()``: GET of the JSON form plus parsing it back;
- ``assert_no_stack_match(..., source=URL)`` on a keyword that matches nothing;
- a GET of the text dump while ``--silent`` clients (default 60) hold connections
  with a request that never ends, as a slowloris attack would: they take none
  of the server's 8 request threads, so the GET is served as usual;
- the text dump's size, and ``parse_dump()`` of it.

Medians and ratios to the baseline are printed; absolute times on shared
machines are noisy, the ratios less so.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import statistics
import sys
import threading
import time
import urllib.request
from typing import Callable, Dict, Iterator, List

from leakcheck import StackServer, assert_no_stack_match, fetch_snapshot, parse_dump, serve_stacks, snapshot


def parked_in_benchmark(release: threading.Event) -> None:
    release.wait()


def measure(work: Callable[[], object], rounds: int) -> List[float]:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return times


@contextlib.contextmanager
def silent_clients(server: StackServer, count: int) -> Iterator[None]:
    """``count`` connections that send the start of a request and then nothing, as a slowloris client does."""
    held = [socket.create_connection((server.host, server.port)) for _ in range(count)]
    try:
        for connection in held:
            connection.sendall(b"GET / HTTP/1.1\r\nX-Slow: ")
        yield
    finally:
        for connection in held:
            connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=100, help="parked threads in the dump (default 100)")
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind (default 200)")
    parser.add_argument("--silent", type=int, default=60, help="slow clients held for the last case (default 60)")
    args = parser.parse_args()
    if args.threads < 0 or args.requests < 1 or not 0 <= args.silent < 64:
        parser.error("--threads must be >= 0, --requests >= 1 and --silent between 0 and 63")

    release = threading.Event()
    threads = [
        threading.Thread(target=parked_in_benchmark, args=(release,), name=f"parked-{n}", daemon=True)
        for n in range(args.threads)
    ]
    for thread in threads:
        thread.start()
    try:
        with serve_stacks() as server:
            url = server.url
            text = str(snapshot())
            cases: Dict[str, Callable[[], object]] = {
                "snapshot() + str() (baseline)": lambda: str(snapshot()),
                "GET text dump": lambda: urllib.request.urlopen(url).read(),
                "fetch_snapshot() (JSON + parse)": lambda: fetch_snapshot(url),
                "assert_no_stack_match(source=URL)": lambda: assert_no_stack_match("no-such-" + "handler", source=url),
                "parse_dump() of the text": lambda: parse_dump(text),
            }
            results: Dict[str, List[float]] = {name: [] for name in cases}
            for _ in range(5):  # interleaved slices, so that a slow moment hits every case alike
                for name, work in cases.items():
                    results[name].extend(measure(work, max(1, args.requests // 5)))
                with silent_clients(server, args.silent):
                    slowed = f"GET text dump, {args.silent} silent clients"
                    results.setdefault(slowed, []).extend(measure(cases["GET text dump"], max(1, args.requests // 5)))
    finally:
        release.set()
        for thread in threads:
            thread.join()

    print(f"leakcheck remote benchmark: Python {sys.version.split()[0]}, {args.threads} parked threads")
    print(f"text dump: {len(text.encode()):,} bytes, {text.count(chr(10)):,} lines")
    base = statistics.median(results["snapshot() + str() (baseline)"])
    for name, times in results.items():
        middle = statistics.median(times)
        print(f"  {name:36} median {middle * 1e3:8.3f} ms   {middle / base:6.2f}x baseline")
    return 0


if __name__ == "__main__":
    sys.exit(main())
