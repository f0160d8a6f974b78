"""A package re-exporting its classes, as httpx and trio do (``__module__`` rewritten)."""

from .impl import Pool, Server

Server.__module__ = __name__
Pool.__module__ = __name__

__all__ = ["Pool", "Server"]
