"""The stack endpoint: serve_stacks() over HTTP, and wsgi_app / asgi_app mounted in a host app.

Every test looks for a culprit by name (a parked thread, a named task, a
function) in what comes back, so a dump that stopped listing threads, or a
filter that stopped filtering, fails here.  Raw sockets check the server's
limits and that nothing a client sends makes it answer 5xx.
"""

from __future__ import annotations

import asyncio
import json
import select
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
import wsgiref.simple_server
from email.message import Message
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple

import helpers
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import leakcheck
import leakcheck.remote.endpoint
import leakcheck.remote.server
from leakcheck import (
    LeakError,
    Snapshot,
    StackServer,
    asgi_app,
    no_leaks,
    parse_dump,
    serve_stacks,
    snapshot,
    wsgi_app,
)
from leakcheck.remote.server import MAX_ARRIVING

# Culprit names live in constants, never as literals in a test's own lines: the
# test's source lines appear in MainThread's stack, and ?match= would find them there.
FOLLOWER = "log-follower"
FLUSHER = "metrics-flusher"
BYSTANDER = "cache-warmer"
TOKEN = "t0ken-9f2c41d7e8"  # fixed: parameter ids must be the same in every xdist worker
TIMEOUT = 10.0
ALLOW = "GET, HEAD"

# urllib honours *_proxy variables; requests to our own loopback server must not go through one.
OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# -- helpers


def fetch(url: str, *, method: str = "GET", headers: Optional[Mapping[str, str]] = None) -> Tuple[int, Message, bytes]:
    """Status, headers and body of one request; a non-2xx answer is returned, not raised."""
    request = urllib.request.Request(url, headers=dict(headers or {}), method=method)
    try:
        with OPENER.open(request, timeout=TIMEOUT) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as answer:
        with answer:
            return answer.code, answer.headers, answer.read()


