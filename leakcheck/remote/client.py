"""Reading another process's stacks: ``fetch_snapshot()`` and the ``source=`` of the keyword assertions.

A source is a URL of a stack endpoint (``serve_stacks()``, or ``wsgi_app`` /
``asgi_app`` mounted in a web app), a pid (of a process running the agent,
``start_agent()``, or of any CPython 3.14+ process of this user, which is
attached to: see :mod:`leakcheck.remote.attach`), or a ``Snapshot`` already
taken.
"""

from __future__ import annotations

import http.client
import os
from typing import Dict, Optional, Tuple, Union
from urllib.parse import urlsplit

from ..engine.options import check_timeout
from ..engine.snapshot import snapshot
from ..reporting.snapshot import Snapshot
from .endpoint import check_token
from .http import MAX_BODY, Deadline, get

Source = Union[str, int, Snapshot]
"""Where stacks come from: an endpoint's URL, an agent's pid, or a Snapshot."""


class RemoteError(OSError):
    """The endpoint could not be reached, or answered with an error."""

    __module__ = "leakcheck"  # tracebacks say leakcheck.RemoteError, where it is imported from (pickle too)


def check_source(source: object, what: str) -> Source:
    if isinstance(source, Snapshot):
        return source
    if isinstance(source, bool) or not isinstance(source, (str, int)):
        raise TypeError(f"{what}: source must be a URL, a pid or a Snapshot, not {type(source).__name__}")
    if isinstance(source, int):
        if source <= 0:
            raise ValueError(f"{what}: source must be a positive pid, not {source}")
        return source
    parts = urlsplit(source)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{what}: source must be an http:// or https:// URL, not {source!r}")
    if "@" in parts.netloc:  # never sent, and it would show in every error message
        raise ValueError(f"{what}: a URL with a user or password is not supported; use token=")
    try:
        _ = parts.port  # reading it validates it
    except ValueError as problem:
        raise ValueError(f"{what}: bad port in {source!r}: {problem}") from None
    return source


def _json_target(url: str) -> Tuple[Tuple[str, str, int], str, str]:
    """``(scheme, host, port)``, the ``Host`` header and the target asking for JSON."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    query = "&".join(part for part in (parts.query, "format=json") if part)
    return (parts.scheme, parts.hostname or "", port), parts.netloc, f"{parts.path or '/'}?{query}"


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
    address, host, target = _json_target(url)
    headers = {"Host": host, "Accept": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token.decode('ascii')}"
    return _exchange(url, address, target, headers, Deadline(timeout), None)


def _fetch_pid(pid: int, timeout: float) -> Snapshot:
    from .agent import AnotherUsersProcess, agent_socket

    where = f"the agent of pid {pid}"
    try:
        path = agent_socket(pid)
    except ConnectionRefusedError:  # no agent there: attach, on 3.14+
        if pid == os.getpid():  # this process: its main thread, waiting for the answer, would never run the script
            return snapshot()
        from .attach import attach_snapshot

        return attach_snapshot(pid, timeout)
    except AnotherUsersProcess:
        raise RemoteError(
            f"pid {pid} is another user's process: only its own user can read its stacks, through its agent "
            "or by attaching (permission denied)"
        ) from None
    except OSError as problem:
        raise RemoteError(f"cannot reach {where}: {problem}") from None
    headers = {"Host": "localhost", "Accept": "application/json"}
    return _exchange(where, ("http", "localhost", 0), "/?format=json", headers, Deadline(timeout), path)


def _exchange(
    where: str,
    address: Tuple[str, str, int],
    target: str,
    headers: Dict[str, str],
    deadline: Deadline,
    unix_path: Optional[str],
) -> Snapshot:
    try:
        status, reason, body = get(address, target, headers, deadline, unix_path)
    except TimeoutError:
        raise RemoteError(f"{where} did not answer within {deadline.timeout:g} s") from None
    except OSError as problem:
        raise RemoteError(f"cannot reach {where}: {problem}") from None
    except (http.client.HTTPException, ValueError) as problem:  # not HTTP at all, or cut short
        raise RemoteError(f"{where} did not answer with HTTP: {problem!r}") from None
    if status != 200:
        detail = body[:500].decode("utf-8", "replace").strip()
        raise RemoteError(f"{where} answered {status} {reason}: {detail}")
    if len(body) > MAX_BODY:
        raise RemoteError(f"{where} answered with more than {MAX_BODY} bytes")
    return _from_body(body, where)


def take(source: Source, timeout: float, token: Optional[bytes] = None) -> Snapshot:
    """One snapshot from a checked ``source``, within ``timeout`` seconds."""
    if isinstance(source, Snapshot):
        return source
    if isinstance(source, int):
        return _fetch_pid(source, timeout)
    return _fetch_url(source, timeout, token)
