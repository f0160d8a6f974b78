"""One HTTP GET within one deadline: how the client side fetches a stack endpoint or an agent.

``urllib`` applies its timeout to each read, so a server that trickles its
answer a byte at a time could hold a check for ever.  Here every step
(connecting, the TLS handshake, sending, each read) waits only for what is
left of one deadline.  ``http.client`` still parses the answer (status,
headers, ``Content-Length`` or chunked body); it reads through a socket
wrapper that keeps the deadline.  No proxy is consulted and no redirect
followed: the bearer token is for the endpoint alone.
"""

from __future__ import annotations

import functools
import http.client
import io
import selectors
import socket
import time
from typing import Any, Callable, Dict, Optional, Tuple, Type, TypeVar, cast

MAX_BODY = 64 * 1024 * 1024
"""Largest answer read: a dump of many thousands of threads fits."""

_T = TypeVar("_T")
_Errors = Tuple[Type[BaseException], ...]


class Deadline:
    """A point in time that every step of one exchange must finish by."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._end = time.monotonic() + timeout

    def remaining(self) -> float:
        """Seconds left; raises ``socket.timeout`` when there are none."""
        left = self._end - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out after {self.timeout:g} s")
        return left


class _Channel:
    """A non-blocking socket whose every wait ends at the deadline; what ``http.client`` reads and writes through."""

    def __init__(self, sock: socket.socket, deadline: Deadline, want_read: _Errors = (), want_write: _Errors = ()):
        sock.setblocking(False)
        self._sock = sock
        self._deadline = deadline
        self._want_read = want_read  # TLS may need to read before it can write, and the reverse
        self._want_write = want_write

    def _retry(self, operation: Callable[[], _T], blocked_on: int) -> _T:
        while True:
            self._deadline.remaining()  # also when nothing blocks: a server may flood endless headers
            try:
                return operation()
            except self._want_read:
                self._wait(selectors.EVENT_READ)
            except self._want_write:
                self._wait(selectors.EVENT_WRITE)
            except BlockingIOError:
                self._wait(blocked_on)

    def _wait(self, event: int) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, event)
            selector.select(self._deadline.remaining())  # woken early, the retry comes back here

    def handshake(self, operation: Callable[[], None]) -> None:
        self._retry(operation, selectors.EVENT_READ)

    def sendall(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[self._retry(functools.partial(self._sock.send, view), selectors.EVENT_WRITE) :]

    def recv_into(self, buffer: Any) -> int:
        return self._retry(lambda: self._sock.recv_into(buffer), selectors.EVENT_READ)

    def makefile(self, mode: str, *args: object, **kwargs: object) -> io.BufferedReader:
        return io.BufferedReader(_Reader(self))

    def close(self) -> None:
        pass  # http.client closes the connection while its response still reads: the caller closes the socket


class _Reader(io.RawIOBase):
    def __init__(self, channel: _Channel) -> None:
        self._channel = channel

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._channel.recv_into(buffer)


def _connect_tcp(host: str, port: int, deadline: Deadline) -> socket.socket:
    problem: OSError = OSError(f"{host} has no address")
    for family, kind, proto, _, address in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(address)
            return sock
        except OSError as failure:
            sock.close()
            problem = failure
            if isinstance(failure, socket.timeout):
                break  # the whole deadline is spent
    raise problem


def _open(
    url_parts: Tuple[str, str, int], unix_path: Optional[str], deadline: Deadline
) -> Tuple[socket.socket, _Channel]:
    scheme, host, port = url_parts
    if unix_path is not None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(deadline.remaining())
            sock.connect(unix_path)
        except BaseException:
            sock.close()
            raise
        return sock, _Channel(sock, deadline)
    sock = _connect_tcp(host, port, deadline)
    if scheme != "https":
        return sock, _Channel(sock, deadline)
    import ssl  # only for https: importing it costs more than a whole fetch on loopback

    try:
        secure = ssl.create_default_context().wrap_socket(sock, server_hostname=host, do_handshake_on_connect=False)
    except BaseException:
        sock.close()
        raise
    channel = _Channel(secure, deadline, (ssl.SSLWantReadError,), (ssl.SSLWantWriteError,))
    try:
        channel.handshake(secure.do_handshake)
    except BaseException:
        secure.close()
        raise
    return secure, channel


def get(
    url_parts: Tuple[str, str, int],
    target: str,
    headers: Dict[str, str],
    deadline: Deadline,
    unix_path: Optional[str] = None,
) -> Tuple[int, str, bytes]:
    """``GET target`` from ``(scheme, host, port)``, or over the Unix socket ``unix_path``; status, reason and body.

    The body is cut at ``MAX_BODY + 1`` bytes.  Name resolution is the
    system's and is not bounded by the deadline.  Raises ``socket.timeout``
    when the deadline passes, ``OSError`` when the connection fails, and
    ``http.client.HTTPException`` when the answer is not HTTP.
    """
    sock, channel = _open(url_parts, unix_path, deadline)
    with sock:
        # The host and port given here are never used: the socket is open, and the Host header is set.
        connection = http.client.HTTPConnection("localhost", 80)
        connection.sock = cast(socket.socket, channel)  # reads and writes keep the deadline; nothing reconnects
        connection.request("GET", target, headers=headers)
        response = connection.getresponse()
        chunks = []
        size = 0
        while size <= MAX_BODY:
            chunk = response.read(65536)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return response.status, response.reason, b"".join(chunks)
