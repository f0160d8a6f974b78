"""The two wire forms of a Snapshot: the text dump and JSON, each with its parser.

The text dump reads like Go's ``?debug=2`` goroutine dump::

    leakcheck snapshot of pid 4242 (taken at 1764201301.25): 1 thread, 1 task

    Thread 'MainThread' (ident=140207, native_id=4242, daemon=False) [running]:
      File "/srv/app.py", line 12, in app.main
        server.serve_forever()

    Task 'follow-logs' (id=0x7f3a2c, coro=app.follow_logs, loop_thread=140207) [pending]:
      File "/srv/app.py", line 30, in app.follow_logs
        line = await queue.get()
      Awaiting Future

One block per thread or task, a blank line between blocks.  A header line
gives the kind, the name (a Python string literal, so any name survives),
the ident or id and the state; frame lines are indented two spaces, source
lines four.  Other text is written as it is when plain, else as a backslash
and a string literal (``_model.shown``), so that no crafted name can pass
for another line, nor crafted header text for another field: a coroutine
is plain only without a comma, a state only without ``]``.  So every line
is read in one pass from left to right, in time linear in its length.
:func:`parse_dump` reads back exactly what :func:`format_dump` writes:
names, ids, frames and stacks.

A task whose loop is not running says ``loop=not running`` where older
dumps said ``loop_thread=None``; both read back as ``thread_ident=None``.

Numbers are checked as they are read, in both forms: every integer has at
most 20 digits (``2**64 - 1`` at most) and only the pid may be negative;
the time is a finite number.  Anything else is a ``ValueError``.
"""

from __future__ import annotations

import ast
import json
import math
import re
from typing import Any, Dict, List, Optional, Tuple, Union

from ..records import Frame, Info, Snapshot, TaskInfo, ThreadInfo, format_frames, task_stack

JSON_FORMAT = "leakcheck-snapshot"
JSON_VERSION = 1

# A Python string literal, as repr() writes it.  Written as runs of plain characters between escapes,
# never as a repeated alternative: the regex engine then keeps no state per character, and a literal
# that never closes is given up in one pass.
_LITERAL = r"'[^'\\]*(?:\\.[^'\\]*)*'" r'|"[^"\\]*(?:\\.[^"\\]*)*"'
# The same, with only the escapes repr() writes (and the other one-letter ones): literal_eval warns about
# any other escape, such as \i, where parse_dump must refuse it.  Checked on a field once it has matched.
_ESCAPE = r"\\(?:[\\'\"abfnrtv]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"
_ONE_LITERAL = re.compile(rf"'[^'\\]*(?:{_ESCAPE}[^'\\]*)*'|\"[^\"\\]*(?:{_ESCAPE}[^\"\\]*)*\"")
_STRING = rf"(?P<name>{_LITERAL})"
_ESCAPED = rf"\\(?:{_LITERAL})"  # a backslash and a string literal: text that is not plain
_HEAD = re.compile(
    r"leakcheck snapshot of pid (?P<pid>-?\d+) \(taken at (?P<taken_at>[^)]+)\): "
    r"(?P<threads>\d+) threads?, (?P<tasks>\d+) tasks?"
)
_TIME = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")  # as repr() writes a finite float
_THREAD = re.compile(
    rf"Thread {_STRING} \(ident=(?P<ident>\d+), native_id=(?P<native_id>None|\d+), "
    r"daemon=(?P<daemon>True|False)\) \[(?P<state>running|starting)\]:"
)
# Every field ends where it must: a plain coroutine holds no comma, a plain state no "]", and escaped
# text ends with its literal.  So no text can pass for another field, and matching never backtracks
# over more than one field: the time is linear in the length of the line, whatever the line.
_TASK = re.compile(
    rf"Task {_STRING} \(id=0x(?P<id>[0-9a-f]+), coro=(?P<coro>{_ESCAPED}|[^,\\][^,]*), "
    r"(?:loop_thread=(?P<thread_ident>None|\d+)|loop=not running)\) "  # loop_thread=None: older dumps
    rf"\[(?P<state>{_ESCAPED}|[^\]]*)\]:"
)
_FRAME = re.compile(
    rf'  File (?:"(?P<plain_filename>[^"]*)"|(?P<filename>{_ESCAPED})), line (?P<lineno>\d+), in (?P<function>.*)'
)
_SOURCE_PREFIX = "    "
_AWAITING_PREFIX = "  Awaiting "

