"""Reading another process's stacks: ``fetch_snapshot()`` and the ``source=`` of the keyword assertions.

A source is a URL of a stack endpoint (``serve_stacks()``, or ``wsgi_app`` /
``asgi_app`` mounted in a web app), the pid of a process running the agent
(``start_agent()``), or a ``Snapshot`` already taken.
"""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request
from typing import Optional, Union
from urllib.parse import urlsplit, urlunsplit

from ._endpoint import check_token
from ._model import Snapshot
from ._options import check_timeout

Source = Union[str, int, Snapshot]
"""Where stacks come from: an endpoint's URL, an agent's pid, or a Snapshot."""

MAX_BODY = 64 * 1024 * 1024
"""Largest answer read from an endpoint: a dump of many thousands of threads fits."""


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # A redirect would carry the bearer token to wherever it points.
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


# No proxies either: the endpoint is usually on loopback, and the token is for it alone.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}), _NoRedirect())


class RemoteError(OSError):
    """The endpoint could not be reached, or answered with an error."""


def check_source(source: object, what: str) -> Source:
    if isinstance(source, Snapshot):
        return source
    if isinstance(source, bool) or not isinstance(source, (str, int)):
        raise TypeError(f"{what}: source must be a URL, a pid or a Snapshot, not {type(source).__name__}")
    if isinstance(source, int):
        if source <= 0:
            raise ValueError(f"{what}: source must be a positive pid, not {source}")
        return source
    if urlsplit(source).scheme not in ("http", "https") or not urlsplit(source).netloc:
        raise ValueError(f"{what}: source must be an http:// or https:// URL, not {source!r}")
    return source


def _json_target(url: str) -> str:
    parts = urlsplit(url)
    query = "&".join(part for part in (parts.query, "format=json") if part)
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", query, ""))


def _from_body(body: bytes, where: str) -> Snapshot:
    try:
        return Snapshot.from_json(body)
    except ValueError as problem:
        raise RemoteError(f"{where} did not answer with a leakcheck snapshot: {problem}") from None


def fetch_snapshot(url: str, *, timeout: float = 5.0, token: Optional[str] = None) -> Snapshot:
    """The stacks of the process behind a stack endpoint's ``url``, as a :class:`Snapshot`.

    ``token`` is sent as ``Authorization: Bearer <token>``.  Raises
    :class:`OSError` (``RemoteError``) when the endpoint cannot be reached
    within ``timeout`` seconds or does not answer with a snapshot.
    """
    checked = check_source(url, "fetch_snapshot")
    if not isinstance(checked, str):
        raise TypeError(f"fetch_snapshot takes a URL as str, not {type(url).__name__}")
    return _fetch_url(checked, check_timeout(timeout), check_token(token))


def _fetch_url(url: str, timeout: float, token: Optional[bytes]) -> Snapshot:
    request = urllib.request.Request(_json_target(url), headers={"Accept": "application/json"})
    if token is not None:
        request.add_header("Authorization", f"Bearer {token.decode('ascii')}")
    try:
        with _OPENER.open(request, timeout=timeout) as answer:
            body: bytes = answer.read(MAX_BODY + 1)
    except urllib.error.HTTPError as problem:
        detail = problem.read(500).decode("utf-8", "replace").strip()
        raise RemoteError(f"{url} answered {problem.code} {problem.reason}: {detail}") from None
    except (urllib.error.URLError, OSError) as problem:
        reason = getattr(problem, "reason", problem)
        raise RemoteError(f"cannot reach {url}: {reason}") from None
    except (http.client.HTTPException, ValueError) as problem:  # not HTTP at all, or cut short
        raise RemoteError(f"{url} did not answer with HTTP: {problem!r}") from None
    if len(body) > MAX_BODY:
        raise RemoteError(f"{url} answered with more than {MAX_BODY} bytes")
    return _from_body(body, url)


def _fetch_pid(pid: int, timeout: float) -> Snapshot:
    from ._agent import request_agent

    try:
        raw = request_agent(pid, "/?format=json", timeout)
    except OSError as problem:
        raise RemoteError(f"cannot reach the agent of pid {pid}: {problem}") from None
    head, _, body = raw.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1")
    if not status.startswith("HTTP/1.1 200 "):
        raise RemoteError(f"the agent of pid {pid} answered {status!r}")
    return _from_body(body, f"the agent of pid {pid}")


def take(source: Source, timeout: float, token: Optional[bytes] = None) -> Snapshot:
    """One snapshot from a checked ``source``, within ``timeout`` seconds."""
    if isinstance(source, Snapshot):
        return source
    if isinstance(source, int):
        return _fetch_pid(source, timeout)
    return _fetch_url(source, timeout, token)
