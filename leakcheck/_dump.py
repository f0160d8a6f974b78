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
for another line.  :func:`parse_dump` reads back exactly what
:func:`format_dump` writes: names, ids, frames and stacks.
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any, Dict, List, Optional, Tuple, Union

from ._model import Frame, Info, Snapshot, TaskInfo, ThreadInfo, format_frames, task_stack

JSON_FORMAT = "leakcheck-snapshot"
JSON_VERSION = 1

_LITERAL = r"'(?:[^'\\]|\\.)*'" r'|"(?:[^"\\]|\\.)*"'  # a Python string literal, as repr() writes it
_ONE_LITERAL = re.compile(_LITERAL)
_STRING = rf"(?P<name>{_LITERAL})"
_HEAD = re.compile(
    r"leakcheck snapshot of pid (?P<pid>-?\d+) \(taken at (?P<taken_at>[^)]+)\): "
    r"(?P<threads>\d+) threads?, (?P<tasks>\d+) tasks?"
)
_THREAD = re.compile(
    rf"Thread {_STRING} \(ident=(?P<ident>\d+), native_id=(?P<native_id>None|\d+), "
    r"daemon=(?P<daemon>True|False)\) \[(?P<state>running|starting)\]:"
)
_TASK = re.compile(
    rf"Task {_STRING} \(id=0x(?P<id>[0-9a-f]+), coro=(?P<coro>.*), "
    rf"loop_thread=(?P<thread_ident>None|\d+)\) \[(?P<state>\\(?:{_LITERAL})|[^\]]*)\]:"
)
_FRAME = re.compile(
    rf'  File (?:"(?P<plain_filename>[^"]*)"|(?P<filename>\\(?:{_LITERAL}))), line (?P<lineno>\d+), in (?P<function>.*)'
)
_SOURCE_PREFIX = "    "
_AWAITING_PREFIX = "  Awaiting "


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


def _frames(lines: _Lines) -> Tuple[Frame, ...]:
    frames: List[Frame] = []
    while True:
        line = lines.peek()
        found = _FRAME.fullmatch(line) if line is not None else None
        if found is None:
            return tuple(frames)
        lines.take()
        source = lines.peek()
        text = ""
        if source is not None and source.startswith(_SOURCE_PREFIX):
            text = lines.take()[len(_SOURCE_PREFIX) :]
        filename = found["plain_filename"]
        if filename is None:
            filename = _text(found["filename"], lines)
        frames.append(Frame(filename, int(found["lineno"]), _text(found["function"], lines), _text(text, lines)))


def _name(found: re.Match[str], lines: _Lines) -> str:
    try:
        name = ast.literal_eval(found["name"])
    except (ValueError, SyntaxError):
        name = None
    if not isinstance(name, str):
        raise lines.error(f"bad name {found['name'][:80]}")
    return name


def _text(field: str, lines: _Lines) -> str:
    """A field as :func:`~leakcheck._model.shown` wrote it: plain, or a backslash and a string literal."""
    if not field.startswith("\\"):
        return field
    text = None
    if _ONE_LITERAL.fullmatch(field, 1):  # never hand literal_eval anything else: deep expressions crash it
        try:
            text = ast.literal_eval(field[1:])
        except (ValueError, SyntaxError):  # a bad escape such as \x
            pass
    if not isinstance(text, str):
        raise lines.error(f"bad escaped text {field[:80]}")
    return text


def _optional_int(text: str) -> Optional[int]:
    return None if text == "None" else int(text)


def _block(lines: _Lines) -> Info:
    header = lines.take()
    header_number = lines.number
    thread = _THREAD.fullmatch(header)
    if thread is not None:
        name = _name(thread, lines)
        frames = _frames(lines)
        info: Info = ThreadInfo(
            ident=int(thread["ident"]),
            native_id=_optional_int(thread["native_id"]),
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
        raise lines.error(f"expected a 'Thread ...' or 'Task ...' header, not {header!r}")
    name = _name(task, lines)
    frames = _frames(lines)
    awaiting = ""
    following = lines.peek()
    if following is not None and following.startswith(_AWAITING_PREFIX):
        awaiting = _text(lines.take()[len(_AWAITING_PREFIX) :], lines)
    return TaskInfo(
        id=int(task["id"], 16),
        name=name,
        coro=_text(task["coro"], lines),
        state=_text(task["state"], lines),
        thread_ident=_optional_int(task["thread_ident"]),
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
    try:
        taken_at = float(head["taken_at"])
    except ValueError:
        raise lines.error(f"bad time {head['taken_at']!r}") from None
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
    if (len(threads), len(tasks)) != (int(head["threads"]), int(head["tasks"])):
        raise ValueError(
            f"not a leakcheck dump: the head counts {head['threads']} threads and {head['tasks']} tasks, "
            f"the blocks {len(threads)} and {len(tasks)}"
        )
    return Snapshot(threads=tuple(threads), tasks=tuple(tasks), pid=int(head["pid"]), taken_at=taken_at)


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
    return json.dumps(document, separators=(",", ":"))  # compact: the indenting encoder is pure Python, and slow


_INT = (int,)
_OPTIONAL_INT = (int, type(None))
_NUMBER = (int, float)


def _field(record: Any, key: str, kinds: Tuple[type, ...], where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ValueError(f"not a leakcheck snapshot: {where} has no {key!r}")
    value = record[key]
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):  # True is an int too
        raise ValueError(f"not a leakcheck snapshot: {where}.{key} is {type(value).__name__}")
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


def from_json(text: Union[str, bytes]) -> Snapshot:
    """Read a snapshot written by :func:`to_json`; ``ValueError`` names what is wrong with any other text."""
    if not isinstance(text, (str, bytes, bytearray)):
        raise TypeError(f"from_json takes a JSON document as str or bytes, not {type(text).__name__}")
    try:
        document = json.loads(text)
    except ValueError as error:  # also bytes that are not UTF-8
        raise ValueError(f"not a leakcheck snapshot: {error}") from None
    except RecursionError:
        raise ValueError("not a leakcheck snapshot: nested too deeply") from None
    if not isinstance(document, dict) or document.get("format") != JSON_FORMAT:
        raise ValueError(f'not a leakcheck snapshot: no "format": "{JSON_FORMAT}" in the document')
    if document.get("version") != JSON_VERSION:
        raise ValueError(f"unsupported leakcheck snapshot version {document.get('version')!r}")
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
        pid=_field(document, "pid", _INT, "snapshot"),
        taken_at=float(_field(document, "taken_at", _NUMBER, "snapshot")),
    )
