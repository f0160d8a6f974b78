"""Turn live frames and coroutine chains into plain :class:`Frame` records.

This is the only module that touches frame objects.  It reads what it needs
(file, line, qualified name, source line) and lets go of the frame at once, so
nothing captured here keeps a frame, and with it the frame's locals, alive.
It never reads ``f_locals``: on Python < 3.13 that writes into the frame.
"""

from __future__ import annotations

import functools
import gc
import linecache
import os
import sys
from types import CodeType, FrameType, FunctionType
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, TypeVar

from ..records import Frame

_HAS_CO_QUALNAME = sys.version_info >= (3, 11)
_CO_NEWLOCALS = 0x0002
_QUALNAME_CACHE_LIMIT = 4096
_qualname_cache: Dict[CodeType, str] = {}


def _functions_of(value: Any, filename: str, depth: int = 0) -> Iterator[FunctionType]:
    """Functions from ``filename`` reachable from a module global.

    Only functions, classes and the descriptors wrapping methods are looked
    into, through their ``__dict__``: never ``getattr`` on arbitrary objects,
    which could run a user's ``__getattr__``.  Matching on the file, not on
    ``__module__``, keeps re-exported classes (``__module__`` rewritten).
    """
    if isinstance(value, FunctionType):
        yield from _unwrapped(value, filename)
    elif isinstance(value, type) and depth <= 8:
        for member in list(vars(value).values()):
            if isinstance(member, type):
                # Only classes nested here, not aliases of classes defined elsewhere.
                if member.__qualname__.startswith(value.__qualname__ + "."):
                    yield from _functions_of(member, filename, depth + 1)
            elif isinstance(member, property):
                for accessor in (member.fget, member.fset, member.fdel):
                    yield from _functions_of(accessor, filename, depth + 1)
            elif isinstance(member, (staticmethod, classmethod)):
                yield from _functions_of(member.__func__, filename, depth + 1)
            elif isinstance(member, functools.cached_property):
                yield from _functions_of(member.func, filename, depth + 1)
            elif isinstance(member, FunctionType):
                yield from _unwrapped(member, filename)


def _unwrapped(function: FunctionType, filename: str) -> Iterator[FunctionType]:
    """A function and those it wraps (``functools.wraps`` sets ``__wrapped__``)."""
    current: Any = function
    for _ in range(16):
        if not isinstance(current, FunctionType):
            return
        if current.__code__.co_filename == filename:
            yield current
        current = current.__dict__.get("__wrapped__")


def _function_by_referrers(code: CodeType) -> Optional[str]:
    """The last resort: the function object holding ``code``, found by the garbage collector."""
    for referrer in gc.get_referrers(code):
        if isinstance(referrer, FunctionType) and referrer.__code__ is code:
            return referrer.__qualname__
    return None


def _find_in(code: CodeType, qualname: str, target: CodeType) -> Optional[str]:
    """Search ``code`` and the code objects nested in it for ``target``."""
    if code is target:
        return qualname
    # A function's nested definitions are "<locals>"; a class body's are not.
    separator = ".<locals>." if code.co_flags & _CO_NEWLOCALS else "."
    for const in code.co_consts:
        if isinstance(const, CodeType):
            found = _find_in(const, f"{qualname}{separator}{const.co_name}", target)
            if found is not None:
                return found
    return None


def _owner_qualname(code: CodeType, namespace: Dict[str, Any]) -> str:
    """``co_qualname`` for Python < 3.11, which does not have it.

    Searches the functions the frame's module defines (with the methods of its
    classes, nested classes and decorated functions) for the code object, then
    the code objects nested in them, which gives nested functions their
    ``outer.<locals>.inner`` name.  What that misses (say, a method behind a
    decorator that keeps no ``__wrapped__``) is looked up through the
    function object referring to the code.  The result is cached per code.
    """
    for value in list(namespace.values()):
        for function in _functions_of(value, code.co_filename):
            found = _find_in(function.__code__, function.__qualname__, code)
            if found is not None:
                return found
    return _function_by_referrers(code) or code.co_name


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


@functools.lru_cache(maxsize=1)
def _library_dirs() -> Tuple[str, ...]:
    import sysconfig  # only when a report or a creation site needs it: it costs more to import than leakcheck

    paths = sysconfig.get_paths()
    dirs = {os.path.normcase(os.path.realpath(paths[key])) for key in ("stdlib", "platstdlib") if key in paths}
    dirs.add(os.path.normcase(os.path.dirname(os.path.dirname(os.path.realpath(__file__)))))  # leakcheck itself
    return tuple(d + os.sep for d in dirs)


