"""Limits of the cross-process checks: one deadline per fetch, TLS, the agent's directory and stale sockets."""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
import wsgiref.simple_server
from typing import Callable, Iterator, List

import pytest

from leakcheck import RemoteError, fetch_snapshot, find_stacks, snapshot, start_agent, wsgi_app
from leakcheck._agent import socket_path

FETCH_TIMEOUT = 0.5
SLACK = 3.0  # a loaded CI machine may be late to wake; a per-read timeout would take far longer than this


class _Scripted:
    """A loopback TCP server that runs ``script(connection, stop)`` for each connection, in a thread."""

    def __init__(self, script: Callable[[socket.socket, threading.Event], None]) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self._script = script
        self._threads: List[threading.Thread] = []
        self._accepting = threading.Thread(target=self._accept, name="scripted-server")
        self._accepting.start()

    def _accept(self) -> None:
        while True:
            connection, _ = self.listener.accept()
            if self.stop.is_set():
                connection.close()
                return
            worker = threading.Thread(target=self._run, args=(connection,), name="scripted-connection")
            self._threads.append(worker)
            worker.start()

    def _run(self, connection: socket.socket) -> None:
        with connection:
            try:
                self._script(connection, self.stop)
            except OSError:
                pass  # the client gave up, as it should

    def close(self) -> None:
        self.stop.set()
        socket.create_connection(("127.0.0.1", self.port)).close()
        self._accepting.join(10)
        for worker in self._threads:
            worker.join(10)
        self.listener.close()


@pytest.fixture
def scripted() -> Iterator[Callable[..., _Scripted]]:
    servers: List[_Scripted] = []

    def start(script: Callable[[socket.socket, threading.Event], None]) -> _Scripted:
        servers.append(_Scripted(script))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def _read_request(connection: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def _trickle(connection: socket.socket, stop: threading.Event, data: bytes) -> None:
    """Send ``data`` a byte at a time, at most 300 bytes: 6 s, far beyond the fetch's deadline, yet bounded."""
    for byte in data[:300]:
        connection.sendall(bytes([byte]))
        if stop.wait(0.02):  # the pace of the trickle, far shorter than the fetch's timeout
            return


def _assert_gives_up_in_time(url: str) -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError, match=r"did not answer within 0\.5 s"):
        fetch_snapshot(url, timeout=FETCH_TIMEOUT)
    assert time.monotonic() - started < FETCH_TIMEOUT + SLACK


def test_a_server_trickling_its_body_cannot_outlast_the_timeout(scripted):
    body = snapshot().to_json().encode()

    def script(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body))
        _trickle(connection, stop, body)

    server = scripted(script)
    _assert_gives_up_in_time(f"http://127.0.0.1:{server.port}/")


def test_a_server_trickling_its_headers_cannot_outlast_the_timeout(scripted):
    def script(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        _trickle(connection, stop, b"HTTP/1.1 200 OK\r\n" + b"X-Slow: yes\r\n" * 30)

    server = scripted(script)
    _assert_gives_up_in_time(f"http://127.0.0.1:{server.port}/")


def test_a_silent_server_is_given_up_on_at_the_timeout(scripted):
    server = scripted(lambda connection, stop: stop.wait(10))
    _assert_gives_up_in_time(f"http://127.0.0.1:{server.port}/")


def test_a_tls_handshake_that_never_ends_cannot_outlast_the_timeout(scripted):
    server = scripted(lambda connection, stop: _trickle(connection, stop, b"\x16\x03\x01\x02\x00" + b"\x00" * 600))
    _assert_gives_up_in_time(f"https://127.0.0.1:{server.port}/")


def test_a_chunked_answer_is_read_whole(scripted):
    body = snapshot().to_json().encode()

    def script(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        pieces = [body[i : i + 700] for i in range(0, len(body), 700)]
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(piece), piece) for piece in pieces)
        connection.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n")

    server = scripted(script)
    fetched = fetch_snapshot(f"http://127.0.0.1:{server.port}/", timeout=10)
    assert "MainThread" in [info.name for info in fetched.threads]


def test_the_request_sent_carries_host_accept_and_the_token(scripted):
    seen: List[bytes] = []

    def script(connection: socket.socket, stop: threading.Event) -> None:
        seen.append(_read_request(connection))
        connection.sendall(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")

    server = scripted(script)
    with pytest.raises(RemoteError, match="401 Unauthorized: nope"):
        fetch_snapshot(f"http://127.0.0.1:{server.port}/debug/stacks?match=x", timeout=10, token="t0k")
    request = seen[0].decode("latin-1")
    assert request.startswith("GET /debug/stacks?match=x&format=json HTTP/1.1\r\n")
    assert f"\r\nHost: 127.0.0.1:{server.port}\r\n" in request
    assert "\r\nAuthorization: Bearer t0k\r\n" in request


# -- a real HTTPS endpoint, with a certificate made for the test


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    directory = tmp_path_factory.mktemp("tls")
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        capture_output=True,
        check=False,
    )  # fmt: skip
    if made.returncode != 0:
        pytest.skip(f"openssl could not make a certificate: {made.stderr[-300:]!r}")
    yield str(directory)


