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

A grouped dump (``format_dump(snapshot, group=True)``) shows identical
blocks once, as pprof's ``debug=1`` view does: a line with their count,
then the header line of each, then the stack they share::

    3 threads with this stack:
    Thread 'worker-1' (ident=140301, native_id=4250, daemon=True) [running]:
    Thread 'worker-2' (ident=140302, native_id=4251, daemon=True) [running]:
    Thread 'worker-3' (ident=140303, native_id=4252, daemon=True) [running]:
      File "/srv/app.py", line 40, in app.worker
        job = jobs.get()

Blocks of a kind come biggest group first.  Grouping is presentation only:
:func:`parse_dump` reads a grouped dump back to the same records, and the
JSON is never grouped.

A task whose loop is not running says ``loop=not running`` where older
dumps said ``loop_thread=None``; both read back as ``thread_ident=None``.

Numbers are checked as they are read, in both forms: every integer has at
most 20 digits (``2**64 - 1`` at most) and only the pid may be negative;
the time is a finite number.  Anything else is a ``ValueError``.
"""

from __future__ import annotations

import ast
import functools
import json
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type, Union

from ..kinds.base import InfoRecord, describe_block
from ..kinds.creation import CREATED_HEADING, MARK, CreationSite
from ..kinds.registry import kind, kinds
from ..records import ESCAPED, Frame
from .snapshot import Snapshot

JSON_FORMAT = "leakcheck-snapshot"
JSON_VERSION = 2
"""2: every kind, listed under ``"kinds"``; 1 (still read): threads and tasks only."""

_ESCAPE = r"\\(?:[\\'\"abfnrtv]|x[0-9a-fA-F]{2}|u[0-9a-fA-F]{4}|U[0-9a-fA-F]{8})"
# A string literal with only the escapes repr() writes (and the other one-letter ones): literal_eval warns
# about any other escape, such as \i, where parse_dump must refuse it.  Checked on a field once it has matched.
_ONE_LITERAL = re.compile(rf"'[^'\\]*(?:{_ESCAPE}[^'\\]*)*'|\"[^\"\\]*(?:{_ESCAPE}[^\"\\]*)*\"")
_ESCAPED = ESCAPED
_HEAD = re.compile(r"leakcheck snapshot of pid (?P<pid>-?\d+) \(taken at (?P<taken_at>[^)]+)\): (?P<counts>.*)")
_COUNT = re.compile(r"(?P<count>\d+) (?P<noun>[A-Za-z][A-Za-z ]*)")
_TIME = re.compile(r"-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")  # as repr() writes a finite float
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


def _count(count: int, info_type: Type[InfoRecord]) -> str:
    return f"{count} {info_type.kind if count == 1 else info_type.plural}"


def format_dump(snapshot: Snapshot, group: bool = False) -> str:
    """The text dump of ``snapshot``; :func:`parse_dump` reads it back.

    ``group``: identical blocks once, with their count and each one's header
    line, biggest group first (see the module docstring).
    """
    if not isinstance(group, bool):
        raise TypeError(f"group must be True or False, not {type(group).__name__}")
    counts = ", ".join(_count(len(records), kind(name).info_type) for name, records in snapshot.records)
    head = f"leakcheck snapshot of pid {snapshot.pid} (taken at {snapshot.taken_at!r}): {counts}\n\n"
    if not group:
        return head + "\n".join(describe_block(info) for _, records in snapshot.records for info in records)
    return head + "\n".join(block for _, records in snapshot.records for block in _grouped_blocks(records))


def groups(records: Sequence[InfoRecord]) -> List[List[InfoRecord]]:
    """``records`` with identical blocks but for the header line together, biggest group first, else in order."""
    return [[info for info, _ in members] for _, members in _by_shared(records)]


def _by_shared(records: Sequence[InfoRecord]) -> List[Tuple[str, List[Tuple[InfoRecord, str]]]]:
    """Each distinct block but for its header line (stack, details, creation site), with its records and their
    headers, biggest group first; sorted() is stable, so groups of one size keep their order."""
    alike: Dict[str, List[Tuple[InfoRecord, str]]] = {}
    for info in records:
        header = info.header
        alike.setdefault(describe_block(info)[len(header) + 1 :], []).append((info, header))
    return sorted(alike.items(), key=lambda item: len(item[1]), reverse=True)


def _grouped_blocks(records: Sequence[InfoRecord]) -> List[str]:
    blocks = []
    for shared, members in _by_shared(records):
        first, header = members[0]
        if len(members) == 1:
            blocks.append(f"{header}\n{shared}")
            continue
        alike = _WITH_STACK if first.frames else _LIKE_THIS
        headers = "".join(f"{header}\n" for _, header in members)
        blocks.append(f"{len(members)} {first.plural} {alike}:\n{headers}{shared}")
    return blocks


_WITH_STACK = "with this stack"
_LIKE_THIS = "like this"
_GROUP_HEAD = re.compile(rf"(?P<count>\d+) (?P<noun>[a-z][a-z ]*[a-z]) (?:{_WITH_STACK}|{_LIKE_THIS}):")


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
        frames.append(_frame(found, lines, _SOURCE_PREFIX))


def _frame(found: re.Match[str], lines: _Lines, source_prefix: str) -> Frame:
    """The frame of the ``_FRAME`` line just taken, with its source line if the next line is one."""
    frame_number = lines.number
    source = lines.peek()
    text = ""
    if source is not None and source.startswith(source_prefix):
        text = lines.take()[len(source_prefix) :]
    filename = found["plain_filename"]
    if filename is None:
        filename = _text(found["filename"], lines)
    lineno = lines.integer(found["lineno"], "line number", frame_number)
    return Frame(filename, lineno, _text(found["function"], lines), _text(text, lines))


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


class _HeaderFields:
    """The :class:`~leakcheck.kinds.base.TextFields` of one block: errors name its header line."""

    __slots__ = ("_lines", "_number")

    def __init__(self, lines: _Lines, number: int) -> None:
        self._lines = lines
        self._number = number

    def integer(self, digits: str, what: str, base: int = 10) -> int:
        return self._lines.integer(digits, what, self._number, base)

    def optional_integer(self, digits: Optional[str], what: str) -> Optional[int]:
        return None if digits is None or digits == "None" else self.integer(digits, what)

    def text(self, field: str) -> str:
        return _text(field, self._lines)

    def name(self, literal: str) -> str:
        name = _literal(literal)
        if name is None:
            raise self.error(f"bad name {literal[:80]}")
        return name

    def error(self, message: str) -> ValueError:
        return self._lines.error(message, self._number)


_DETAIL_PREFIX = "  "


def _details(lines: _Lines) -> List[str]:
    """The detail lines after a block's frames (``  Awaiting Future``), without their two spaces."""
    details: List[str] = []
    while True:
        line = lines.peek()
        if (
            line is None
            or not line.startswith(_DETAIL_PREFIX)
            or line.startswith(_SOURCE_PREFIX)
            or line == _CREATED_LINE
        ):
            return details
        details.append(lines.take()[len(_DETAIL_PREFIX) :])