@functools.lru_cache(maxsize=4096)
def is_library_file(filename: str) -> bool:
    """Whether ``filename`` belongs to the standard library or to leakcheck: not code a report should blame."""
    if not os.path.isabs(filename):  # <frozen ...>, <string> and friends
        return filename.startswith("<frozen")
    path = os.path.normcase(os.path.realpath(filename))
    return path.startswith(_library_dirs()) and "site-packages" not in path


def code_frame(code: CodeType, offset: int, module: Optional[str]) -> Frame:
    """The frame record of ``code`` stopped at bytecode ``offset`` (a frame's ``f_lasti``), in module ``module``.

    For creation sites, which keep code objects and offsets rather than
    frames, and turn them into lines only when a report is made.
    """
    lineno = 0
    for start, end, number in code.co_lines():
        if start <= offset < end:
            lineno = number or 0
            break
    namespace: Dict[str, Any] = {}
    if module is not None:
        found = sys.modules.get(module)
        namespace = getattr(found, "__dict__", None) or {"__name__": module}
    filename = code.co_filename
    line = linecache.getline(filename, lineno, namespace).strip() if lineno else ""
    return Frame(filename, lineno, code_qualname(code, namespace), line)


def frame_record(frame: FrameType) -> Frame:
    code = frame.f_code
    lineno = frame.f_lineno or 0
    filename = code.co_filename
    line = linecache.getline(filename, lineno, frame.f_globals).strip() if lineno else ""
    return Frame(filename, lineno, code_qualname(code, frame.f_globals), line)


_hidden: Dict[int, CodeType] = {}
"""Code of leakcheck's own that runs *around* user code (a tracked job's owner), by ``id()``: never shown in a
stack.  By id, with the code kept: hashing a code object hashes its whole contents, every time."""


def hide_code(code: CodeType) -> None:
    """Never show frames running ``code`` (leakcheck's own, around user code) in a stack."""
    _hidden[id(code)] = code


def is_hidden(code: CodeType) -> bool:
    return id(code) in _hidden


def thread_frames(frame: Optional[FrameType], skip_modules: Tuple[str, ...] = ()) -> Tuple[Frame, ...]:
    """The stack ending at ``frame``, outermost first.

    Innermost frames whose module starts with one of ``skip_modules`` are
    dropped, so a thread capturing itself does not show the capture code;
    and so are the frames :func:`hide_code` names, wherever they are.
    """
    raw: List[FrameType] = []
    while frame is not None:
        if id(frame.f_code) not in _hidden:
            raw.append(frame)
        frame = frame.f_back
    del frame
    if skip_modules:
        while raw and str(raw[0].f_globals.get("__name__", "")).startswith(skip_modules):
            del raw[0]
    records = tuple(frame_record(f) for f in reversed(raw))
    raw.clear()
    return records


T = TypeVar("T")


def safely(function: Callable[[], T], fallback: T) -> T:
    """``function()``, or ``fallback`` when it raises: user objects must never break a capture."""
    try:
        return function()
    except Exception:
        return fallback


def as_text(value: object) -> str:
    """A name as text: a Thread or Task subclass may make its name anything."""
    return value if isinstance(value, str) else safely(lambda: repr(value), f"<{type(value).__name__}>")


def attribute(obj: object, name: str) -> Any:
    """``getattr(obj, name, None)``, also when a ``__getattr__`` raises something else than AttributeError."""
    try:
        return getattr(obj, name, None)
    except Exception:
        return None


_AWAIT_ATTRS = ("cr_await", "gi_yieldfrom", "ag_await")
_FRAME_ATTRS = ("cr_frame", "gi_frame", "ag_frame")
# What ``async for`` and ``await agen.asend()`` await: they expose no attribute
# leading to their async generator, but they hold a reference to it.
_ASYNC_GEN_STEPS = ("async_generator_asend", "async_generator_athrow")


def _async_generator_of(step: object) -> Any:
    for referent in gc.get_referents(step):
        if hasattr(referent, "ag_frame"):
            return referent
    return None


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
            frame = attribute(current, attr)
            if frame is not None:
                break
        if isinstance(frame, FrameType):
            records.append(frame_record(frame))
        del frame
        following = None
        for attr in _AWAIT_ATTRS:
            following = attribute(current, attr)
            if following is not None:
                break
        if following is None and type(current).__name__ in _ASYNC_GEN_STEPS:
            following = _async_generator_of(current)
        current = following
    return tuple(records)
