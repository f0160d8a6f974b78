"""Serving the stack endpoint from a server of leakcheck's own: ``serve_stacks()``, and the agent's.

The built-in server is a small HTTP/1.1 server of its own rather than
``http.server``, so that its limits are leakcheck's to choose:

- a request line and each header line of at most 8 KiB, at most 64 headers,
  and 5 seconds to send them all;
- one server thread reads every arriving request without blocking, so a
  client that is slow, silent or has no token holds no thread; at most 64
  requests may be arriving at once, and a new one drops the oldest;
- only a complete, permitted request gets a request thread to take the
  snapshot: at most 8 at a time, and the 9th gets 503;
- one request per connection.

Its threads are leakcheck's helper threads, which no check ever reports.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import selectors
import socket
import threading
import time
import weakref
from types import TracebackType
from typing import Any, Dict, List, Optional, Tuple, Type, Union

from ..kinds.fds import own_fd, release_fd
from ..kinds.threads import start_helper
from .endpoint import Response, answer_query, check_token, error, never_raising, refusal

MAX_LINE = 8192
MAX_HEADERS = 64
REQUEST_TIMEOUT = 5.0
"""Seconds a client has to send its whole request."""
MAX_ARRIVING = 64
"""Requests that may be arriving at once; beyond this the oldest is dropped."""
MAX_CONNECTIONS = 8
"""Requests answered at once; beyond this a request gets 503."""
ACCEPT_PAUSE = 0.1
"""Seconds to stop accepting after ``accept()`` fails, out of descriptors say."""
WRITE_TIMEOUT = 30.0
"""Seconds to send one answer: a dump of thousands of threads, over a slow link."""

Request = Tuple[str, str, Dict[str, str]]
"""The method, target and headers (lower-case names) of a request."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Arriving:
    """A request whose head is still arriving: its lines so far, read without blocking.

    Each chunk is split where it holds a line break, so a client sending a
    byte at a time costs a constant amount of work per byte.
    """

    __slots__ = ("_lines", "_partial", "connection", "deadline")

    def __init__(self, connection: socket.socket, deadline: float) -> None:
        self.connection = connection
        self.deadline = deadline
        self._lines: List[bytes] = []
        self._partial = bytearray()

    @property
    def started(self) -> bool:
        return bool(self._lines or self._partial)

    @property
    def method(self) -> str:
        """The request's method as far as it has arrived: an error answer to ``HEAD`` has no body either."""
        first = self._lines[0] if self._lines else self._partial
        return bytes(first).partition(b" ")[0].decode("latin-1")

    def feed(self, chunk: bytes) -> Union[Request, Response, None]:
        """Take the next chunk; the request once its head is complete, an error answer, or ``None`` to read on."""
        self._partial += chunk
        if b"\n" in chunk:
            *complete, rest = self._partial.split(b"\n")
            self._partial = bytearray(rest)
            for line in complete:
                if len(line) >= MAX_LINE:  # with its line break, over the limit
                    return self._too_long()
                if self._lines and bytes(line) in (b"", b"\r"):
                    return _parse_head(self._lines)
                self._lines.append(bytes(line))
                if len(self._lines) > MAX_HEADERS + 1:
                    return error(431, "Request Header Fields Too Large", f"more than {MAX_HEADERS} headers")
        if len(self._partial) > MAX_LINE:
            return self._too_long()
        return None

    def _too_long(self) -> Response:
        if not self._lines:
            return error(414, "URI Too Long", f"the request line is longer than {MAX_LINE} bytes")
        return error(431, "Request Header Fields Too Large", f"a header line is longer than {MAX_LINE} bytes")


def _parse_head(lines: List[bytes]) -> Union[Request, Response]:
    """The request of a complete head (its lines without line breaks), or a 400."""
    parts = lines[0].decode("latin-1").rstrip("\r").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        return error(400, "Bad Request", "expected 'METHOD /path HTTP/1.1'")
    headers: Dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            return error(400, "Bad Request", "a header line is not 'Name: value'")
        headers[name.lower()] = value.strip()
    return parts[0], parts[1], headers