_CREATED_LINE = "  " + CREATED_HEADING
_CREATED_FRAME = re.compile(rf"  (?:  |{re.escape(MARK)})(?P<frame>File .*)")
_CREATED_SOURCE = "      "


def _created(lines: _Lines) -> Optional[CreationSite]:
    """The creation site after a block's details, if the block has one (see :attr:`CreationSite.text`)."""
    if lines.peek() != _CREATED_LINE:
        return None
    lines.take()
    frames: List[Frame] = []
    marked: Optional[int] = None
    while True:
        line = lines.peek()
        if line is None:
            break
        found = _CREATED_FRAME.fullmatch(line)
        frame = _FRAME.fullmatch("  " + found["frame"]) if found is not None else None
        if frame is None:
            break
        lines.take()
        if line.startswith(MARK, 2):
            if marked is not None:
                raise lines.error("a creation site marks two frames")
            marked = len(frames)
        frames.append(_frame(frame, lines, _CREATED_SOURCE))
    if not frames:
        raise lines.error(f"expected the frames of the creation site after {CREATED_HEADING!r}")
    return CreationSite(tuple(frames), marked)


@functools.lru_cache(maxsize=1)
def _by_header_word() -> Dict[str, Type[InfoRecord]]:
    return {kind.info_type.header_word: kind.info_type for kind in kinds().values()}