MAX_INT = 2**64 - 1
"""The largest integer of a snapshot: idents, ids, native ids and line numbers are 64-bit at most."""
_MAX_DIGITS = len(str(MAX_INT))


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def format_dump(snapshot: Snapshot) -> str:
    """The text dump of ``snapshot``; :func:`parse_dump` reads it back."""
    head = (
        f"leakcheck snapshot of pid {snapshot.pid} (taken at {snapshot.taken_at!r}): "
        f"{_plural(len(snapshot.threads), 'thread')}, {_plural(len(snapshot.tasks), 'task')}\n\n"
    )
    infos: Tuple[Info, ...] = (*snapshot.threads, *snapshot.tasks)
    return head + "\n".join(f"{info.header}\n{info.stack}" for info in infos)


class _Lines:
    """The dump's lines, with the number of the current one for error messages."""

    def __init__(self, text: str) -> None:
        self._lines = text.split("\n")  # not splitlines(): names may hold other line breaks, escaped or not
        self.number = 0  # of lines taken: the 1-based number of the last one

    def peek(self) -> Optional[str]:
        return self._lines[self.number] if self.number < len(self._lines) else None

    def take(self) -> str:
        line = self._lines[self.number]
        self.number += 1
        return line

    def error(self, message: str, number: Optional[int] = None) -> ValueError:
        """An error about line ``number``, by default the last line taken."""
        return ValueError(f"not a leakcheck dump: line {number or self.number}: {message}")

    def integer(self, digits: str, what: str, number: Optional[int] = None, base: int = 10) -> int:
        """``digits`` (matched by ``-?\\d+`` or hex digits) as an int of a snapshot, else an error naming ``what``."""
        # Never hand int() a long string: converting one takes time quadratic in its length (3.10), or is refused.
        if len(digits.lstrip("-")) <= _MAX_DIGITS:
            value = int(digits, base)
            if abs(value) <= MAX_INT:
                return value
        shown = digits if len(digits) <= 30 else digits[:30] + "..."
        raise self.error(f"{what} out of range: {shown}", number)


def _frames(lines: _Lines) -> Tuple[Frame, ...]:
    frames: List[Frame] = []
    while True:
        line = lines.peek()
        found = _FRAME.fullmatch(line) if line is not None else None
        if found is None:
            return tuple(frames)
        lines.take()
        frame_number = lines.number
        source = lines.peek()
        text = ""
        if source is not None and source.startswith(_SOURCE_PREFIX):
            text = lines.take()[len(_SOURCE_PREFIX) :]
        filename = found["plain_filename"]
        if filename is None:
            filename = _text(found["filename"], lines)
        lineno = lines.integer(found["lineno"], "line number", frame_number)
        frames.append(Frame(filename, lineno, _text(found["function"], lines), _text(text, lines)))


def _literal(literal: str) -> Optional[str]:
    """The str a string literal as repr() writes it stands for, or ``None`` for anything else."""
    if not _ONE_LITERAL.fullmatch(literal):  # never hand literal_eval anything else: deep expressions crash it
        return None
    try:
        text = ast.literal_eval(literal)
    except (ValueError, SyntaxError):  # a character that ends the line for Python's tokenizer, such as \r
        return None
    return text if isinstance(text, str) else None


def _name(found: re.Match[str], lines: _Lines) -> str:
    name = _literal(found["name"])
    if name is None:
        raise lines.error(f"bad name {found['name'][:80]}")
    return name


def _text(field: str, lines: _Lines) -> str:
    """A field as :func:`~leakcheck.records.shown` wrote it: plain, or a backslash and a string literal."""
    if not field.startswith("\\"):
        return field
    text = _literal(field[1:])
    if text is None:  # a bad escape such as \x or \i
        raise lines.error(f"bad escaped text {field[:80]}")
    return text


def _optional_int(text: Optional[str], what: str, lines: _Lines) -> Optional[int]:
    return None if text in (None, "None") else lines.integer(text, what)