def exchange(host: str, port: int, data: bytes, *, timeout: float = TIMEOUT, shut_write: bool = True) -> bytes:
    """Send ``data`` on a fresh connection and read whatever comes back until the server closes."""
    chunks: List[bytes] = []
    with socket.create_connection((host, port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
            if shut_write:
                sock.shutdown(socket.SHUT_WR)  # so that an unfinished request reaches EOF
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading everything
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break  # closed with our bytes unread: what came before the reset is the answer
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def split_response(raw: bytes) -> Tuple[int, Dict[str, str], bytes]:
    assert raw.startswith(b"HTTP/1.1 "), raw[:120]
    head, blank, body = raw.partition(b"\r\n\r\n")
    assert blank, f"no end of headers in {raw[:200]!r}"
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers: Dict[str, str] = {}
    for line in header_lines:
        name, colon, value = line.partition(":")
        assert colon, line
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split(" ")[1]), headers, body


def thread_names(dump: Snapshot) -> List[str]:
    return [info.name for info in dump.threads]


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    pause = threading.Event()
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return condition()
        pause.wait(0.05)
    return True


# -- fixtures


@pytest.fixture
def server() -> Iterator[StackServer]:
    with serve_stacks() as running:
        yield running


@pytest.fixture
def parked() -> Iterator[helpers.ParkedThreads]:
    with helpers.parked_threads() as threads:
        yield threads


# -- 1. GET, formats, match=, HEAD


def test_get_returns_a_text_dump_naming_a_parked_thread(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, headers, body = fetch(server.url)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    assert headers["Cache-Control"] == "no-store"
    dump = parse_dump(body.decode("utf-8"))
    assert FOLLOWER in thread_names(dump)
    assert "MainThread" in thread_names(dump)
    # the server's own threads, the listener and the one answering, are never in the dump
    assert "leakcheck-stack" not in body.decode("utf-8")


def start_follower(parked: helpers.ParkedThreads) -> None:
    """Starts the follower thread: the creation site a tracking target's dump names."""
    parked.start(name=FOLLOWER)


@pytest.mark.parametrize("form", ["text", "json"])
def test_a_tracking_target_serves_creation_sites(parked: helpers.ParkedThreads, form: str) -> None:
    with leakcheck.track_creation(), serve_stacks() as running:
        start_follower(parked)
        status, _, body = fetch(running.url + f"?format={form}")
    assert status == 200
    dump = parse_dump(body.decode("utf-8")) if form == "text" else Snapshot.from_json(body)
    (follower,) = [info for info in dump.threads if info.name == FOLLOWER]
    assert follower.created is not None
    assert follower.created.blamed is not None
    assert follower.created.blamed.function == "helpers.ParkedThreads.start"  # the innermost frame outside the stdlib
    assert "test_server.start_follower" in [frame.function for frame in follower.created.frames]


def test_a_target_that_does_not_track_serves_no_creation_sites(
    server: StackServer, parked: helpers.ParkedThreads
) -> None:
    start_follower(parked)
    status, _, body = fetch(server.url)
    assert status == 200
    assert "Created at" not in body.decode("utf-8")
    assert all(info.created is None for info in parse_dump(body.decode("utf-8")).threads)


def test_url_names_the_bound_port(server: StackServer) -> None:
    assert server.port > 0
    assert server.url == f"http://127.0.0.1:{server.port}/"
    assert repr(server) == f"<StackServer {server.url} serving>"


def test_format_json_returns_a_snapshot(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, headers, body = fetch(server.url + "?format=json")
    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert int(headers["Content-Length"]) == len(body)
    dump = Snapshot.from_json(body)
    assert FOLLOWER in thread_names(dump)
    assert "MainThread" in thread_names(dump)


def test_format_text_is_the_default_spelled_out(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, headers, body = fetch(server.url + "?format=text")
    assert status == 200
    assert headers["Content-Type"].startswith("text/plain")
    assert FOLLOWER in thread_names(parse_dump(body.decode("utf-8")))


def test_match_keeps_only_the_matching_stacks(server: StackServer, parked: helpers.ParkedThreads) -> None:
    for name in (FOLLOWER, FLUSHER, BYSTANDER):
        parked.start(name=name)
    status, _, body = fetch(server.url + "?match=" + FOLLOWER)
    assert status == 200
    assert thread_names(parse_dump(body.decode("utf-8"))) == [FOLLOWER]

    status, _, body = fetch(f"{server.url}?match={FOLLOWER}&match={FLUSHER}")
    assert status == 200
    assert sorted(thread_names(parse_dump(body.decode("utf-8")))) == sorted([FOLLOWER, FLUSHER])

    status, _, body = fetch(f"{server.url}?format=json&match={FLUSHER}")
    assert status == 200
    assert thread_names(Snapshot.from_json(body)) == [FLUSHER]


def test_match_that_matches_nothing_is_an_empty_dump(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, _, body = fetch(server.url + "?match=" + uuid.uuid4().hex)
    assert status == 200
    dump = parse_dump(body.decode("utf-8"))
    assert dump.threads == () and dump.tasks == ()


def test_head_sends_the_headers_of_get_and_no_body(server: StackServer) -> None:
    raw = exchange(server.host, server.port, b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = split_response(raw)
    assert status == 200
    assert headers["content-type"] == "text/plain; charset=utf-8"
    assert int(headers["content-length"]) > 0
    assert body == b""


@pytest.mark.parametrize(
    ("query", "content_type"), [("", "text/plain; charset=utf-8"), ("?format=json", "application/json")]
)
def test_head_content_length_is_that_of_get(
    server: StackServer, parked: helpers.ParkedThreads, monkeypatch: pytest.MonkeyPatch, query: str, content_type: str
) -> None:
    # Two live dumps differ (the time, the stacks), so both requests are served one fixed snapshot.
    parked.start(name=FOLLOWER)
    fixed = snapshot()
    monkeypatch.setattr(leakcheck.remote.endpoint, "snapshot", lambda **options: fixed)
    get_status, get_headers, get_body = split_response(
        exchange(server.host, server.port, f"GET /{query} HTTP/1.1\r\n\r\n".encode())
    )
    head_status, head_headers, head_body = split_response(
        exchange(server.host, server.port, f"HEAD /{query} HTTP/1.1\r\n\r\n".encode())
    )
    assert get_status == head_status == 200
    assert get_headers["content-type"] == head_headers["content-type"] == content_type
    assert int(head_headers["content-length"]) == int(get_headers["content-length"]) == len(get_body) > 0
    assert head_body == b""
    assert FOLLOWER.encode() in get_body


def test_head_through_urllib(server: StackServer) -> None:
    status, headers, body = fetch(server.url, method="HEAD")
    assert status == 200
    assert int(headers["Content-Length"]) > 0
    assert body == b""


# -- 2. security


def test_default_bind_is_loopback() -> None:
    with serve_stacks() as running:
        assert running.host == "127.0.0.1"
    with serve_stacks("localhost") as running:
        assert running.host == "127.0.0.1"


def _ipv6_loopback_available() -> bool:
    if not socket.has_ipv6:
        return False
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback")
def test_ipv6_loopback_needs_no_token(parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    with serve_stacks("::1") as running:
        assert running.host == "::1"
        assert running.url == f"http://[::1]:{running.port}/"
        status, _, body = fetch(running.url)
    assert status == 200
    assert FOLLOWER in thread_names(parse_dump(body.decode("utf-8")))


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "", "example.invalid", "10.1.2.3"])
def test_beyond_loopback_without_token_is_refused(host: str) -> None:
    with pytest.raises(ValueError, match="token"):
        serve_stacks(host).close()


def test_all_interfaces_with_token_require_it(parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    with serve_stacks("0.0.0.0", token=TOKEN) as running:
        assert running.host == "0.0.0.0"
        url = f"http://127.0.0.1:{running.port}/"
        status, headers, body = fetch(url)
        assert status == 401
        assert headers["WWW-Authenticate"].startswith("Bearer")
        assert FOLLOWER.encode() not in body
        status, _, body = fetch(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert status == 200
        assert FOLLOWER in thread_names(parse_dump(body.decode("utf-8")))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong",
        "Bearer " + TOKEN + "x",
        "Bearer " + TOKEN[:-1],
        "Basic " + TOKEN,
        TOKEN,
        "Bearer",
        "",
    ],
    ids=["none", "wrong", "longer", "shorter", "basic-scheme", "no-scheme", "scheme-only", "empty"],
)
def test_a_missing_or_wrong_token_is_401(parked: helpers.ParkedThreads, authorization: Optional[str]) -> None:
    parked.start(name=FOLLOWER)
    headers = {} if authorization is None else {"Authorization": authorization}
    with serve_stacks(token=TOKEN) as running:
        status, answer_headers, body = fetch(running.url, headers=headers)
        head_status, head_headers, head_body = fetch(running.url, method="HEAD", headers=headers)
    assert status == head_status == 401
    assert answer_headers["WWW-Authenticate"] == head_headers["WWW-Authenticate"] == 'Bearer realm="leakcheck"'
    assert FOLLOWER.encode() not in body
    assert b"leakcheck snapshot" not in body
    assert head_body == b""


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
def test_the_right_token_is_200(parked: helpers.ParkedThreads, scheme: str) -> None:
    parked.start(name=FOLLOWER)
    with serve_stacks(token=TOKEN) as running:
        assert repr(running).endswith("with token>")
        status, _, body = fetch(running.url + "?format=json", headers={"Authorization": f"{scheme} {TOKEN}"})
    assert status == 200
    assert FOLLOWER in thread_names(Snapshot.from_json(body))


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "TRACE"])
def test_other_methods_are_405(server: StackServer, method: str) -> None:
    status, headers, body = fetch(server.url, method=method)
    assert status == 405
    assert headers["Allow"] == ALLOW
    assert b"leakcheck snapshot" not in body


def test_methods_are_case_sensitive(server: StackServer) -> None:
    status, headers, _ = split_response(exchange(server.host, server.port, b"get / HTTP/1.1\r\n\r\n"))
    assert status == 405
    assert headers["allow"] == ALLOW


@pytest.mark.parametrize(
    "query",
    [
        "?format=xml",
        "?format=",
        "?format=JSON",
        "?unknown=1",
        "?match=",
        "?match",
        "?format=json&format=xml",
        "?match=a&debug=2",
        "?group=2",
        "?group=yes",
        "?group=",
        "?group=1&format=json",
        "?" + "&".join(["match=a"] * 33),  # more keywords than served
        "?" + "&".join(["format=text"] * 65),  # more fields than parsed
    ],
)
def test_bad_query_is_400(server: StackServer, query: str) -> None:
    status, headers, body = fetch(server.url + query)
    assert status == 400
    assert headers["Content-Type"].startswith("text/plain")
    assert body.startswith(b"400 Bad Request: ")


def test_group_shows_a_shared_stack_once_and_reads_back(server: StackServer, parked: helpers.ParkedThreads) -> None:
    gathered = helpers.Gathered(parked, 3, "gathered")
    keyword = "Gathered" + ".work"  # not spelled out on the line of this thread's own stack
    try:
        _, _, grouped = fetch(f"{server.url}?group=1&match={keyword}")
        _, _, plain = fetch(f"{server.url}?group=0&match={keyword}")
    finally:
        gathered.release()
    grouped_text, plain_text = grouped.decode("utf-8"), plain.decode("utf-8")
    assert grouped_text.count("3 threads with this stack:\n") == 1
    assert grouped_text.count("in helpers.Gathered.work") == 1 and plain_text.count("in helpers.Gathered.work") == 3
    assert "with this stack" not in plain_text
    expected = [f"gathered-{number}" for number in range(3)]
    assert thread_names(parse_dump(grouped_text)) == thread_names(parse_dump(plain_text)) == expected


def test_group_with_json_says_why_it_is_refused(server: StackServer) -> None:
    status, _, body = fetch(server.url + "?format=json&group=1")
    assert status == 400
    assert b"group= is for the text dump" in body


def test_32_match_keywords_are_served(server: StackServer, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, _, body = fetch(server.url + "?" + "&".join([f"match={FOLLOWER}"] * 32))
    assert status == 200
    assert thread_names(parse_dump(body.decode("utf-8"))) == [FOLLOWER]


def test_request_line_over_8192_bytes_is_414(server: StackServer) -> None:
    raw = exchange(server.host, server.port, b"GET /?match=" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n")
    status, _, body = split_response(raw)
    assert status == 414
    assert b"request line" in body


def test_query_over_4096_characters_is_414(server: StackServer) -> None:
    raw = exchange(server.host, server.port, b"GET /?match=" + b"a" * 5000 + b" HTTP/1.1\r\n\r\n")
    status, _, body = split_response(raw)
    assert status == 414
    assert b"query is longer than 4096" in body


def test_header_line_over_8192_bytes_is_431(server: StackServer) -> None:
    raw = exchange(server.host, server.port, b"GET / HTTP/1.1\r\nX-Long: " + b"a" * 9000 + b"\r\n\r\n")
    status, _, body = split_response(raw)
    assert status == 431
    assert b"header line" in body


def _request_with_headers(count: int) -> bytes:
    return b"GET / HTTP/1.1\r\n" + b"".join(b"X-Header-%d: v\r\n" % index for index in range(count)) + b"\r\n"


def test_more_than_64_headers_is_431(server: StackServer) -> None:
    status, _, body = split_response(exchange(server.host, server.port, _request_with_headers(65)))
    assert status == 431
    assert b"more than 64 headers" in body


def test_64_headers_are_served(server: StackServer) -> None:
    status, _, body = split_response(exchange(server.host, server.port, _request_with_headers(64)))
    assert status == 200
    assert "MainThread" in thread_names(parse_dump(body.decode("utf-8")))


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"garbage\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",  # a TLS hello, more or less
        b"GET /\r\n\r\n",
        b"GET / FTP/1.0\r\n\r\n",
        b"GET  / HTTP/1.1\r\n\r\n",
        b"G3T / HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n Leading: space\r\n\r\n",
        b"GET / HTTP/1.1\r\n: no name\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n",  # the client stops before the blank line
    ],
)
def test_malformed_request_is_400(server: StackServer, request_bytes: bytes) -> None:
    status, _, body = split_response(exchange(server.host, server.port, request_bytes))
    assert status == 400
    assert b"leakcheck snapshot" not in body


def test_a_client_that_sends_nothing_gets_nothing(server: StackServer) -> None:
    assert exchange(server.host, server.port, b"") == b""


def _hold_secret_credentials(release: threading.Event, secret: str, holding: threading.Event) -> None:
    api_key = secret  # a local holding the secret, besides the argument
    holding.set()
    release.wait()
    assert api_key


def test_the_dump_never_contains_frame_locals(server: StackServer, parked: helpers.ParkedThreads) -> None:
    secret = "s3cr3t-" + uuid.uuid4().hex
    holding = threading.Event()
    parked.start(_hold_secret_credentials, secret, holding, name=FOLLOWER)
    assert holding.wait(TIMEOUT)
    _, _, text = fetch(server.url)
    _, _, as_json = fetch(server.url + "?format=json")
    for body in (text, as_json):
        assert b"_hold_secret_credentials" in body  # the function is there...
        assert secret.encode() not in body  # ...its values are not
    (follower,) = [record for record in json.loads(as_json)["threads"] if record["name"] == FOLLOWER]
    assert "_hold_secret_credentials" in [frame["function"].rpartition(".")[2] for frame in follower["frames"]]
    # nor does ?match= search values: a keyword equal to the secret matches no stack
    _, _, matched = fetch(server.url + "?match=" + secret)
    assert parse_dump(matched.decode("utf-8")).threads == ()


# -- 3. bad arguments


@pytest.mark.parametrize(
    ("arguments", "error"),
    [
        ({"port": -1}, ValueError),
        ({"port": 65536}, ValueError),
        ({"port": 70000}, ValueError),
        ({"port": "80"}, TypeError),
        ({"port": True}, TypeError),
        ({"port": 80.0}, TypeError),
        ({"port": None}, TypeError),
        ({"host": 1}, TypeError),
        ({"host": b"127.0.0.1"}, TypeError),
        ({"host": None}, TypeError),
        ({"token": ""}, ValueError),
        ({"token": "a b"}, ValueError),
        ({"token": "line\nbreak"}, ValueError),
        ({"token": "t\u00f8ken"}, ValueError),
        ({"token": 5}, TypeError),
        ({"token": b"bytes"}, TypeError),
    ],
)
def test_bad_arguments(arguments: Dict[str, Any], error: type) -> None:
    with pytest.raises(error):
        serve_stacks(**arguments).close()


# -- 4. fuzz


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[StackServer]:
    with serve_stacks() as running:
        yield running


# Three kinds of payload: random bytes; request-shaped bytes with random parts (the framing); and
# well-framed GET and HEAD requests with random targets and queries (the handler behind it).
_line = st.binary(max_size=80).map(lambda line: line + b"\r\n")
_valid_headers = st.lists(st.sampled_from([b"Host: x\r\n", b"Authorization: Bearer x\r\n", b"X: \xff\r\n"]), max_size=3)
_parameter = st.builds(
    lambda key, value: f"{key}={value}",
    st.sampled_from(["format", "match", "x", "", "format%3D", "match[]"]),
    st.sampled_from(["text", "json", "xml", "", FOLLOWER, "%41", "%", "%FF", "%E9", "a=b", "\u00e9"]),
)
_query = st.lists(_parameter, max_size=4).map("&".join) | st.text(
    alphabet="=&%?#;+/[]:ab019fFjmnorstx\u00e9\x00", max_size=60
)
_target = st.builds(
    lambda prefix, query: prefix + query.encode("utf-8"),
    st.sampled_from([b"/", b"/?", b"/stacks?", b"//x?", b"http://[::1?", b"http://h/p?", b"*", b"", b"/%3F?"]),
    _query,
)
_framed = st.builds(
    lambda method, target, headers: method + b" " + target + b" HTTP/1.1\r\n" + b"".join(headers) + b"\r\n",
    st.sampled_from([b"GET", b"HEAD"]),
    _target,
    _valid_headers,
)
_request_like = st.builds(
    lambda method, target, version, headers, end: (
        method + b" " + target + b" " + version + b"\r\n" + b"".join(headers) + end
    ),
    st.sampled_from([b"GET", b"HEAD", b"POST", b"get"]) | st.binary(max_size=8),
    _target | st.binary(max_size=200),
    st.sampled_from([b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]) | st.binary(max_size=10),
    st.lists(st.sampled_from([b"Host: x\r\n", b"X: \xff\r\n", b"\r\n"]) | _line, max_size=6),
    st.sampled_from([b"\r\n", b"\n", b""]),
)


def test_fuzzed_requests_never_get_5xx(fuzz_server: StackServer) -> None:
    baseline = threading.active_count()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(payload=st.binary(max_size=2000) | _request_like | _framed)
    def send_payload(payload: bytes) -> None:
        raw = exchange(fuzz_server.host, fuzz_server.port, payload, timeout=2.0)
        if not raw:
            return  # nothing to answer: the client sent no line at all
        status, headers, body = split_response(raw)
        assert status == 200 or 400 <= status < 500, raw[:200]
        assert int(headers["content-length"]) >= len(body)
        assert len(body) in (0, int(headers["content-length"]))  # a HEAD has none, anything else all of it

    send_payload()

    # the server still works...
    status, _, body = fetch(fuzz_server.url)
    assert status == 200
    assert "MainThread" in thread_names(parse_dump(body.decode("utf-8")))
    # ...and every per-request thread has ended
    assert wait_until(lambda: threading.active_count() <= baseline), threading.enumerate()
    assert not [thread for thread in threading.enumerate() if thread.name == "leakcheck-stack-request"]


# -- 5. lifecycle: never a leak, close(), capacity, timeouts


def test_a_server_opened_and_closed_inside_a_check_is_no_leak() -> None:
    with no_leaks(timeout=0.5), serve_stacks() as running:
        status, _, _ = fetch(running.url)
    assert status == 200


def test_a_server_left_open_across_a_check_is_no_leak() -> None:
    running: Optional[StackServer] = None
    try:
        with no_leaks(timeout=0.5):
            running = serve_stacks()
            status, _, _ = fetch(running.url)
        assert status == 200
    finally:
        if running is not None:
            running.close()


def test_the_check_used_above_does_catch_a_thread(parked: helpers.ParkedThreads) -> None:
    # a control for the two tests above: the same check reports an ordinary thread
    with pytest.raises(LeakError, match=FOLLOWER), no_leaks(timeout=0.1):
        parked.start(name=FOLLOWER)


def test_close_is_idempotent_and_refuses_connections() -> None:
    before = set(threading.enumerate())
    running = serve_stacks()
    # By name: a module-scoped server of another test may start a request thread meanwhile.
    started = {thread for thread in set(threading.enumerate()) - before if running.url in thread.name}
    assert started, "serve_stacks() started no thread"
    address = (running.host, running.port)
    running.close()
    running.close()
    assert repr(running).endswith(" closed>")
    assert not [thread.name for thread in started if thread.is_alive()]
    with pytest.raises(OSError):
        socket.create_connection(address, timeout=2).close()


def test_closing_at_once_after_starting_never_races_the_server_thread() -> None:
    # The server thread may see the close before its first wait: close() must not then write to a closed socket.
    for _ in range(200):
        serve_stacks().close()


def test_leaving_the_with_block_closes() -> None:
    with serve_stacks() as running:
        assert isinstance(running, StackServer)
        address = (running.host, running.port)
        assert fetch(running.url)[0] == 200
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=2).close()


def _blocked_answers(monkeypatch: pytest.MonkeyPatch) -> Tuple[threading.Event, threading.Semaphore]:
    """Make every answer wait for the returned event; the semaphore counts answers that began."""
    release, began = threading.Event(), threading.Semaphore(0)
    real = leakcheck.remote.server.answer_query

    def blocked(query: str, headers: Any = None):
        began.release()
        release.wait(TIMEOUT)
        return real(query, headers)

    monkeypatch.setattr(leakcheck.remote.server, "answer_query", blocked)
    return release, began


def test_at_capacity_a_client_gets_503_then_service_resumes(
    server: StackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    release, began = _blocked_answers(monkeypatch)
    busy = [socket.create_connection((server.host, server.port), timeout=TIMEOUT) for _ in range(8)]
    try:
        for connection in busy:
            connection.sendall(b"GET / HTTP/1.1\r\n\r\n")
        for _ in busy:
            assert began.acquire(timeout=TIMEOUT)  # all 8 slots are taken
        status, _, body = split_response(exchange(server.host, server.port, b"GET / HTTP/1.1\r\n\r\n"))
        assert status == 503
        assert b"leakcheck snapshot" not in body
    finally:
        release.set()
        for connection in busy:
            connection.close()
    answers: List[int] = []
    assert wait_until(lambda: answers.append(fetch(server.url)[0]) or answers[-1] == 200), answers


def test_silent_clients_take_no_slot(server: StackServer) -> None:
    idle = [socket.create_connection((server.host, server.port), timeout=TIMEOUT) for _ in range(20)]
    try:
        assert fetch(server.url)[0] == 200  # 20 connections that say nothing hold none of the 8 slots
    finally:
        for connection in idle:
            connection.close()


def test_clients_without_the_token_take_no_slot() -> None:
    with serve_stacks(token="s3cret") as running:
        idle = [socket.create_connection((running.host, running.port), timeout=TIMEOUT) for _ in range(20)]
        try:
            for connection in idle:  # a head that never ends, from a client without the token
                connection.sendall(b"GET / HTTP/1.1\r\nX-Slow: 1\r\n")
            status, _, body = fetch(running.url, headers={"Authorization": "Bearer s3cret"})
            assert status == 200 and b"leakcheck snapshot" in body
            refused = exchange(running.host, running.port, b"GET / HTTP/1.1\r\nAuthorization: Bearer no\r\n\r\n")
            assert split_response(refused)[0] == 401
        finally:
            for connection in idle:
                connection.close()


def test_beyond_the_arriving_limit_the_oldest_silent_client_is_dropped(
    server: StackServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(leakcheck.remote.server, "REQUEST_TIMEOUT", 60.0)  # only the limit can drop it within our wait
    first = socket.create_connection((server.host, server.port), timeout=TIMEOUT)
    first.sendall(b"GET / HTTP/1.1\r\n")  # once the server has read this, it knows the connection
    assert wait_until(lambda: len(server._arriving) == 1)
    others = [socket.create_connection((server.host, server.port), timeout=TIMEOUT) for _ in range(MAX_ARRIVING)]
    try:
        assert first.recv(100) == b""  # dropped to admit the newest
        assert fetch(server.url)[0] == 200
    finally:
        first.close()
        for connection in others:
            connection.close()


def test_close_cuts_the_answers_under_way_and_waits_for_their_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    release, began = _blocked_answers(monkeypatch)
    running = serve_stacks()
    client = socket.create_connection((running.host, running.port), timeout=TIMEOUT)
    try:
        client.sendall(b"GET / HTTP/1.1\r\n\r\n")
        assert began.acquire(timeout=TIMEOUT)
        answering = [t for t in threading.enumerate() if t.name == "leakcheck-stack-request"]
        assert answering
        closer = threading.Thread(target=running.close)
        closer.start()
        assert client.recv(65536) == b""  # close() cut the connection before any answer was sent
        release.set()  # the answer now goes into a cut connection, and its thread ends
        closer.join(TIMEOUT)
        assert not closer.is_alive()
        assert not [t for t in answering if t.is_alive()]  # close() returned after the request threads ended
    finally:
        release.set()
        client.close()
        running.close()


def test_a_silent_client_is_dropped_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leakcheck.remote.server, "REQUEST_TIMEOUT", 0.2)
    with serve_stacks() as running, socket.create_connection((running.host, running.port), timeout=TIMEOUT) as sock:
        assert sock.recv(100) == b""  # closed by the server, well before our own timeout


def test_a_trickling_client_is_dropped_after_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(leakcheck.remote.server, "REQUEST_TIMEOUT", 0.3)
    with serve_stacks() as running, socket.create_connection((running.host, running.port), timeout=TIMEOUT) as sock:
        deadline = time.monotonic() + 2.0
        ended = False
        for byte in b"GET /?match=" + b"a" * 1000:
            if time.monotonic() > deadline:
                break
            try:
                sock.sendall(bytes([byte]))
            except OSError:
                ended = True
                break
            readable, _, _ = select.select([sock], [], [], 0.1)  # paces the bytes, and sees an answer or a close
            if readable:
                ended = True
                break
        assert ended, "the server still waits for a request that started 2 s ago, with a 0.3 s timeout"


# -- 6. WSGI


def call_wsgi(environ: Dict[str, Any]) -> Tuple[str, Dict[str, str], bytes]:
    started: List[Tuple[str, List[Tuple[str, str]]]] = []

    def start_response(status: str, headers: List[Tuple[str, str]], exc_info: Any = None) -> None:
        started.append((status, headers))

    body = b"".join(wsgi_app(environ, start_response))
    assert len(started) == 1
    status, headers = started[0]
    return status, dict(headers), body


def wsgi_environ(method: str = "GET", path: str = "/stacks", query: str = "") -> Dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query}


def test_wsgi_get(parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    status, headers, body = call_wsgi(wsgi_environ())
    assert status == "200 OK"
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert int(headers["Content-Length"]) == len(body)
    assert FOLLOWER in thread_names(parse_dump(body.decode("utf-8")))


def test_wsgi_json_and_match(parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    parked.start(name=BYSTANDER)
    status, headers, body = call_wsgi(wsgi_environ(query="format=json&match=" + FOLLOWER))
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"
    assert thread_names(Snapshot.from_json(body)) == [FOLLOWER]


def test_wsgi_head_has_no_body() -> None:
    status, headers, body = call_wsgi(wsgi_environ("HEAD"))
    assert status == "200 OK"
    assert int(headers["Content-Length"]) > 0
    assert body == b""


@pytest.mark.parametrize(("method", "query", "status"), [("POST", "", "405"), ("GET", "format=xml", "400")])
def test_wsgi_errors(method: str, query: str, status: str) -> None:
    answer, headers, body = call_wsgi(wsgi_environ(method, query=query))
    assert answer.split(" ")[0] == status
    assert b"leakcheck snapshot" not in body
    if status == "405":
        assert headers["Allow"] == ALLOW


class _QuietHandler(wsgiref.simple_server.WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def _host_app(environ: Dict[str, Any], start_response: Callable[..., Any]) -> List[bytes]:
    """A host app with the endpoint mounted at /debug/stacks and everything below it."""
    path = environ.get("PATH_INFO", "")
    if path == "/debug/stacks" or path.startswith("/debug/stacks/"):
        environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + "/debug/stacks"
        environ["PATH_INFO"] = path[len("/debug/stacks") :]
        return list(wsgi_app(environ, start_response))
    start_response("404 Not Found", [("Content-Type", "text/plain")])
    return [b"not found\n"]


@pytest.fixture
def wsgi_base_url() -> Iterator[str]:
    httpd = wsgiref.simple_server.make_server("127.0.0.1", 0, _host_app, handler_class=_QuietHandler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="test-wsgiref")
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_port}"
    finally:
        httpd.shutdown()
        thread.join(TIMEOUT)
        httpd.server_close()
        assert not thread.is_alive()


def test_wsgi_mounted_in_wsgiref(wsgi_base_url: str, parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    parked.start(name=BYSTANDER)
    status, headers, body = fetch(wsgi_base_url + "/debug/stacks?match=" + FOLLOWER)
    assert status == 200
    assert headers["Content-Type"] == "text/plain; charset=utf-8"
    assert thread_names(parse_dump(body.decode("utf-8"))) == [FOLLOWER]

    status, headers, body = fetch(wsgi_base_url + "/debug/stacks", method="POST")
    assert status == 405
    assert headers["Allow"] == ALLOW

    assert fetch(wsgi_base_url + "/elsewhere")[0] == 404


def test_wsgi_a_question_mark_in_the_path_is_not_a_query(wsgi_base_url: str) -> None:
    status, _, body = fetch(wsgi_base_url + "/debug/stacks/x%3Fy")
    assert status == 200, body


def test_wsgi_a_hash_in_the_path_does_not_hide_the_query() -> None:
    status, headers, _ = call_wsgi(wsgi_environ(path="/stacks/#x", query="format=json"))
    assert status == "200 OK"
    assert headers["Content-Type"] == "application/json"


# -- 7. ASGI


def run_asgi(scope: Dict[str, Any], incoming: Optional[List[Dict[str, Any]]] = None) -> List[Dict[str, Any]]:
    """Drive asgi_app once; return what it sent."""
    sent: List[Dict[str, Any]] = []
    queue = list(incoming or [{"type": "http.request", "body": b"", "more_body": False}])

    async def receive() -> Dict[str, Any]:
        assert queue, "the app asked for more messages than a client sends"
        return queue.pop(0)

    async def send(message: Dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(asyncio.wait_for(asgi_app(scope, receive, send), TIMEOUT))
    return sent


def http_scope(method: str = "GET", path: str = "/x", query: bytes = b"") -> Dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query, "headers": []}


def response_of(sent: List[Dict[str, Any]]) -> Tuple[int, Dict[bytes, bytes], bytes]:
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    headers = {bytes(name).lower(): bytes(value) for name, value in sent[0]["headers"]}
    return sent[0]["status"], headers, sent[1]["body"]


def test_asgi_get_json_lists_tasks_and_threads() -> None:
    async def main() -> List[Dict[str, Any]]:
        asyncio.current_task().set_name("asgi-caller")  # type: ignore[union-attr]
        release = asyncio.Event()
        waiter = asyncio.create_task(release.wait(), name="asgi-parked-task")
        await asyncio.sleep(0)  # let it start and park
        sent: List[Dict[str, Any]] = []

        async def receive() -> Dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: Dict[str, Any]) -> None:
            sent.append(message)

        try:
            await asgi_app(http_scope(query=b"format=json"), receive, send)
        finally:
            release.set()
            await waiter
        return sent

    sent = asyncio.run(main())
    status, headers, body = response_of(sent)
    assert status == 200
    assert headers[b"content-type"] == b"application/json"
    assert int(headers[b"content-length"]) == len(body)
    dump = Snapshot.from_json(body)
    task_names = [info.name for info in dump.tasks]
    assert "asgi-parked-task" in task_names
    assert "asgi-caller" in task_names
    assert "MainThread" in thread_names(dump)


def test_asgi_match_keeps_the_parked_thread(parked: helpers.ParkedThreads) -> None:
    parked.start(name=FOLLOWER)
    parked.start(name=BYSTANDER)
    status, headers, body = response_of(run_asgi(http_scope(query=b"match=" + FOLLOWER.encode())))
    assert status == 200
    assert headers[b"content-type"] == b"text/plain; charset=utf-8"
    assert thread_names(parse_dump(body.decode("utf-8"))) == [FOLLOWER]


def test_asgi_head_has_no_body() -> None:
    status, headers, body = response_of(run_asgi(http_scope("HEAD")))
    assert status == 200
    assert int(headers[b"content-length"]) > 0
    assert body == b""


@pytest.mark.parametrize(("method", "query", "status"), [("POST", b"", 405), ("GET", b"unknown=1", 400)])
def test_asgi_errors(method: str, query: bytes, status: int) -> None:
    answer, headers, body = response_of(run_asgi(http_scope(method, query=query)))
    assert answer == status
    assert b"leakcheck snapshot" not in body
    if status == 405:
        assert headers[b"allow"] == ALLOW.encode()


def test_asgi_lifespan_is_answered() -> None:
    sent = run_asgi({"type": "lifespan"}, [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    assert sent == [{"type": "lifespan.startup.complete"}, {"type": "lifespan.shutdown.complete"}]


def test_asgi_websocket_is_closed() -> None:
    sent = run_asgi({"type": "websocket", "path": "/x", "headers": []}, [{"type": "websocket.connect"}])
    assert [message["type"] for message in sent] == ["websocket.close"]


def test_asgi_response_header_names_are_lowercase() -> None:
    sent = run_asgi(http_scope())
    names = [bytes(name) for name, _ in sent[0]["headers"]]
    assert names == [name.lower() for name in names]


def test_asgi_a_question_mark_in_the_path_is_not_a_query() -> None:
    status, _, body = response_of(run_asgi(http_scope(path="/stacks/x?y", query=b"")))
    assert status == 200, body


@pytest.mark.parametrize("target", [b"/[?format=json", b"/]x?format=json", b"/?format=json#frag"])
def test_odd_targets_are_answered_from_their_query(server: StackServer, target: bytes) -> None:
    # urlsplit() raises "Invalid IPv6 URL" for some of these in some Python versions: the server must not use it.
    raw = exchange(server.host, server.port, b"GET " + target + b" HTTP/1.1\r\n\r\n")
    status, headers, _ = split_response(raw)
    assert status == 200
    assert "application/json" in str(headers)
