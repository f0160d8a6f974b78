"""Serving the stack endpoint: ``serve_stacks()`` and apps to mount in a WSGI or ASGI web app.

The built-in server is a small HTTP/1.1 server of its own rather than
``http.server``, so that its limits are leakcheck's to choose: a request line
and each header line of at most 8 KiB, at most 64 headers, 5 seconds to send
them, 8 requests at a time, one request per connection.  It runs in
leakcheck's helper threads, which no check ever reports.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import selectors
import socket
import threading
import time
from types import TracebackType
from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Type, Union

from ._endpoint import Response, check_token, error, respond
from ._threads import start_helper

MAX_LINE = 8192
MAX_HEADERS = 64
REQUEST_TIMEOUT = 5.0
MAX_CONNECTIONS = 8


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only: ``localhost`` or a loopback address."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _RequestReader:
    """Reads one request's lines from a socket, all within one deadline.

    A per-read timeout would let a client that trickles a byte at a time
    hold its connection, and one of the server's few slots, for ever.
    """

    def __init__(self, connection: socket.socket, timeout: float) -> None:
        self._connection = connection
        self._deadline = time.monotonic() + timeout
        self._buffer = b""

    def readline(self, limit: int) -> bytes:
        """One line, with its newline; at most ``limit`` bytes; ``b""`` if the client closed first."""
        while b"\n" not in self._buffer[:limit]:
            if len(self._buffer) >= limit:
                break
            remaining = self._deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError("the request took too long")
            self._connection.settimeout(remaining)
            chunk = self._connection.recv(4096)
            if not chunk:
                break
            self._buffer += chunk
        end = self._buffer.find(b"\n", 0, limit)
        cut = end + 1 if end >= 0 else min(limit, len(self._buffer))
        line, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return line


def _read_request(stream: Any) -> Union[Tuple[str, str, Dict[str, str]], Response, None]:
    """The method, target and headers of one request, an error answer, or ``None`` if the client left."""
    line = stream.readline(MAX_LINE + 1)
    if not line:
        return None
    if len(line) > MAX_LINE:
        return error(414, "URI Too Long", f"the request line is longer than {MAX_LINE} bytes")
    parts = line.decode("latin-1").rstrip("\r\n").split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        return error(400, "Bad Request", "expected 'METHOD /path HTTP/1.1'")
    headers: Dict[str, str] = {}
    for _ in range(MAX_HEADERS + 1):
        header = stream.readline(MAX_LINE + 1)
        if len(header) > MAX_LINE:
            return error(431, "Request Header Fields Too Large", f"a header line is longer than {MAX_LINE} bytes")
        if header in (b"\r\n", b"\n"):
            return parts[0], parts[1], headers
        if not header.endswith(b"\n"):
            return error(400, "Bad Request", "the headers end before the blank line")
        name, colon, value = header.decode("latin-1").partition(":")
        if not colon or not name or name != name.strip():
            return error(400, "Bad Request", "a header line is not 'Name: value'")
        headers[name.lower()] = value.strip()
    return error(431, "Request Header Fields Too Large", f"more than {MAX_HEADERS} headers")


def _encode(response: Response, method: str) -> bytes:
    head = [f"HTTP/1.1 {response.status} {response.reason}"]
    head.extend(f"{name}: {value}" for name, value in response.headers)
    head.append("Connection: close")
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    return data if method == "HEAD" else data + response.body


class StackServer:
    """The stack endpoint, served over HTTP from a daemon thread; see :func:`serve_stacks`.

    A context manager: leaving the ``with`` block closes it.
    """

    def __init__(self, listener: socket.socket, token: Optional[bytes], url: str) -> None:
        self._listener = listener
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._token = token
        self._closed = threading.Event()
        self._close_lock = threading.Lock()
        self.url = url
        """Where a GET returns the dump: ``http://host:port/``, or ``unix:PATH`` for the agent."""
        inet = listener.family in (socket.AF_INET, socket.AF_INET6)
        address = listener.getsockname() if inet else None
        self.host: Optional[str] = address[0] if address else None
        self.port: Optional[int] = address[1] if address else None
        self.pid = os.getpid()
        self._thread = start_helper(self._serve, f"leakcheck-stack-server {url}")

    def close(self) -> None:
        """Stop serving and release the port; calling it again does nothing.

        In a forked child it does nothing at all: the sockets are the parent's.
        """
        with self._close_lock:
            if self._closed.is_set() or self.pid != os.getpid():
                return
            self._closed.set()
            try:
                self._wake_writer.send(b"x")
            except OSError:
                pass  # the server thread saw _closed first and has gone, closing the reading end
        if threading.current_thread() is not self._thread:
            self._thread.join(REQUEST_TIMEOUT)
        self._wake_writer.close()

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
            # selectors, not select.select(): a process with over 1,023 open files gets descriptors it cannot take
            with selectors.DefaultSelector() as selector:
                selector.register(self._listener, selectors.EVENT_READ)
                selector.register(self._wake_reader, selectors.EVENT_READ)
                while not self._closed.is_set():
                    if any(key.fileobj is self._wake_reader for key, _ in selector.select()):
                        return
                    self._accept()
        finally:
            self._listener.close()
            self._wake_reader.close()

    def _accept(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return  # the client gave up between select() and accept()
        if self._slots.acquire(blocking=False):
            start_helper(functools.partial(self._handle, connection), "leakcheck-stack-request")
        else:
            self._refuse(connection)

    def _refuse(self, connection: socket.socket) -> None:
        with connection:
            try:
                connection.settimeout(0.5)
                connection.sendall(_encode(error(503, "Service Unavailable", "too many requests at once"), "GET"))
            except OSError:
                pass

    def _handle(self, connection: socket.socket) -> None:
        try:
            with connection:
                stream = _RequestReader(connection, REQUEST_TIMEOUT)
                method = "GET"
                try:
                    request = _read_request(stream)
                except (OSError, ValueError):  # a timeout, a reset: nobody to answer
                    return
                if request is None:
                    return
                if isinstance(request, Response):
                    response = request
                else:
                    method, target, headers = request
                    response = _answer(method, _query_of(target), headers, self._token)
                try:
                    connection.sendall(_encode(response, method))
                except OSError:
                    pass
        finally:
            self._slots.release()


def _query_of(target: str) -> str:
    # Not urlsplit(), which raises on some targets ("/[", say) in some Python versions.
    return target.partition("?")[2].partition("#")[0]


def _answer(method: str, query: str, headers: Mapping[str, str], token: Optional[bytes]) -> Response:
    try:
        return respond(method, query, headers, token)
    except Exception as problem:  # a bug of leakcheck's must not stop the endpoint, nor reach the host app
        return error(500, "Internal Server Error", type(problem).__name__)


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


# -- mounting in an existing web app

StartResponse = Callable[..., Any]


def wsgi_app(environ: Mapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The stack endpoint as a WSGI application, to mount at any path of a WSGI app (Flask, Django).

    It has no token of its own: mount it behind the app's own authentication.
    """
    method = str(environ.get("REQUEST_METHOD", "GET"))
    headers = {"authorization": str(environ.get("HTTP_AUTHORIZATION", ""))}
    response = _answer(method, str(environ.get("QUERY_STRING", "")), headers, None)
    start_response(f"{response.status} {response.reason}", response.headers)
    return [] if method == "HEAD" else [response.body]


Receive = Callable[[], Awaitable[Dict[str, Any]]]
Send = Callable[[Dict[str, Any]], Awaitable[None]]


async def asgi_app(scope: Dict[str, Any], receive: Receive, send: Send) -> None:
    """The stack endpoint as an ASGI application, to mount at any path of an ASGI app (FastAPI, Starlette).

    It has no token of its own: mount it behind the app's own authentication.
    """
    if scope.get("type") == "lifespan":
        while True:
            message = await receive()
            if message.get("type") == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message.get("type") == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope.get("type") == "websocket":
        await send({"type": "websocket.close", "code": 1003})
        return
    if scope.get("type") != "http":
        return
    method = str(scope.get("method", "GET"))
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    headers: Dict[str, str] = {}
    for name, value in scope.get("headers", []):
        headers[bytes(name).decode("latin-1").lower()] = bytes(value).decode("latin-1")
    response = _answer(method, query, headers, None)
    encoded: List[Tuple[bytes, bytes]] = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": encoded})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})
