"""A log-following HTTP handler that leaks its thread, caught by leakcheck, then fixed.

The scenario is the Python form of a classic Go leak (a ``logsContainer``
handler stuck after its client left):

* A small HTTP server (the standard library's ``ThreadingHTTPServer``, one
  thread per request) serves ``GET /logs?follow=1``.  The handler sends the
  log lines written so far, then waits for new ones and streams them, like
  ``tail -f``.
* A client reads the first line and hangs up.
* The leaky handler, ``LeakyLogHandler.follow_logs``, waits in
  ``subscription.get()``.  While the log is quiet no line arrives, so it never
  writes again, never sees that the client has gone, and its thread stays
  blocked forever.  Every such client costs one thread, for good.

This script shows the leak caught twice:

1. by ``no_leaks()``, which reports every thread the request left behind,
   with its full stack pointing at ``follow_logs``;
2. by ``assert_no_stack_match("follow_logs")``, the one-line form of
   ``curl .../debug/pprof/goroutine?debug=2 | grep logsContainer``;

then shows the fix, ``FixedLogHandler.follow_logs``, passing both checks.  It
waits for log lines with a timeout and, each time the wait times out, checks
whether the client has closed its connection (the socket turns readable and a
peek reads end-of-file); if so it returns, and its thread ends.

Run it with ``python examples/log_follow_server.py``: it exits 0 when the leak
was caught and the fix passed.  ``--serve`` runs the server on its own until it
is interrupted or terminated, printing its URL first (``--fixed`` picks the
fixed handler, ``--port`` the port); use it to watch the leak from outside.
The server mounts leakcheck's stack endpoint at ``/debug/stacks``, so another
process can check it::

    python -m leakcheck check http://127.0.0.1:PORT/debug/stacks --absent follow_logs
"""

from __future__ import annotations

import argparse
import queue
import select
import signal
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any, List, Optional, Sequence, Tuple, Type
from urllib.parse import parse_qs, urlsplit

from leakcheck import LeakError, assert_no_stack_match, no_leaks, wsgi_app

SAMPLE_LOG = (
    "INFO  service started",
    "INFO  listening on :8080",
    "WARN  cache miss rate above 20%",
)

HANDLER_THREAD_NAME = "log-handler"
STACKS_PATH = "/debug/stacks"

# A leak costs the whole grace period, so the leaky checks use a short one.  A
# clean check returns the moment the handler has ended, so the fixed checks can
# afford a generous one.
LEAK_GRACE = 0.2
FIXED_GRACE = 2.0

# How long the client waits for the handler to reach its waiting point.
HANDSHAKE_TIMEOUT = 10.0


class LogBroker:
    """An in-process log: keeps the lines written so far and fans new ones out to subscribers."""

    def __init__(self, lines: Sequence[str] = ()) -> None:
        self._lock = threading.Lock()
        self._history: List[str] = list(lines)
        self._subscribers: List[queue.Queue[Optional[str]]] = []
        self._closed = False

    def publish(self, line: str) -> None:
        with self._lock:
            self._history.append(line)
            for subscriber in self._subscribers:
                subscriber.put(line)

    def history(self) -> List[str]:
        with self._lock:
            return list(self._history)

    def subscribe(self) -> Tuple[List[str], queue.Queue[Optional[str]]]:
        """The lines so far, and a queue that receives every later line (``None`` once closed)."""
        subscription: queue.Queue[Optional[str]] = queue.Queue()
        with self._lock:
            if self._closed:
                subscription.put(None)
            self._subscribers.append(subscription)
            return list(self._history), subscription

    def unsubscribe(self, subscription: queue.Queue[Optional[str]]) -> None:
        with self._lock:
            if subscription in self._subscribers:
                self._subscribers.remove(subscription)

    def close(self) -> None:
        """Wake every subscriber with ``None``: the log has ended."""
        with self._lock:
            self._closed = True
            for subscriber in self._subscribers:
                subscriber.put(None)


class LogHTTPServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1 serving a :class:`LogBroker`.

    ``follower_waiting`` is set each time a follow handler has sent everything
    it had and starts waiting for more: the demo's client hangs up only then,
    so the leak does not depend on timing.
    """

    daemon_threads = True  # a safety net: a leaked handler never keeps the process alive

    def __init__(self, handler_class: Type[BaseHTTPRequestHandler], broker: LogBroker, port: int = 0) -> None:
        self.broker = broker
        self.follower_waiting = threading.Event()
        self.followers: List[threading.Thread] = []
        self._followers_lock = threading.Lock()
        super().__init__(("127.0.0.1", port), handler_class)

    def add_follower(self, thread: threading.Thread) -> None:
        with self._followers_lock:
            self.followers.append(thread)

    def live_followers(self) -> List[threading.Thread]:
        with self._followers_lock:
            return [thread for thread in self.followers if thread.is_alive()]


class LogHandlerBase(BaseHTTPRequestHandler):
    """``GET /logs`` sends the log; ``GET /logs?follow=1`` keeps streaming it (see subclasses)."""

    server: LogHTTPServer

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == STACKS_PATH:
            self.serve_stacks_endpoint(url.query)
            return
        if url.path != "/logs":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.end_headers()
        if parse_qs(url.query).get("follow") != ["1"]:
            for line in self.server.broker.history():
                self.send_line(line)
            return
        thread = threading.current_thread()
        thread.name = HANDLER_THREAD_NAME
        self.server.add_follower(thread)
        self.follow_logs()

    def do_HEAD(self) -> None:
        url = urlsplit(self.path)
        if url.path == STACKS_PATH:
            self.serve_stacks_endpoint(url.query)
        else:
            self.send_error(405)

    def serve_stacks_endpoint(self, query: str) -> None:
        """leakcheck's stack endpoint, mounted at ``/debug/stacks`` through its WSGI app.

        The Python form of Go's ``/debug/pprof/goroutine?debug=2``.  A real
        service would put it behind its own authentication.
        """
        environ = {
            "REQUEST_METHOD": self.command,
            "PATH_INFO": STACKS_PATH,
            "QUERY_STRING": query,
            "HTTP_AUTHORIZATION": self.headers.get("Authorization", ""),
        }
        answer: List[Any] = []
        body = b"".join(wsgi_app(environ, lambda status, headers: answer.extend((status, headers))))
        status, headers = answer
        self.send_response(int(status.split()[0]))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def follow_logs(self) -> None:
        raise NotImplementedError

    def send_line(self, line: str) -> None:
        self.wfile.write(line.encode() + b"\n")

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep the demo's output readable


class LeakyLogHandler(LogHandlerBase):
    def follow_logs(self) -> None:
        backlog, subscription = self.server.broker.subscribe()
        try:
            for line in backlog:
                self.send_line(line)
            while True:
                self.server.follower_waiting.set()
                # BUG: once the client has gone and the log is quiet, this waits forever.
                line = subscription.get()
                if line is None:  # the log has ended
                    return
                self.send_line(line)
        finally:
            self.server.broker.unsubscribe(subscription)


class FixedLogHandler(LogHandlerBase):
    poll_interval = 0.05  # seconds between checks for a client that has hung up

    def follow_logs(self) -> None:
        backlog, subscription = self.server.broker.subscribe()
        try:
            for line in backlog:
                self.send_line(line)
            while True:
                self.server.follower_waiting.set()
                try:
                    line = subscription.get(timeout=self.poll_interval)
                except queue.Empty:
                    # FIX: no news; stop if the client has hung up meanwhile.
                    if self.client_disconnected():
                        return
                    continue
                if line is None:
                    return
                try:
                    self.send_line(line)
                except (BrokenPipeError, ConnectionError):
                    return
        finally:
            self.server.broker.unsubscribe(subscription)

    def client_disconnected(self) -> bool:
        """Whether the client has closed its side of the connection.

        A closed connection turns readable and a peek at it reads nothing
        (end of file) or fails (connection reset).
        """
        readable, _, _ = select.select([self.connection], [], [], 0)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True


class LogServer:
    """A :class:`LogHTTPServer` running in a background thread, as a context manager.

    Closing it ends the log, so every follow handler (even a leaked one) wakes
    and ends, waits for those handlers, then shuts the server down.
    """

    def __init__(self, handler_class: Type[LogHandlerBase], broker: Optional[LogBroker] = None, port: int = 0) -> None:
        self.broker = broker if broker is not None else LogBroker(SAMPLE_LOG)
        self.httpd = LogHTTPServer(handler_class, self.broker, port)
        self._serving: Optional[threading.Thread] = None

    @property
    def address(self) -> Tuple[str, int]:
        host, port = self.httpd.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://{host}:{port}"

    def start(self) -> LogServer:
        # A short poll interval lets close() stop the server quickly.
        self._serving = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="log-server", daemon=True
        )
        self._serving.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self.broker.close()
        for thread in self.httpd.followers:
            thread.join(timeout)
        stuck = self.httpd.live_followers()
        if self._serving is not None:
            self.httpd.shutdown()
            self._serving.join(timeout)
            self._serving = None
        self.httpd.server_close()
        if stuck:
            raise RuntimeError(f"{len(stuck)} log handler thread(s) did not end after the log was closed")

    def __enter__(self) -> LogServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def follow_then_disconnect(server: LogServer, lines: int = 1) -> List[str]:
    """Open ``/logs?follow=1``, read the first ``lines`` log lines, then hang up.

    Hangs up only once the handler has sent what it had and waits for more.
    Returns the lines read.
    """
    server.httpd.follower_waiting.clear()
    with socket.create_connection(server.address, timeout=HANDSHAKE_TIMEOUT) as connection:
        connection.sendall(b"GET /logs?follow=1 HTTP/1.1\r\nHost: demo\r\n\r\n")
        with connection.makefile("rb") as reader:
            status = reader.readline()
            if not status.startswith(b"HTTP/1.") or b" 200 " not in status:
                raise RuntimeError(f"unexpected response: {status!r}")
            while reader.readline() not in (b"\r\n", b"\n", b""):
                pass  # headers
            received = [reader.readline().decode().rstrip("\n") for _ in range(lines)]
        if not server.httpd.follower_waiting.wait(HANDSHAKE_TIMEOUT):
            raise RuntimeError("the log handler never started waiting for new lines")
    # The connection is closed: the client has gone.
    return received


def check_with_no_leaks(handler_class: Type[LogHandlerBase], timeout: float) -> Optional[LeakError]:
    """One follow-then-disconnect request inside ``no_leaks``; the error it raised, if any."""
    with LogServer(handler_class) as server:
        try:
            with no_leaks(timeout=timeout):
                follow_then_disconnect(server)
        except LeakError as error:
            return error
    return None


def check_with_stack_match(handler_class: Type[LogHandlerBase], timeout: float) -> Optional[LeakError]:
    """One follow-then-disconnect request, then ``assert_no_stack_match("follow_logs")``."""
    with LogServer(handler_class) as server:
        follow_then_disconnect(server)
        try:
            assert_no_stack_match("follow_logs", timeout=timeout)
        except LeakError as error:
            return error
    return None


def heading(text: str) -> None:
    print(f"\n=== {text} ===\n")


def run_demo() -> bool:
    """Print the demo; True when the leak was caught twice and the fix passed twice."""
    ok = True

    heading("1. Leaky handler, checked with no_leaks()")
    print("A client follows /logs, reads one line and hangs up; the handler thread stays blocked.\n")
    error = check_with_no_leaks(LeakyLogHandler, LEAK_GRACE)
    if error is not None and "follow_logs" in str(error):
        print("Caught by no_leaks (LeakError):\n")
        print(error)
    else:
        ok = False
        print(f"UNEXPECTED: no_leaks did not report the leaked follow_logs handler ({error!r})")

    heading('2. Leaky handler, checked with assert_no_stack_match("follow_logs")')
    print("The same request again; then no live stack may mention follow_logs.\n")
    error = check_with_stack_match(LeakyLogHandler, LEAK_GRACE)
    if error is not None and "follow_logs" in str(error):
        print("Caught by assert_no_stack_match (LeakError):\n")
        print(error)
    else:
        ok = False
        print(f"UNEXPECTED: assert_no_stack_match did not report follow_logs ({error!r})")

    heading("3. Fixed handler: notices the disconnect and returns")
    error = check_with_no_leaks(FixedLogHandler, FIXED_GRACE)
    if error is None:
        print("fixed handler passed no_leaks")
    else:
        ok = False
        print(f"UNEXPECTED: the fixed handler failed no_leaks:\n\n{error}")
    error = check_with_stack_match(FixedLogHandler, FIXED_GRACE)
    if error is None:
        print('fixed handler passed assert_no_stack_match("follow_logs")')
    else:
        ok = False
        print(f"UNEXPECTED: the fixed handler failed assert_no_stack_match:\n\n{error}")

    print()
    if ok:
        print("Result: the leak was caught by both checks, and the fixed handler passed both.")
    else:
        print("Result: the demo did NOT behave as expected (see UNEXPECTED above).")
    return ok


def _exit_on_sigterm(signum: int, frame: Optional[FrameType]) -> None:
    raise SystemExit(0)


def serve(handler_class: Type[LogHandlerBase], port: int) -> int:
    """Serve until interrupted or terminated, then release every handler and shut down."""
    server = LogServer(handler_class, port=port)
    kind = "fixed" if handler_class is FixedLogHandler else "leaky"
    signal.signal(signal.SIGTERM, _exit_on_sigterm)  # before the URL is out: a client may terminate us at once
    print(
        f"serving {server.url}/logs?follow=1 with the {kind} handler; stacks at {server.url}{STACKS_PATH}", flush=True
    )
    try:
        server.httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", action="store_true", help="run the server until interrupted, printing its URL")
    parser.add_argument("--fixed", action="store_true", help="with --serve: use the fixed handler")
    parser.add_argument("--port", type=int, default=0, help="with --serve: the port (default: any free port)")
    args = parser.parse_args(argv)
    if args.serve:
        return serve(FixedLogHandler if args.fixed else LeakyLogHandler, args.port)
    return 0 if run_demo() else 1


if __name__ == "__main__":
    sys.exit(main())
