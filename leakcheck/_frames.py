"""Turn live frames and coroutine chains into plain :class:`Frame` records.

This is the only module that touches frame objects.  It reads what it needs
(file, line, qualified name, source line) and lets go of the frame at once, so
nothing captured here keeps a frame, and with it the frame's locals, alive.
It never reads ``f_locals``: on Python < 3.13 that writes into the frame.
"""

from __future__ import annotations

import linecache
import sys
from types import CodeType, FrameType
from typing import Any, Dict, List, Optional, Tuple

from ._model import Frame

_HAS_CO_QUALNAME = sys.version_info >= (3, 11)
_QUALNAME_CACHE_LIMIT = 4096
_qualname_cache: Dict[CodeType, str] = {}


def _owner_qualname(code: CodeType, namespace: Dict[str, Any]) -> str:
    """Best effort ``co_qualname`` for Python < 3.11.

    Looks for a class in the module's globals that defines a function with
    this very code object; nested functions and classes fall back to the bare
    function name.
    """
    name = code.co_name
    candidate = namespace.get(name)
    if getattr(candidate, "__code__", None) is code:
        return name
    for value in list(namespace.values()):
        if not isinstance(value, type):
            continue
        member = value.__dict__.get(name)
        function = getattr(member, "__func__", member)  # staticmethod, classmethod
        if isinstance(member, property):
            function = member.fget
        if getattr(function, "__code__", None) is code:
            return f"{value.__qualname__}.{name}"
    return name


def code_qualname(code: CodeType, namespace: Dict[str, Any]) -> str:
    """The module-qualified name of the function running ``code``."""
    module = namespace.get("__name__")
    if _HAS_CO_QUALNAME:
        qualname: str = code.co_qualname  # type: ignore[attr-defined,unused-ignore]
    else:
        cached = _qualname_cache.get(code)
        if cached is None:
            cached = _owner_qualname(code, namespace)
            if len(_qualname_cache) >= _QUALNAME_CACHE_LIMIT:
                _qualname_cache.clear()
            _qualname_cache[code] = cached
        qualname = cached
    return f"{module}.{qualname}" if isinstance(module, str) else qualname


def frame_record(frame: FrameType) -> Frame:
    code = frame.f_code
    lineno = frame.f_lineno or 0
    filename = code.co_filename
    line = linecache.getline(filename, lineno, frame.f_globals).strip() if lineno else ""
    return Frame(filename, lineno, code_qualname(code, frame.f_globals), line)


def thread_frames(frame: Optional[FrameType], skip_modules: Tuple[str, ...] = ()) -> Tuple[Frame, ...]:
    """The stack ending at ``frame``, outermost first.

    Innermost frames whose module starts with one of ``skip_modules`` are
    dropped, so a thread capturing itself does not show the capture code.
    """
    raw: List[FrameType] = []
    while frame is not None:
        raw.append(frame)
        frame = frame.f_back
    del frame
    if skip_modules:
        while raw and str(raw[0].f_globals.get("__name__", "")).startswith(skip_modules):
            del raw[0]
    records = tuple(frame_record(f) for f in reversed(raw))
    raw.clear()
    return records


_AWAIT_ATTRS = ("cr_await", "gi_yieldfrom", "ag_await")
_FRAME_ATTRS = ("cr_frame", "gi_frame", "ag_frame")


def coroutine_frames(coro: object) -> Tuple[Frame, ...]:
    """The whole await chain of a coroutine, outermost first.

    ``Task.get_stack()`` stops at the task's own coroutine; following
    ``cr_await`` (and its generator and async-generator relatives) shows
    where the task is really suspended.
    """
    records: List[Frame] = []
    seen = set()
    current: Any = coro
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        frame = None
        for attr in _FRAME_ATTRS:
            frame = getattr(current, attr, None)
            if frame is not None:
                break
        if frame is not None:
            records.append(frame_record(frame))
        del frame
        following = None
        for attr in _AWAIT_ATTRS:
            following = getattr(current, attr, None)
            if following is not None:
                break
        current = following
    return tuple(records)
