"""Limits of the cross-process checks: one deadline per fetch, TLS, the agent's directory and stale sockets.

Also what a fetch makes of an answer that is not HTTP, and of a redirect: an error, never followed.
"""

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
from leakcheck.remote.agent import socket_path

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


def _assert_gives_up_in_time(url: str, reason: str = r"did not answer within 0\.5 s") -> None:
    started = time.monotonic()
    with pytest.raises(RemoteError, match=reason):
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


@pytest.mark.parametrize("answer", [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort"])
def test_an_answer_that_is_not_http_is_a_remote_error(scripted, answer):
    def script(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        connection.sendall(answer)

    url = f"http://127.0.0.1:{scripted(script).port}/"
    with pytest.raises(RemoteError, match="did not answer"):
        fetch_snapshot(url, timeout=5)
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "check", url, "--absent", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "did not answer" in result.stderr


def test_a_redirect_is_not_followed_and_the_token_goes_nowhere_else(scripted):
    received: List[bytes] = []

    def elsewhere(connection: socket.socket, stop: threading.Event) -> None:
        received.append(_read_request(connection))
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

    elsewhere_url = f"http://127.0.0.1:{scripted(elsewhere).port}/"

    def redirecting(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        connection.sendall(f"HTTP/1.1 302 Found\r\nLocation: {elsewhere_url}\r\nContent-Length: 0\r\n\r\n".encode())

    with pytest.raises(RemoteError, match="302"):
        fetch_snapshot(f"http://127.0.0.1:{scripted(redirecting).port}/", token="s3cret")
    assert received == []


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


# The main code ends at once, and the follower keeps the process alive: from Python 3.12 on no
# thread may start then, and the agent must still answer.
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
    from leakcheck.remote import agent as _agent

    monkeypatch.setattr(_agent, "_running", None)  # this process's own agent, if a test started one, elsewhere
    try:
        own = start_agent()
        assert own == socket_path(os.getpid())
        assert not os.path.exists(stale)
        assert unrelated.exists()
    finally:
        _agent.stop_agent()


# -- regressions from a second review, one test each


def _flood(connection: socket.socket, stop: threading.Event, head: bytes, repeated: bytes) -> None:
    _read_request(connection)
    connection.sendall(head)
    block = repeated * 2000
    deadline = time.monotonic() + 10  # bounded, should the client never give up
    while not stop.is_set() and time.monotonic() < deadline:
        connection.sendall(block)


@pytest.mark.parametrize(
    ("head", "repeated"),
    [
        (b"", b"HTTP/1.1 100 Continue\r\n\r\n"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n", b"X-Trailer: y\r\n"),
    ],
    ids=["continues", "trailers"],
)
def test_a_server_flooding_endless_headers_cannot_outlast_the_timeout(scripted, head, repeated):
    """http.client skips any number of interim answers and trailers, or (3.14+) gives up after 100."""
    server = scripted(lambda connection, stop: _flood(connection, stop, head, repeated))
    _assert_gives_up_in_time(
        f"http://127.0.0.1:{server.port}/",
        r"did not answer (within 0\.5 s|with HTTP: HTTPException\('got more than 100 (interim responses|trailers))",
    )


def test_an_ipv6_literal_url_is_fetched():
    try:
        with socket.create_connection(("::ffff:127.0.0.1", 9), timeout=1):
            pass
    except ConnectionRefusedError:
        pass  # IPv4-mapped addresses work here
    except OSError as problem:
        pytest.skip(f"no IPv4-mapped IPv6 here: {problem}")
    from leakcheck import serve_stacks

    with serve_stacks() as server:
        fetched = fetch_snapshot(f"http://[::ffff:127.0.0.1]:{server.port}/", timeout=10)
    assert "MainThread" in [info.name for info in fetched.threads]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork()")
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # 3.12+: fork() in a process with threads
def test_closing_in_the_parent_frees_the_port_although_a_forked_child_lives():
    from leakcheck import serve_stacks

    server = serve_stacks()
    address = (server.host, server.port)
    reader, writer = os.pipe()
    ready_reader, ready_writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child only says it runs, then waits for the parent's word
        os.close(writer)
        os.write(ready_writer, b"r")  # after the fork hooks, which closed the child's copies
        os.read(reader, 1)
        os._exit(0)
    os.close(reader)
    os.close(ready_writer)
    try:
        assert os.read(ready_reader, 1) == b"r"
        server.close()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(address, timeout=5).close()
    finally:
        os.close(writer)
        os.close(ready_reader)
        os.waitpid(child, 0)


def test_a_dump_with_a_crafted_expression_is_a_value_error_not_a_crash():
    head = "leakcheck snapshot of pid 1 (taken at 1.0): 1 thread, 0 tasks\n\n"
    thread = "Thread 'x' (ident=1, native_id=None, daemon=False) [running]:\n"
    from leakcheck import parse_dump

    for function in ["\\" + "+".join(["1"] * 200000), "\\" + "a" + ".b" * 200000, "\\'\\x'", "\\[1]"]:
        with pytest.raises(ValueError, match="line 4: bad escaped text"):
            parse_dump(f'{head}{thread}  File "f.py", line 1, in {function}\n')


def test_json_nested_too_deeply_is_a_value_error_and_a_remote_error(scripted):
    from leakcheck import Snapshot

    with pytest.raises(ValueError, match="nested too deeply"):
        Snapshot.from_json("[" * 100000)
    body = b'{"format":"leakcheck-snapshot","version":1,"pid":' + b"[" * 100000

    def script(connection: socket.socket, stop: threading.Event) -> None:
        _read_request(connection)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    server = scripted(script)
    with pytest.raises(RemoteError, match="nested too deeply"):
        fetch_snapshot(f"http://127.0.0.1:{server.port}/", timeout=10)


def test_the_agent_directory_is_one_fixed_place(monkeypatch):
    from leakcheck.remote.agent import agent_directory

    monkeypatch.delenv("LEAKCHECK_AGENT_DIR", raising=False)
    for variable in ("XDG_RUNTIME_DIR", "TMPDIR"):
        monkeypatch.setenv(variable, "/somewhere/else")
    assert agent_directory() == f"/tmp/leakcheck-{os.getuid()}"


def test_the_client_refuses_an_agent_directory_that_is_not_private(tmp_path, monkeypatch):
    loose = tmp_path / "agents"
    loose.mkdir()
    loose.chmod(0o755)
    monkeypatch.setenv("LEAKCHECK_AGENT_DIR", str(loose))
    planted = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    planted.bind(str(loose / f"{os.getpid()}.sock"))  # anyone able to write here could answer with forged stacks
    try:
        with pytest.raises(RemoteError, match="mode 0700"):
            find_stacks("MainThread", source=os.getpid())
    finally:
        planted.close()


def test_a_pid_too_large_for_the_system_is_no_process():
    with pytest.raises(RemoteError, match="no process has pid"):
        find_stacks("x", source=2**40)
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "check", str(2**40), "--absent", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2 and "no process has pid" in result.stderr


def test_a_url_with_a_user_or_password_is_refused():
    with pytest.raises(ValueError, match="user or password is not supported; use token="):
        fetch_snapshot("http://alice:s3cret@127.0.0.1:1/")
    with pytest.raises(ValueError, match="use token=") as raised:
        find_stacks("x", source="http://alice:s3cret@127.0.0.1:1/")
    assert "s3cret" not in str(raised.value)


def test_an_error_answer_to_head_has_no_body():
    from leakcheck import serve_stacks

    with serve_stacks(token="s3cret") as server, socket.create_connection((server.host, server.port), 10) as connection:
        connection.sendall(b"HEAD / HTTP/1.1\r\n\r\n")
        answer = b""
        while True:
            chunk = connection.recv(4096)
            if not chunk:
                break
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401 ")
    assert body == b""


def test_without_a_thread_to_spare_the_server_answers_itself(monkeypatch):
    import leakcheck.remote.server
    from leakcheck import serve_stacks

    real = leakcheck.remote.server.start_helper
    failures = [RuntimeError("can't start new thread")]

    def failing_once(target, name):
        if failures:
            raise failures.pop()
        return real(target, name)

    with serve_stacks() as server:
        monkeypatch.setattr(leakcheck.remote.server, "start_helper", failing_once)
        answered_inline = fetch_snapshot(server.url, timeout=10)
        assert not failures
        assert "MainThread" in [info.name for info in answered_inline.threads]
        assert "MainThread" in [info.name for info in fetch_snapshot(server.url, timeout=10).threads]
        assert "serving" in repr(server)


OUT_OF_DESCRIPTORS = """
import os, resource, socket, sys, threading, time, leakcheck
server = leakcheck.serve_stacks()
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
hoard = []
try:
    while True:
        hoard.append(socket.socket())
except OSError:
    pass
print(server.port, flush=True)  # only now: a client connecting earlier would be accepted
sys.stdin.readline()  # a client has connected: accept() now fails with EMFILE
before = time.process_time()
threading.Event().wait(1.0)
print(f"{time.process_time() - before:.3f}", flush=True)
resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))  # descriptors to spare at once, before the hoard goes
for sock in hoard:
    sock.close()
sys.stdin.readline()
"""


@pytest.mark.skipif(sys.platform != "linux", reason="needs Linux's RLIMIT_NOFILE behaviour")
def test_out_of_descriptors_the_server_pauses_instead_of_spinning():
    with subprocess.Popen(
        [sys.executable, "-c", OUT_OF_DESCRIPTORS], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    ) as child:
        try:
            port = int(child.stdout.readline())
            with socket.create_connection(("127.0.0.1", port), timeout=30) as waiting:
                waiting.sendall(b"GET /?match=MainThread HTTP/1.1\r\n\r\n")
                child.stdin.write("\n")
                child.stdin.flush()
                cpu = float(child.stdout.readline())
                assert cpu < 0.5  # spinning on a readable listener would use the whole second
                answer = waiting.makefile("rb").read()  # descriptors freed: the waiting client is served
            assert answer.startswith(b"HTTP/1.1 200 ") and b"MainThread" in answer
        finally:
            child.stdin.write("\n")
            child.stdin.close()
            child.wait(30)


@pytest.mark.parametrize("url", ["http://127.0.0.1:99999/", "http://127.0.0.1:port/"])
def test_a_bad_port_in_the_url_is_a_value_error_at_once(url):
    with pytest.raises(ValueError, match="bad port"):
        fetch_snapshot(url)
    result = subprocess.run(
        [sys.executable, "-m", "leakcheck", "stacks", url], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2 and "bad port" in result.stderr
