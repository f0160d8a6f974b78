"""The stack endpoint as a WSGI and an ASGI application, to mount at any path of an existing web app.

Both use the standard library only, and answer exactly as the built-in
server does (:mod:`leakcheck.remote.endpoint`).  Neither has a token of its own:
mount them behind the app's own authentication.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Dict, Iterable, List, Mapping, Tuple

from .endpoint import never_raising, respond

StartResponse = Callable[..., Any]


def wsgi_app(environ: Mapping[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    """The stack endpoint as a WSGI application, to mount at any path of a WSGI app (Flask, Django).

    It has no token of its own: mount it behind the app's own authentication.
    """
    method = str(environ.get("REQUEST_METHOD", "GET"))
    headers = {"authorization": str(environ.get("HTTP_AUTHORIZATION", ""))}
    query = str(environ.get("QUERY_STRING", ""))
    response = never_raising(lambda: respond(method, query, headers, None))
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
    response = never_raising(lambda: respond(method, query, headers, None))
    encoded: List[Tuple[bytes, bytes]] = [
        (name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in response.headers
    ]
    await send({"type": "http.response.start", "status": response.status, "headers": encoded})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else response.body})