@functools.lru_cache(maxsize=1)
def _by_noun() -> Dict[str, str]:
    """Kind names by the nouns of a dump's head: ``"1 thread"``, ``"2 fds"``."""
    nouns = {}
    for name, found in kinds().items():
        nouns[found.info_type.kind] = nouns[found.info_type.plural] = name
    return nouns


def _header(lines: _Lines, info_type: Optional[Type[InfoRecord]] = None) -> Tuple[Type[InfoRecord], re.Match[str]]:
    """The next line as a block's header (of ``info_type``, in a group), and its kind."""
    header = lines.take()
    if info_type is None:
        info_type = _by_header_word().get(header.split(" ", 1)[0])
    found = info_type.HEADER.fullmatch(header) if info_type is not None else None
    if info_type is None or found is None:
        shown = repr(header) if len(header) <= 200 else f"{header[:200]!r}..."
        words = ", ".join(f"'{word} ...'" for word in _by_header_word())
        raise lines.error(f"expected a header ({words}), not {shown}")
    return info_type, found


def _block(lines: _Lines) -> List[InfoRecord]:
    """One block's record, or a group's records (see :func:`format_dump`)."""
    group = _GROUP_HEAD.fullmatch(lines.peek() or "")
    if group is None:
        headers = [(lines.number + 1, *_header(lines))]
    else:
        lines.take()
        count = lines.integer(group["count"], "group count")
        name = _by_noun().get(group["noun"])
        if name is None or group["noun"] != kind(name).info_type.plural or count < 2:
            raise lines.error(f"expected a group of at least 2 of one kind, not {group[0][:80]!r}")
        info_type = kind(name).info_type
        headers = []
        for _ in range(count):
            if lines.peek() in (None, ""):
                raise lines.error(f"the group counts {count} {info_type.plural}, the headers {len(headers)}")
            headers.append((lines.number + 1, *_header(lines, info_type)))
    frames = _frames(lines)
    details = _details(lines)
    created = _created(lines)
    records = []
    for number, info_type, found in headers:
        info = info_type.from_text(found, frames, details, _HeaderFields(lines, number))
        records.append(info if created is None else info.with_created(created))
    return records


def _counts(text: str, lines: _Lines) -> Dict[str, int]:
    """The head's ``1 thread, 2 tasks``, by kind name, in the order given."""
    counts: Dict[str, int] = {}
    for part in text.split(", "):
        found = _COUNT.fullmatch(part)
        name = _by_noun().get(found["noun"]) if found is not None else None
        if name is not None and name in counts:
            raise lines.error(f"the head counts {name} twice")
        if found is None or name is None:
            nouns = ", ".join(sorted({kind.info_type.plural for kind in kinds().values()}))
            raise lines.error(f"expected counts of {nouns} in the head, not {part[:80]!r}")
        counts[name] = lines.integer(found["count"], f"{found['noun']} count")
    return counts


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
    counts = _counts(head["counts"], lines)
    taken_at = float(head["taken_at"]) if _TIME.fullmatch(head["taken_at"]) else math.nan
    if not math.isfinite(taken_at):  # also 1e999, which float() reads as inf
        raise lines.error(f"bad time {head['taken_at'][:40]!r}")
    found: Dict[str, List[InfoRecord]] = {name: [] for name in counts}
    names = _by_noun()
    while lines.peek() is not None:
        if lines.take() != "":
            raise lines.error("expected a blank line between blocks")
        if lines.peek() in (None, ""):
            continue  # the trailing newline, or the blank line after the head of an empty dump
        number = lines.number + 1
        block = _block(lines)
        records = found.get(names[block[0].kind])
        if records is None:
            raise lines.error(f"the head counts no {block[0].plural}", number)
        records.extend(block)
    for name, records in found.items():
        if len(records) != counts[name]:
            raise ValueError(
                f"not a leakcheck dump: the head counts {counts[name]} {name}, the blocks {len(records)}"
            )
    return Snapshot(records={name: tuple(records) for name, records in found.items()}, pid=pid, taken_at=taken_at)


