"""The stack endpoint's one request handler, shared by the built-in server, WSGI and ASGI.

A request is a method, a target (path and query) and headers; the answer is
a status, headers and a body.  Nothing here reads a socket, so every way of
serving the endpoint gets the same rules:

- only ``GET`` and ``HEAD`` (anything else is 405);
- with a token, ``Authorization: Bearer <token>``, or HTTP Basic
  authentication with the token as password (what a browser can send),
  compared in constant time (401 otherwise);
- ``?format=text`` (the default), ``?format=json`` or ``?format=html`` (the
  stack page, :mod:`leakcheck.remote.page`, also what a browser gets when it
  asks for ``text/html`` and the query names no format), and any number of
  ``?match=KEYWORD``, keeping the stacks whose block contains a keyword;
- ``?group=1`` groups identical stacks in the text dump (``0``, the
  default, does not); the JSON is never grouped, so with it, 400;
- any other query is a 400, never silently ignored.

Only function names, files, line numbers and source lines leave the process:
never locals or argument values.
"""

from __future__ import annotations

import base64
import hmac
from typing import Callable, Iterable, List, Mapping, NamedTuple, Optional, Tuple
from urllib.parse import parse_qsl

from ..engine.matching import validate_patterns
from ..engine.snapshot import snapshot
from ..kinds.tracking import is_tracking
from ..reporting.snapshot import Snapshot

MAX_QUERY = 4096
"""Longest query string served, in characters."""
MAX_MATCHES = 32
ALLOWED_METHODS = ("GET", "HEAD")


class Response(NamedTuple):
    status: int
    reason: str
    headers: List[Tuple[str, str]]
    body: bytes


def _response(
    status: int, reason: str, body: str, content_type: str, extra: Iterable[Tuple[str, str]] = ()
) -> Response:
    data = body.encode("utf-8", "backslashreplace")
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store"),
        ("X-Content-Type-Options", "nosniff"),
        *extra,
    ]
    return Response(status, reason, headers, data)


def error(status: int, reason: str, message: str, extra: Iterable[Tuple[str, str]] = ()) -> Response:
    """A plain-text error answer: the status line's reason, then what was wrong."""
    return _response(status, reason, f"{status} {reason}: {message}\n", "text/plain; charset=utf-8", extra)


def check_token(token: Optional[str]) -> Optional[bytes]:
    """Validate a ``token=`` argument: ``None``, or a non-empty str of visible ASCII."""
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError(f"token must be a str, not {type(token).__name__}")
    if not token or not token.isascii() or not token.isprintable() or " " in token:
        raise ValueError("token must be a non-empty string of visible ASCII characters")
    return token.encode("ascii")


def _authorized(token: Optional[bytes], authorization: Optional[str]) -> bool:
    if token is None:
        return True
    scheme, _, presented = (authorization or "").partition(" ")
    if scheme.lower() == "basic":  # a browser: any user name, the token as password
        try:
            decoded = base64.b64decode(presented.strip(), validate=True)
        except ValueError:
            return False
        presented = decoded.partition(b":")[2].decode("utf-8", "surrogateescape")
    elif scheme.lower() != "bearer":
        return False
    # compare_digest takes the same time wherever the strings differ
    return hmac.compare_digest(presented.strip().encode("utf-8", "surrogateescape"), token)


def wants_html(headers: Optional[Mapping[str, str]]) -> bool:
    """Whether the client is a browser asking for a page (``Accept: text/html``)."""
    accept = (headers or {}).get("accept", "")
    return any(part.split(";", 1)[0].strip().lower() == "text/html" for part in accept.split(",")[:32])


def select_stacks(taken: Snapshot, keywords: List[str]) -> Snapshot:
    """The stacks of ``taken`` whose block contains any of ``keywords``; all of them without keywords."""
    if not keywords:
        return taken
    patterns = validate_patterns(keywords, "match")
    return Snapshot(
        records={
            name: tuple(info for info in records if any(p.matches(info) for p in patterns))
            for name, records in taken.records
        },
        pid=taken.pid,
        taken_at=taken.taken_at,
    )