def _encode(response: Response, method: str) -> bytes:
    head = [f"HTTP/1.1 {response.status} {response.reason}"]
    head.extend(f"{name}: {value}" for name, value in response.headers)
    head.append("Connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return data if method == "HEAD" else data + response.body


def _send_short(connection: socket.socket, response: Response, method: str) -> None:
    """Send a short error answer without waiting, and close: it fits in the empty send buffer of a new connection."""
    with connection:
        try:
            connection.send(_encode(response, method))
        except OSError:
            pass  # the client has gone


def _close(resource: Any) -> None:
    """Close a socket, connection or selector of the server's, first giving up its descriptor as leakcheck's own."""
    try:
        fd = resource.fileno()
    except (OSError, ValueError):  # closed already
        fd = -1
    if fd >= 0:
        release_fd(fd)
    resource.close()


class StackServer:
    """The stack endpoint, served over HTTP from a daemon thread; see :func:`serve_stacks`.

    A context manager: leaving the ``with`` block closes it.
    """

    def __init__(self, listener: socket.socket, token: Optional[bytes], url: str) -> None:
        """Serve on ``listener``, which the server owns from now on, closing it should anything fail here."""
        made: List[Any] = [listener]
        try:
            listener.setblocking(False)
            self._wake_reader, self._wake_writer = socket.socketpair()
            made += [self._wake_reader, self._wake_writer]
            # selectors, not select.select(): a process with over 1,023 open files gets descriptors it
            # cannot take.  Made here, not in the server thread, so that running out raises here.
            self._selector = selectors.DefaultSelector()
            made.append(self._selector)
            self._selector.register(listener, selectors.EVENT_READ)
            self._selector.register(self._wake_reader, selectors.EVENT_READ)
            for resource in made:  # a check with fds=True never counts the endpoint's own descriptors
                own_fd(resource.fileno())
            self._start(listener, token, url)
        except BaseException:
            for resource in made:
                _close(resource)
            raise

    def _start(self, listener: socket.socket, token: Optional[bytes], url: str) -> None:
        self._listener = listener
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._token = token
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self._arriving: Dict[socket.socket, _Arriving] = {}  # oldest first
        self._answering: Dict[socket.socket, threading.Thread] = {}
        self._answering_lock = threading.Lock()
        self._paused_until: Optional[float] = None  # when accept() failed: when to try it again
        self.url = url
        """Where a GET returns the dump: ``http://host:port/``, or ``unix:PATH`` for the agent."""
        inet = listener.family in (socket.AF_INET, socket.AF_INET6)
        address = listener.getsockname() if inet else None
        self.host: Optional[str] = address[0] if address else None
        self.port: Optional[int] = address[1] if address else None
        self.pid = os.getpid()
        _close_in_forked_children(self)
        self._thread = start_helper(self._serve, f"leakcheck-stack-server {url}")

    def close(self) -> None:
        """Stop serving, release the port, cut the answers under way and wait for their threads.

        Calling it again does nothing.  In a forked child it does nothing at
        all: the sockets are the parent's.
        """
        with self._close_lock:
            if self._closed.is_set() or self.pid != os.getpid():
                return
            self._closed.set()
            try:
                self._wake_writer.send(b"x")
            except OSError:
                pass  # the server thread saw _closed first and has gone, closing the reading end
        with self._answering_lock:  # no answer starts after this: _start_answer sees _closed under this lock
            for connection in self._answering:
                try:
                    connection.shutdown(socket.SHUT_RDWR)  # under the lock: its thread cannot have closed it
                except OSError:
                    pass
            answering = [thread for thread in self._answering.values() if thread is not self._thread]
        if threading.current_thread() is not self._thread:
            self._thread.join(REQUEST_TIMEOUT)  # it only waits in select(), or answers itself within a deadline
        _close(self._wake_writer)
        for thread in answering:
            thread.join(REQUEST_TIMEOUT)

    def _close_inherited_sockets(self) -> None:
        """In a forked child: close its copies of the sockets, so that the parent's close() frees the port.

        No thread of the server's exists here, and its locks may have been
        held at the fork, so nothing is locked: each socket is only closed.
        """
        inherited = [self._listener, self._wake_reader, self._wake_writer, *self._arriving, *self._answering]
        for sock in inherited:
            _close(sock)
        _close(self._selector)

    def __enter__(self) -> StackServer:
        return self

    def __exit__(
        self, kind: Optional[Type[BaseException]], error: Optional[BaseException], trace: Optional[TracebackType]
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._closed.is_set() else "serving"
        return f"<StackServer {self.url} {state}{' with token' if self._token else ''}>"

    def _serve(self) -> None:
        try:
            while not self._closed.is_set():
                for key, _ in self._selector.select(self._until_next_event()):
                    if key.fileobj is self._wake_reader:
                        return
                    self._dispatch(key.data)
                self._drop_late()
                self._resume_accepting()
        finally:
            _close(self._selector)
            for arriving in self._arriving.values():
                _close(arriving.connection)
            self._arriving.clear()
            _close(self._listener)
            _close(self._wake_reader)

    def _dispatch(self, arriving: Optional[_Arriving]) -> None:
        try:
            if arriving is None:
                self._accept()
            else:
                self._read(arriving)
        except Exception:  # a bug of leakcheck's may cost one connection, never the endpoint
            if arriving is not None:
                if arriving.connection in self._arriving:
                    self._forget(arriving)
                _close(arriving.connection)

    def _until_next_event(self) -> Optional[float]:
        oldest = next(iter(self._arriving.values()), None)
        waits = [] if oldest is None else [oldest.deadline]
        if self._paused_until is not None:
            waits.append(self._paused_until)
        return max(0.0, min(waits) - time.monotonic()) if waits else None

    def _drop_late(self) -> None:
        now = time.monotonic()
        late = [arriving for arriving in self._arriving.values() if arriving.deadline <= now]
        for arriving in late:
            _close(self._forget(arriving))  # too slow: nobody waits for an answer

    def _forget(self, arriving: _Arriving) -> socket.socket:
        self._selector.unregister(arriving.connection)
        del self._arriving[arriving.connection]
        return arriving.connection

    def _accept(self) -> None:
        try:
            connection, _ = self._listener.accept()
            own_fd(connection.fileno())
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # the client gave up between select() and accept()
        except OSError:
            # Out of descriptors, say: the listener stays readable, and retrying at once would spin.
            self._selector.unregister(self._listener)
            self._paused_until = time.monotonic() + ACCEPT_PAUSE
            return
        connection.setblocking(False)
        if len(self._arriving) >= MAX_ARRIVING:
            _close(self._forget(next(iter(self._arriving.values()))))
        arriving = _Arriving(connection, time.monotonic() + REQUEST_TIMEOUT)
        self._arriving[connection] = arriving
        self._selector.register(connection, selectors.EVENT_READ, arriving)

    def _resume_accepting(self) -> None:
        if self._paused_until is not None and time.monotonic() >= self._paused_until:
            self._paused_until = None
            self._selector.register(self._listener, selectors.EVENT_READ)

    def _read(self, arriving: _Arriving) -> None:
        try:
            chunk = arriving.connection.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""  # reset by the client: like an end
        if chunk:
            request = arriving.feed(chunk)
            if request is None:
                return
        elif arriving.started:
            request = error(400, "Bad Request", "the request ends before the blank line after the headers")
        else:
            _close(self._forget(arriving))  # connected and left without a word
            return
        connection = self._forget(arriving)
        if isinstance(request, Response):
            _send_short(connection, request, arriving.method)
            return
        method, target, headers = request
        refused = refusal(method, headers, self._token)
        if refused is not None:
            _send_short(connection, refused, method)
        elif not self._slots.acquire(blocking=False):
            _send_short(connection, error(503, "Service Unavailable", "too many requests at once"), method)
        else:
            self._start_answer(connection, method, _query_of(target), headers)

    def _start_answer(self, connection: socket.socket, method: str, query: str, headers: Dict[str, str]) -> None:
        answer = functools.partial(self._send_stacks, connection, method, query, headers)
        with self._answering_lock:
            if self._closed.is_set():
                self._slots.release()
                _close(connection)
                return
            try:
                self._answering[connection] = start_helper(answer, "leakcheck-stack-request")
                return
            except RuntimeError:
                # No thread to be had: out of resources, or Python 3.12+ after the main code has ended
                # while other threads keep the process alive, just when an agent is wanted most.
                self._answering[connection] = threading.current_thread()
        # This thread answers itself, within the request deadline, while arriving requests wait.
        self._send_stacks(connection, method, query, headers, REQUEST_TIMEOUT)

    def _send_stacks(
        self,
        connection: socket.socket,
        method: str,
        query: str,
        headers: Dict[str, str],
        timeout: float = WRITE_TIMEOUT,
    ) -> None:
        try:
            response = never_raising(lambda: answer_query(query, headers))
            connection.settimeout(timeout)
            connection.sendall(_encode(response, method))
        except OSError:
            pass  # the client has gone, or close() cut the connection
        finally:
            with self._answering_lock:
                del self._answering[connection]
            _close(connection)
            self._slots.release()


_servers: weakref.WeakSet[StackServer] = weakref.WeakSet()
_fork_hook_registered = False


def _close_in_forked_children(server: StackServer) -> None:
    global _fork_hook_registered
    # Registered with the first server, not at import: importing leakcheck changes nothing.
    if not _fork_hook_registered and hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_close_inherited)
        _fork_hook_registered = True
    _servers.add(server)


def _close_inherited() -> None:
    for server in list(_servers):
        server._close_inherited_sockets()


def _query_of(target: str) -> str:
    # Not urlsplit(), which raises on some targets ("/[", say) in some Python versions.
    return target.partition("?")[2].partition("#")[0]


def serve_stacks(host: str = "127.0.0.1", port: int = 0, *, token: Optional[str] = None) -> StackServer:
    """Serve the stack endpoint on ``host:port`` (``port=0``: any free port) from a daemon thread.

    A GET returns the text dump of every thread and task; ``?format=json``
    returns JSON; each ``?match=KEYWORD`` keeps only the stacks containing a
    keyword.  Bound to loopback by default: any other host needs a ``token``,
    which clients send as ``Authorization: Bearer <token>``.  The server's
    threads are never reported as leaks.  Use the result as a context
    manager, or call its ``close()``.
    """
    if not isinstance(host, str):
        raise TypeError(f"host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"port must be an int, not {type(port).__name__}")
    if not 0 <= port <= 65535:
        raise ValueError(f"port must be between 0 and 65535, not {port}")
    secret = check_token(token)
    if secret is None and not is_loopback(host):
        raise ValueError(
            f"serving stacks on {host!r}, beyond this machine, needs a token: serve_stacks({host!r}, token=...)"
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.create_server((host, port), family=family)
    bound_host, bound_port = listener.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    return StackServer(listener, secret, f"http://{shown}:{bound_port}/")