# -- JSON


def to_json(snapshot: Snapshot) -> str:
    """``snapshot`` as a JSON document; :func:`from_json` reads it back."""
    document: Dict[str, Any] = {
        "format": JSON_FORMAT,
        "version": JSON_VERSION,
        "pid": snapshot.pid,
        "taken_at": snapshot.taken_at,
        "kinds": list(snapshot.kinds),
    }
    for name, records in snapshot.records:
        document[name] = [_record_json(info) for info in records]
    # compact: the indenting encoder is pure Python, and slow; never NaN or Infinity, which are not JSON
    return json.dumps(document, separators=(",", ":"), allow_nan=False)


def _record_json(info: InfoRecord) -> Dict[str, Any]:
    fields = info.to_json()
    if info.created is not None:
        fields["created"] = info.created.to_json()
    return fields


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


class _RecordFields:
    """The :class:`~leakcheck.kinds.base.JsonFields` of one record; errors name it (``threads[3]``)."""

    __slots__ = ("_record", "_where")

    def __init__(self, record: Any, where: str) -> None:
        self._record = record
        self._where = where

    def field(self, key: str, types: Tuple[type, ...], signed: bool = False) -> Any:
        return _field(self._record, key, types, self._where, signed)

    def frames(self, key: str = "frames") -> Tuple[Frame, ...]:
        frames = []
        for index, frame in enumerate(self.field(key, (list,))):
            at = f"{self._where}.{key}[{index}]"
            frames.append(
                Frame(
                    _field(frame, "filename", (str,), at),
                    _field(frame, "lineno", _INT, at),
                    _field(frame, "function", (str,), at),
                    _field(frame, "line", (str,), at),
                )
            )
        return tuple(frames)

    def error(self, message: str) -> ValueError:
        return ValueError(f"not a leakcheck snapshot: {self._where}: {message}")

    def created(self) -> Optional[CreationSite]:
        """The record's ``"created"`` site, if it has one."""
        if not isinstance(self._record, dict) or self._record.get("created") is None:
            return None
        site = _RecordFields(self._record["created"], f"{self._where}.created")
        frames = site.frames()
        marked = site.field("marked", _OPTIONAL_INT)
        if not frames:
            raise site.error("a creation site has at least one frame")
        if marked is not None and marked >= len(frames):
            raise site.error(f"marks frame {marked} of {len(frames)}")
        return CreationSite(frames, marked)


def _record_from_json(info_type: Type[InfoRecord], fields: _RecordFields) -> InfoRecord:
    info = info_type.from_json(fields)
    created = fields.created()
    return info if created is None else info.with_created(created)


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
    if type(version) is not int or version not in (1, JSON_VERSION):  # not True, nor 1.0
        shown = version.text if isinstance(version, _OutOfRange) else repr(version)
        raise ValueError(f"unsupported leakcheck snapshot version {shown}")
    if version == 1:
        names: Any = ["threads", "tasks"]
    else:
        names = _field(document, "kinds", (list,), "snapshot")
    registered = kinds()
    records: Dict[str, Tuple[InfoRecord, ...]] = {}
    for name in names:
        kind = registered.get(name) if isinstance(name, str) else None
        if kind is None or name in records:
            shown = name if isinstance(name, str) and len(name) <= 40 else type(name).__name__
            raise ValueError(f"not a leakcheck snapshot: unknown or repeated kind {shown!r}")
        records[name] = tuple(
            _record_from_json(kind.info_type, _RecordFields(record, f"{name}[{index}]"))
            for index, record in enumerate(_field(document, name, (list,), "snapshot"))
        )
    return Snapshot(
        records=records,
        pid=_field(document, "pid", _INT, "snapshot", signed=True),
        taken_at=float(_field(document, "taken_at", _NUMBER, "snapshot")),  # an int of 20 digits at most: no overflow
    )