def respond(method: str, query: str, headers: Mapping[str, str], token: Optional[bytes]) -> Response:
    """Answer one request; ``query`` is its raw query string, ``headers`` has lower-case names.

    The path plays no part: the endpoint answers wherever it is mounted.
    Never raises for anything a client sends: every mistake is a 4xx.
    """
    return refusal(method, headers, token) or answer_query(query, headers)


def refusal(method: str, headers: Mapping[str, str], token: Optional[bytes]) -> Optional[Response]:
    """The 405 or 401 for a request that may not have the stacks at all, or ``None``; cheap, and takes no snapshot."""
    if method not in ALLOWED_METHODS:
        return error(405, "Method Not Allowed", "only GET and HEAD", [("Allow", ", ".join(ALLOWED_METHODS))])
    if not _authorized(token, headers.get("authorization")):
        challenges = [("WWW-Authenticate", 'Bearer realm="leakcheck"')]
        challenges.append(("WWW-Authenticate", 'Basic realm="leakcheck", charset="UTF-8"'))  # a browser's prompt
        return error(401, "Unauthorized", "a bearer token is required (a browser: the token as password)", challenges)
    return None


def answer_query(query: str, headers: Optional[Mapping[str, str]] = None) -> Response:
    """The stacks, as ``query`` asks for them (``format=``, ``match=``, ``group=``; a browser that names no
    format gets the stack page), or the 4xx for a query that is wrong."""
    if len(query) > MAX_QUERY:
        return error(414, "URI Too Long", f"the query is longer than {MAX_QUERY} characters")
    try:
        fields = parse_qsl(query, keep_blank_values=True, strict_parsing=False, max_num_fields=64)
    except ValueError as problem:
        return error(400, "Bad Request", str(problem))
    wanted_format = ""
    group: Optional[bool] = None
    keywords: List[str] = []
    for key, value in fields:
        if key == "format" and value in ("text", "json", "html"):
            wanted_format = value
        elif key == "format":
            return error(400, "Bad Request", f"format must be text, json or html, not {value[:40]!r}")
        elif key == "group" and value in ("0", "1"):
            group = value == "1"
        elif key == "group":
            return error(400, "Bad Request", f"group must be 1 or 0, not {value[:40]!r}")
        elif key == "match" and value:
            keywords.append(value)
        elif key == "match":
            return error(400, "Bad Request", "match needs a keyword")
        else:
            return error(400, "Bad Request", f"unknown query parameter {key[:40]!r}; use format=, match= and group=")
    if len(keywords) > MAX_MATCHES:
        return error(400, "Bad Request", f"at most {MAX_MATCHES} match= keywords")
    if not wanted_format:  # a browser asking for a page gets one, unless it asks for the dump's grouping
        wanted_format = "html" if group is None and wants_html(headers) else "text"
    if group is not None and wanted_format != "text":
        return error(400, "Bad Request", f"group= is for the text dump: the {wanted_format.upper()} form sets it")
    # Creation sites if this process tracks; a request never turns tracking on or off itself.
    taken = select_stacks(snapshot(track_creation=is_tracking()), keywords)
    if wanted_format == "json":
        return _response(200, "OK", taken.to_json(), "application/json")
    if wanted_format == "html":
        from .page import HEADERS, render

        return _response(200, "OK", render(taken), "text/html; charset=utf-8", HEADERS)
    return _response(200, "OK", taken.dump(group=bool(group)), "text/plain; charset=utf-8")


def never_raising(answering: Callable[[], Response]) -> Response:
    """``answering()``, or a 500 should it raise.

    A bug of leakcheck's must not stop the endpoint, nor reach the host app.
    """
    try:
        return answering()
    except Exception as problem:
        return error(500, "Internal Server Error", type(problem).__name__)