def _block(lines: _Lines) -> Info:
    header = lines.take()
    header_number = lines.number
    thread = _THREAD.fullmatch(header)
    if thread is not None:
        name = _name(thread, lines)
        ident = lines.integer(thread["ident"], "ident")
        native_id = _optional_int(thread["native_id"], "native_id", lines)
        frames = _frames(lines)
        info: Info = ThreadInfo(
            ident=ident,
            native_id=native_id,
            name=name,
            daemon=thread["daemon"] == "True",
            frames=frames,
            stack=format_frames(frames),
        )
        if info.state != thread["state"]:
            raise lines.error(f"a {thread['state']} thread cannot have {len(frames)} frames", header_number)
        return info
    task = _TASK.fullmatch(header)
    if task is None:
        shown = repr(header) if len(header) <= 200 else f"{header[:200]!r}..."
        raise lines.error(f"expected a 'Thread ...' or 'Task ...' header, not {shown}")
    name = _name(task, lines)
    task_id = lines.integer(task["id"], "id", base=16)
    coro = _text(task["coro"], lines)
    state = _text(task["state"], lines)
    thread_ident = _optional_int(task["thread_ident"], "loop_thread", lines)
    frames = _frames(lines)
    awaiting = ""
    following = lines.peek()
    if following is not None and following.startswith(_AWAITING_PREFIX):
        awaiting = _text(lines.take()[len(_AWAITING_PREFIX) :], lines)
    return TaskInfo(
        id=task_id,
        name=name,
        coro=coro,
        state=state,
        thread_ident=thread_ident,
        frames=frames,
        awaiting=awaiting,
        stack=task_stack(frames, awaiting),
    )


def parse_dump(text: str) -> Snapshot:
    """Read a text dump, as :func:`format_dump` (``str(snapshot)``) writes it, back into a Snapshot.

    The result has the names, ids, frames and stacks of the dumped one; it
    was not taken live, so it holds no identity tokens.  Raises
    ``ValueError`` naming the first line that is not part of a dump, and
    ``TypeError`` for anything but a ``str``.
    """
    if not isinstance(text, str):
        raise TypeError(f"parse_dump takes the dump as str, not {type(text).__name__}")
    lines = _Lines(text)
    head = _HEAD.fullmatch(lines.take())
    if head is None:
        raise lines.error("expected 'leakcheck snapshot of pid N (taken at T): ...'")
    pid = lines.integer(head["pid"], "pid")
    counts = (lines.integer(head["threads"], "thread count"), lines.integer(head["tasks"], "task count"))
    taken_at = float(head["taken_at"]) if _TIME.fullmatch(head["taken_at"]) else math.nan
    if not math.isfinite(taken_at):  # also 1e999, which float() reads as inf
        raise lines.error(f"bad time {head['taken_at'][:40]!r}")
    threads: List[ThreadInfo] = []
    tasks: List[TaskInfo] = []
    while lines.peek() is not None:
        if lines.take() != "":
            raise lines.error("expected a blank line between blocks")
        if lines.peek() in (None, ""):
            continue  # the trailing newline, or the blank line after the head of an empty dump
        info = _block(lines)
        if isinstance(info, ThreadInfo):
            threads.append(info)
        else:
            tasks.append(info)
    if (len(threads), len(tasks)) != counts:
        raise ValueError(
            f"not a leakcheck dump: the head counts {counts[0]} threads and {counts[1]} tasks, "
            f"the blocks {len(threads)} and {len(tasks)}"
        )
    return Snapshot(threads=tuple(threads), tasks=tuple(tasks), pid=pid, taken_at=taken_at)


# -- JSON


def _frame_json(frame: Frame) -> Dict[str, Any]:
    return {"filename": frame.filename, "lineno": frame.lineno, "function": frame.function, "line": frame.line}


def to_json(snapshot: Snapshot) -> str:
    """``snapshot`` as a JSON document; :func:`from_json` reads it back."""
    document = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "pid": snapshot.pid,
        "taken_at": snapshot.taken_at,
        "threads": [
            {
                "ident": info.ident,
                "native_id": info.native_id,
                "name": info.name,
                "daemon": info.daemon,
                "state": info.state,
                "frames": [_frame_json(frame) for frame in info.frames],
                "stack": info.stack,
            }
            for info in snapshot.threads
        ],
        "tasks": [
            {
                "id": info.id,
                "name": info.name,
                "coro": info.coro,
                "state": info.state,
                "thread_ident": info.thread_ident,
                "awaiting": info.awaiting,
                "frames": [_frame_json(frame) for frame in info.frames],
                "stack": info.stack,
            }
            for info in snapshot.tasks
        ],
    }
    # compact: the indenting encoder is pure Python, and slow; never NaN or Infinity, which are not JSON
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


_INT = (int,)
_OPTIONAL_INT = (int, type(None))
_NUMBER = (int, float)


