"""Code whose qualnames Python < 3.11 cannot read off its frames."""

from __future__ import annotations

import functools
import threading


class _Settings:
    """A module global whose ``__getattr__`` raises something else than AttributeError."""

    def __getattr__(self, name: str) -> str:
        raise KeyError(name)


settings = _Settings()


class Server:
    def serve(self, release: threading.Event) -> None:
        release.wait()


class Pool:
    @functools.cached_property
    def size(self) -> int:
        return 1

    def worker(self, release: threading.Event) -> None:
        def run() -> None:
            release.wait()

        run()