@pytest.fixture
def https_url(certificate: str) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.path.join(certificate, "cert.pem"), os.path.join(certificate, "key.pem"))
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, wsgi_app, handler_class=_QuietHandler)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    serving = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-https")
    serving.start()
    try:
        yield f"https://localhost:{httpd.server_port}/"
    finally:
        httpd.shutdown()
        serving.join(10)
        httpd.server_close()


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


def test_https_with_a_trusted_certificate_is_fetched(https_url, certificate, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", os.path.join(certificate, "cert.pem"))
    fetched = fetch_snapshot(https_url, timeout=10)
    assert "test-https" in [info.name for info in fetched.threads]


def test_https_with_an_untrusted_certificate_is_a_remote_error(https_url, monkeypatch):
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", "/nonexistent")
    with pytest.raises(RemoteError, match=r"CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
        fetch_snapshot(https_url, timeout=10)


# -- the agent: where it listens, and what it leaves behind


AGENT_CHILD = """
import sys, threading, leakcheck
def follow_logs():
    sys.stdin.readline()
threading.Thread(target=follow_logs, name="agent-follower").start()
print(leakcheck.start_agent(), flush=True)
"""


def test_the_agent_is_found_whatever_the_clients_environment(tmp_path):
    server_env = {**os.environ, "XDG_RUNTIME_DIR": str(tmp_path), "TMPDIR": str(tmp_path)}
    server_env.pop("LEAKCHECK_AGENT_DIR", None)
    with subprocess.Popen(
        [sys.executable, "-c", AGENT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=server_env
    ) as child:
        try:
            path = child.stdout.readline().strip()
            assert not path.startswith(str(tmp_path))  # the environment does not move the socket
            client_env = {key: value for key, value in os.environ.items() if key not in ("XDG_RUNTIME_DIR", "TMPDIR")}
            client_env.pop("LEAKCHECK_AGENT_DIR", None)
            result = subprocess.run(
                [sys.executable, "-m", "leakcheck", "stacks", str(child.pid), "--match", "follow_logs"],
                capture_output=True,
                text=True,
                timeout=60,
                env=client_env,
                check=False,
            )
            assert result.returncode == 0, result.stderr
            assert "Thread 'agent-follower'" in result.stdout
        finally:
            child.stdin.write("\n")
            child.stdin.close()
            child.wait(30)


def test_leakcheck_agent_dir_moves_the_socket_for_both_sides(tmp_path, monkeypatch):
    directory = tmp_path / "agents"
    monkeypatch.setenv("LEAKCHECK_AGENT_DIR", str(directory))
    env = {**os.environ, "LEAKCHECK_AGENT_DIR": str(directory)}
    with subprocess.Popen(
        [sys.executable, "-c", AGENT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        try:
            assert child.stdout.readline().strip() == str(directory / f"{child.pid}.sock")
            assert [info.name for info in find_stacks("follow_logs", source=child.pid)] == ["agent-follower"]
        finally:
            child.stdin.write("\n")
            child.stdin.close()
            child.wait(30)


def test_sockets_of_killed_processes_are_removed_when_an_agent_starts(tmp_path, monkeypatch):
    monkeypatch.setenv("LEAKCHECK_AGENT_DIR", str(tmp_path / "agents"))
    env = {**os.environ, "LEAKCHECK_AGENT_DIR": str(tmp_path / "agents")}
    with subprocess.Popen(
        [sys.executable, "-c", AGENT_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env
    ) as child:
        stale = child.stdout.readline().strip()
        child.kill()  # SIGKILL: no atexit, the socket stays
        child.wait(30)
    assert os.path.exists(stale)
    with pytest.raises(RemoteError, match=f"no process has pid {child.pid}"):
        find_stacks("x", source=child.pid)
    unrelated = tmp_path / "agents" / "notes.txt"
    unrelated.write_text("kept")
    from leakcheck import _agent

    monkeypatch.setattr(_agent, "_running", None)  # this process's own agent, if a test started one, elsewhere
    try:
        own = start_agent()
        assert own == socket_path(os.getpid())
        assert not os.path.exists(stale)
        assert unrelated.exists()
    finally:
        _agent.stop_agent()