class _OutOfRange:
    """A JSON number no snapshot holds (too many digits, NaN, infinite), kept so that the error names its field."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text if len(text) <= 30 else text[:30] + "..."


def _json_int(text: str) -> Union[int, _OutOfRange]:
    # Checked before int(): converting a long string takes time quadratic in its length (3.10), or is refused.
    return int(text) if len(text.lstrip("-")) <= _MAX_DIGITS else _OutOfRange(text)


def _json_float(text: str) -> Union[float, _OutOfRange]:
    value = float(text)
    return value if math.isfinite(value) else _OutOfRange(text)  # 1e999 is inf


def _field(record: Any, key: str, kinds: Tuple[type, ...], where: str, signed: bool = False) -> Any:
    """``record[key]``, of one of ``kinds``; an int is at most :data:`MAX_INT`, and not negative unless ``signed``."""
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"not a leakcheck snapshot: {where} has no {key!r}")
    value = record[key]
    if isinstance(value, _OutOfRange):
        raise ValueError(f"not a leakcheck snapshot: {where}.{key} is out of range: {value.text}")
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # True is an int too
        raise ValueError(f"not a leakcheck snapshot: {where}.{key} is {type(value).__name__}")
    if isinstance(value, int) and not isinstance(value, bool) and not (-MAX_INT if signed else 0) <= value <= MAX_INT:
        raise ValueError(f"not a leakcheck snapshot: {where}.{key} is out of range: {value}")
    return value


def _frames_from_json(record: Any, where: str) -> Tuple[Frame, ...]:
    frames = []
    for index, frame in enumerate(_field(record, "frames", (list,), where)):
        at = f"{where}.frames[{index}]"
        frames.append(
            Frame(
                _field(frame, "filename", (str,), at),
                _field(frame, "lineno", _INT, at),
                _field(frame, "function", (str,), at),
                _field(frame, "line", (str,), at),
            )
        )
    return tuple(frames)


def _no_constant(name: str) -> _OutOfRange:
    return _OutOfRange(name)  # NaN, Infinity, -Infinity: Python's json reads them, JSON has none


def from_json(text: Union[str, bytes]) -> Snapshot:
    """Read a snapshot written by :func:`to_json`; ``ValueError`` names what is wrong with any other text."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"from_json takes a JSON document as str or bytes, not {type(text).__name__}")
    try:
        document = json.loads(text, parse_int=_json_int, parse_float=_json_float, parse_constant=_no_constant)
    except ValueError as error:  # also bytes that are not UTF-8
        raise ValueError(f"not a leakcheck snapshot: {error}") from None
    except RecursionError:
        raise ValueError("not a leakcheck snapshot: nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
        raise ValueError(f'not a leakcheck snapshot: no "format": "{JSON_FORMAT}" in the document')
    version = document.get("version")
    if type(version) is not int or version != JSON_VERSION:  # not True, nor 1.0
        shown = version.text if isinstance(version, _OutOfRange) else repr(version)
        raise ValueError(f"unsupported leakcheck snapshot version {shown}")
    threads = []
    for index, record in enumerate(_field(document, "threads", (list,), "snapshot")):
        where = f"threads[{index}]"
        frames = _frames_from_json(record, where)
        threads.append(
            ThreadInfo(
                ident=_field(record, "ident", _INT, where),
                native_id=_field(record, "native_id", _OPTIONAL_INT, where),
                name=_field(record, "name", (str,), where),
                daemon=_field(record, "daemon", (bool,), where),
                frames=frames,
                stack=format_frames(frames),
            )
        )
    tasks = []
    for index, record in enumerate(_field(document, "tasks", (list,), "snapshot")):
        where = f"tasks[{index}]"
        frames = _frames_from_json(record, where)
        awaiting = _field(record, "awaiting", (str,), where)
        tasks.append(
            TaskInfo(
                id=_field(record, "id", _INT, where),
                name=_field(record, "name", (str,), where),
                coro=_field(record, "coro", (str,), where),
                state=_field(record, "state", (str,), where),
                thread_ident=_field(record, "thread_ident", _OPTIONAL_INT, where),
                frames=frames,
                awaiting=awaiting,
                stack=task_stack(frames, awaiting),
            )
        )
    return Snapshot(
        threads=tuple(threads),
        tasks=tuple(tasks),
        pid=_field(document, "pid", _INT, "snapshot", signed=True),
        taken_at=float(_field(document, "taken_at", _NUMBER, "snapshot")),  # an int of 20 digits at most: no overflow
    )
