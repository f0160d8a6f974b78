"""The entry point of ``python -m leakcheck.unittest``; see :mod:`leakcheck.unittest`.

A module of its own, named ``leakcheck.unittest.__main__``: ``multiprocessing``
runs the main module again in each child it spawns, but never one of that
name, so spawned children do not import leakcheck for nothing.
"""

from __future__ import annotations

from leakcheck.unittest import main

if __name__ == "__main__":
    main()
