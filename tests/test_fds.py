"""fds=True: open file descriptors, from the census up to a report."""

from __future__ import annotations

import ast
import gc
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple

import pytest

import leakcheck
from leakcheck.kinds import fds
from leakcheck.kinds.fds import KIND, FdInfo, OpenFd
from leakcheck.kinds.registry import DEFAULT_KINDS
from leakcheck.records import Frame

# -- helpers


class TextFields:
    """What parse_dump hands a kind's from_text, as the base.TextFields protocol promises it."""

    def integer(self, digits: str, what: str, base: int = 10) -> int:
        value = int(digits, base)
        if not 0 <= value <= 2**64 - 1:
            raise ValueError(f"{what} out of range")
        return value

    def optional_integer(self, digits: Optional[str], what: str) -> Optional[int]:
        return None if digits in (None, "None") else self.integer(str(digits), what)

    def text(self, field: str) -> str:
        if not field.startswith("\\"):
            return field
        text = ast.literal_eval(field[1:])
        assert isinstance(text, str)
        return text

    def name(self, literal: str) -> str:
        text = ast.literal_eval(literal)
        assert isinstance(text, str)
        return text

    def error(self, message: str) -> ValueError:
        return ValueError(message)


class JsonFields:
    def __init__(self, record: Dict[str, Any]) -> None:
        self.record = record

    def field(self, key: str, types: Tuple[type, ...], signed: bool = False) -> Any:
        value = self.record.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            raise ValueError(f"bad {key}")
        return value

    def frames(self) -> Tuple[Frame, ...]:
        return ()

    def error(self, message: str) -> ValueError:
        return ValueError(message)


def from_block(block: str) -> FdInfo:
    """Read one dump block back the way parse_dump does: header line, then detail lines two spaces in."""
    header, *lines = block.split("\n")
    assert lines[-1] == ""
    found = FdInfo.HEADER.fullmatch(header)
    assert found is not None, header
    details = [line[2:] for line in lines[:-1]]
    assert all(line.startswith("  ") and not line.startswith("   ") for line in lines[:-1])
    return FdInfo.from_text(found, (), details, TextFields())


def new_infos(before: Any) -> List[FdInfo]:
    return list(KIND.describe(KIND.resolve(KIND.new_since(before))))


def by_fd(infos: List[FdInfo], fd: int) -> FdInfo:
    (info,) = [info for info in infos if info.fd == fd]
    return info


def new_fds(before: Any) -> List[int]:
    return sorted(token[0] for token in KIND.new_since(before))  # type: ignore[index]


@pytest.fixture
def tcp() -> Iterator[Tuple[socket.socket, socket.socket, socket.socket]]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.create_connection(server.getsockname())
    accepted, _ = server.accept()
    yield server, client, accepted
    for sock in (server, client, accepted):
        sock.close()


# -- the census


def test_census_sees_a_new_open_file_and_not_once_closed(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("x")
    before = KIND.census()
    with open(path) as f:
        info = by_fd(new_infos(before), f.fileno())
        assert info == FdInfo(fd=f.fileno(), type="file", target=str(path), mode="r")
        assert info.header == f"FD {f.fileno()} (type=file) [open]:"
        assert info.stack == f"  Target: {path}\n  Mode: r\n"
        assert info.name == str(path)  # what a report names it by, and what ignore_name() matches
        assert info.detail == f"fd {f.fileno()}"
    assert new_infos(before) == []


def test_file_modes(tmp_path: Path) -> None:
    before = KIND.census()
    files = [open(tmp_path / "w", "w"), open(tmp_path / "a", "ab"), open(tmp_path / "w", "r+")]  # noqa: SIM115
    try:
        infos = new_infos(before)
        assert [by_fd(infos, f.fileno()).mode for f in files] == ["w", "a", "r+"]
    finally:
        for f in files:
            f.close()


def test_socket_pair_shows_its_family() -> None:
    before = KIND.census()
    left, right = socket.socketpair()
    with left, right:
        infos = new_infos(before)
        for sock in (left, right):
            info = by_fd(infos, sock.fileno())
            assert (info.type, info.target, info.mode) == ("socket", "AF_UNIX unnamed -> unnamed", "")
    assert new_infos(before) == []


def test_tcp_sockets_show_family_and_addresses() -> None:
    before = KIND.census()
    server = socket.socket()
    with server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        with client, accepted:
            infos = new_infos(before)
            client_port = client.getsockname()[1]
            assert by_fd(infos, server.fileno()).target == f"AF_INET 127.0.0.1:{port} (listening)"
            assert by_fd(infos, client.fileno()).target == f"AF_INET 127.0.0.1:{client_port} -> 127.0.0.1:{port}"
            assert by_fd(infos, accepted.fileno()).target == f"AF_INET 127.0.0.1:{port} -> 127.0.0.1:{client_port}"
            assert {info.type for info in infos} == {"socket"}
    assert new_infos(before) == []


def test_datagram_and_abstract_unix_sockets() -> None:
    before = KIND.census()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    unix = socket.socket(socket.AF_UNIX)
    with udp, unix:
        udp.bind(("127.0.0.1", 0))
        name = f"leakcheck-test-{os.getpid()}-{id(unix)}"
        unix.bind("\0" + name)
        infos = new_infos(before)
        assert by_fd(infos, udp.fileno()).target == f"AF_INET 127.0.0.1:{udp.getsockname()[1]} (SOCK_DGRAM)"
        assert by_fd(infos, unix.fileno()).target == f"AF_UNIX @{name}"


def test_pipe_shows_its_inode_and_end() -> None:
    before = KIND.census()
    read_end, write_end = os.pipe()
    try:
        infos = new_infos(before)
        inode = os.fstat(read_end).st_ino
        assert by_fd(infos, read_end) == FdInfo(read_end, "pipe", f"pipe:[{inode}] (read end)")
        assert by_fd(infos, write_end) == FdInfo(write_end, "pipe", f"pipe:[{inode}] (write end)")
    finally:
        os.close(read_end)
        os.close(write_end)
    assert new_infos(before) == []


def test_other_descriptors_show_their_link_text() -> None:
    select = pytest.importorskip("select")
    if not hasattr(select, "epoll"):
        pytest.skip("no epoll")
    before = KIND.census()
    with select.epoll() as poller:
        info = by_fd(new_infos(before), poller.fileno())
        assert (info.type, info.target) == ("other", "anon_inode:[eventpoll]")


def test_descriptor_number_reused_by_a_new_pipe_is_a_new_token() -> None:
    read_end, write_end = os.pipe()
    try:
        before = KIND.census()
        other_read, other_write = os.pipe()
        os.dup2(other_read, read_end)  # read_end's number now holds the other pipe: the first one is closed
        os.close(other_read)
        os.close(other_write)
        infos = new_infos(before)
        assert [info.fd for info in infos] == [read_end]
        assert infos[0].target == f"pipe:[{os.fstat(read_end).st_ino}] (read end)"
    finally:
        os.close(read_end)
        os.close(write_end)


def test_same_file_opened_again_at_the_same_number_is_the_same_token(tmp_path: Path) -> None:
    """The documented rule: a token is (fd, st_dev, st_ino), the inode of a regular file is the file's."""
    path = tmp_path / "same"
    path.write_text("x")
    fd = os.open(path, os.O_RDONLY)
    try:
        before = KIND.census()
        again = os.open(path, os.O_RDONLY)
        os.dup2(again, fd)
        os.close(again)
        assert new_fds(before) == []
    finally:
        os.close(fd)


def test_renamed_or_deleted_file_opened_before_is_not_new(tmp_path: Path) -> None:
    path = tmp_path / "before"
    path.write_text("x")
    with open(path) as f:
        before = KIND.census()
        path.rename(tmp_path / "after")
        (tmp_path / "after").unlink()
        assert new_fds(before) == []
        assert f.fileno() in {token[0] for token in KIND.census()}  # type: ignore[index]


def test_the_listing_descriptor_never_appears() -> None:
    probe = os.open(os.devnull, os.O_RDONLY)
    os.close(probe)  # the lowest free number: the one os.listdir opens its directory on
    for _ in range(20):
        census = KIND.census()
        assert probe not in {token[0] for token in census}  # type: ignore[index]
        assert KIND.new_since(census) == frozenset()


def test_leakcheck_own_descriptors_are_hidden() -> None:
    before = KIND.census()
    read_end, write_end = os.pipe()
    try:
        fds.own_fd(read_end)
        fds.own_fd(write_end)
        assert fds.is_own(read_end)
        assert new_fds(before) == []
        assert KIND.resolve({tuple(pipe_token(read_end))}) == []
        fds.release_fd(write_end)
        assert new_fds(before) == [write_end]
    finally:
        fds.release_fd(read_end)
        fds.release_fd(write_end)
        os.close(read_end)
        os.close(write_end)
    assert not fds.is_own(read_end)


def test_own_fd_rejects_bad_input() -> None:
    with pytest.raises(TypeError, match="int"):
        fds.own_fd("3")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="int"):
        fds.own_fd(True)
    with pytest.raises(ValueError, match=">= 0"):
        fds.own_fd(-1)
    with pytest.raises(TypeError, match="int"):
        fds.release_fd(None)  # type: ignore[arg-type]
    fds.release_fd(123456)  # never marked: nothing to do


def test_describing_does_not_count_its_own_duplicate() -> None:
    left, right = socket.socketpair()
    with left, right:
        before = KIND.census()
        for _ in range(5):
            KIND.describe(KIND.resolve(before))  # dups and closes each socket
        assert KIND.new_since(before) == frozenset()


# -- liveness, waiting, description of what ended


def pipe_token(fd: int) -> OpenFd:
    found = os.fstat(fd)
    return OpenFd(fd, found.st_dev, found.st_ino)


def test_is_alive_resolve_and_describe_after_close() -> None:
    read_end, write_end = os.pipe()
    token = pipe_token(read_end)
    assert KIND.is_alive(token)
    assert KIND.resolve({tuple(token)}) == [token]
    os.close(read_end)
    os.close(write_end)
    assert not KIND.is_alive(token)
    assert KIND.resolve({tuple(token)}) == []
    (info,) = KIND.describe([token])  # closed meanwhile: described, never an error
    assert (info.fd, info.type, info.target) == (read_end, "other", "closed before it could be described")


def test_describe_of_a_number_reused_meanwhile_does_not_describe_the_new_one(tmp_path: Path) -> None:
    read_end, write_end = os.pipe()
    token = pipe_token(read_end)
    os.close(read_end)
    os.close(write_end)
    reuser = os.open(tmp_path / "reuser", os.O_WRONLY | os.O_CREAT)
    if reuser != read_end:
        os.dup2(reuser, read_end)
        os.close(reuser)
    try:
        assert not KIND.is_alive(token)
        (info,) = KIND.describe([token])
        assert info.target == "closed before it could be described"
    finally:
        os.close(read_end)


def test_wait_returns_at_once_for_closed_and_by_the_deadline_for_open() -> None:
    read_end, write_end = os.pipe()
    closed = pipe_token(read_end)
    os.close(read_end)
    still_open = pipe_token(write_end)
    try:
        start = time.monotonic()
        KIND.wait([closed], time.monotonic() + 30)
        assert time.monotonic() - start < 5
        KIND.wait([still_open], time.monotonic() + 0.05)
        assert time.monotonic() - start >= 0.05
        assert KIND.is_alive(still_open)
    finally:
        os.close(write_end)


def test_collecting_once_closes_a_file_only_a_cycle_holds(tmp_path: Path) -> None:
    """The engine's rule, run by hand: leaked, may be garbage, collect once, judge again."""
    path = tmp_path / "cycle.log"
    path.write_text("x")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        before = KIND.census()
        cycle: List[Any] = [open(path)]  # noqa: SIM115 - the leak under test
        kept: List[Any] = [open(path)]  # noqa: SIM115 - the leak under test
        cycle.append(cycle)
        del cycle
        leaked = KIND.resolve(KIND.new_since(before))
        assert len(leaked) == 2 and all(KIND.may_be_garbage(obj) for obj in leaked)
        with pytest.warns(ResourceWarning, match="cycle.log"):
            gc.collect()
        (info,) = new_infos(before)
        assert (info.fd, info.target) == (kept[0].fileno(), str(path))
        kept[0].close()
    finally:
        if was_enabled:
            gc.enable()


def test_every_descriptor_may_be_garbage() -> None:
    """A file, socket or selector that only a cycle holds is closed when the cycle is collected."""
    read_end, write_end = os.pipe()
    try:
        assert KIND.may_be_garbage(pipe_token(read_end))
    finally:
        os.close(read_end)
        os.close(write_end)


# -- the record


def test_record_fields_json_and_text_round_trip(tmp_path: Path) -> None:
    info = FdInfo(fd=7, type="socket", target="AF_INET 127.0.0.1:5000 -> 127.0.0.1:41234")
    assert info.header == "FD 7 (type=socket) [open]:"
    assert info.stack == "  Target: AF_INET 127.0.0.1:5000 -> 127.0.0.1:41234\n"
    assert info.frames == ()
    assert info.sort_key() == (7,)
    assert "sock.close()" in info.advice and not info.advice.endswith(".")
    assert "open(" in FdInfo(3, "file", "/x", "r").advice
    assert "os.close(fd)" in FdInfo(3, "pipe", "pipe:[1] (read end)").advice
    assert "os.close(fd)" in FdInfo(3, "other", "anon_inode:[eventfd]").advice
    assert info.to_json() == {"fd": 7, "type": "socket", "target": info.target, "mode": ""}
    assert FdInfo.from_json(JsonFields(info.to_json())) == info
    assert from_block(f"{info.header}\n{info.stack}") == info
    assert repr(info) == ("FdInfo(fd=7, type='socket', target='AF_INET 127.0.0.1:5000 -> 127.0.0.1:41234', mode='')")
    with pytest.raises(AttributeError):
        info.fd = 8
    assert FdInfo.kind == "file descriptor" and FdInfo.header_word == "FD"
    assert KIND.name == "fds" and KIND.info_type is FdInfo
    assert "fds" not in DEFAULT_KINDS and not KIND.has_stacks


def test_hostile_path_is_escaped_and_reads_back(tmp_path: Path) -> None:
    name = 'evil\n"quoted\' ]) [open]:\n  File "x", line 1, in y\n'
    path = tmp_path / name
    before = KIND.census()
    with open(path, "w") as f:
        info = by_fd(new_infos(before), f.fileno())
    assert info.target == str(path)
    assert info.header == f"FD {info.fd} (type=file) [open]:"
    assert info.stack == f"  Target: \\{str(path)!r}\n  Mode: w\n"
    assert info.stack.count("\n") == 2
    assert from_block(f"{info.header}\n{info.stack}") == info
    assert FdInfo.from_json(JsonFields(info.to_json())) == info


@pytest.mark.parametrize("target", ["", " leading space", "\\backslash", "tab\there", "x" * 5000])
def test_odd_targets_read_back(target: str) -> None:
    info = FdInfo(fd=12, type="other", target=target, mode="")
    assert from_block(f"{info.header}\n{info.stack}") == info


def test_bad_records_are_refused() -> None:
    with pytest.raises(ValueError, match="type"):
        FdInfo(fd=3, type="socket]", target="x")
    with pytest.raises(ValueError, match="type"):
        FdInfo.from_json(JsonFields({"fd": 3, "type": "bogus", "target": "x", "mode": ""}))
    with pytest.raises(ValueError, match="target"):
        FdInfo.from_json(JsonFields({"fd": 3, "type": "file", "target": 5, "mode": ""}))
    assert FdInfo.HEADER.fullmatch("FD 3 (type=bogus) [open]:") is None
    assert FdInfo.HEADER.fullmatch("FD -3 (type=file) [open]:") is None
    found = FdInfo.HEADER.fullmatch("FD 3 (type=file) [open]:")
    assert found is not None
    for details in ([], ["Mode: r"], ["Target: x", "Other: y"], ["Target: x", "Mode: r", "Mode: w"]):
        with pytest.raises(ValueError):
            FdInfo.from_text(found, (), details, TextFields())
    with pytest.raises(ValueError, match="frames"):
        FdInfo.from_text(found, (Frame("f.py", 1, "f", ""),), ["Target: x"], TextFields())


# -- platforms


def test_unsupported_platform_is_a_value_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(fds, "_PROC_FD", str(tmp_path / "no-proc"))
    monkeypatch.setattr(fds, "_DEV_FD", str(tmp_path / "no-dev-fd"))
    with pytest.raises(ValueError, match="fds=True cannot be checked on this platform: neither"):
        KIND.check_supported()
    with pytest.raises(ValueError, match="cannot be checked"):
        KIND.configure(True)
    assert KIND.configure(False) is None
    with pytest.raises(TypeError):
        KIND.configure("yes")


def test_dev_fd_listing_only_standard_streams_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    incomplete = tmp_path / "fd"
    incomplete.mkdir()
    for number in "012":
        (incomplete / number).touch()
    monkeypatch.setattr(fds, "_PROC_FD", str(tmp_path / "no-proc"))
    monkeypatch.setattr(fds, "_DEV_FD", str(incomplete))
    monkeypatch.setattr(fds, "_dev_fd_complete", {})
    with pytest.raises(ValueError, match="fdescfs"):
        KIND.check_supported()


def test_unlistable_directory_is_a_value_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    monkeypatch.setattr(fds, "_PROC_FD", str(hidden))

    def refuse(path: object) -> List[str]:
        raise PermissionError(13, "denied")

    monkeypatch.setattr(os, "listdir", refuse)
    with pytest.raises(ValueError, match=r"cannot list .*hidden.*denied"):
        KIND.check_supported()


def test_dev_fd_branch_takes_a_census(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The macOS branch (a /dev/fd listing and fstat), run here over Linux's own listing."""
    monkeypatch.setattr(fds, "_DEV_FD", fds._PROC_FD)
    monkeypatch.setattr(fds, "_PROC_FD", str(tmp_path / "no-proc"))
    monkeypatch.setattr(fds, "_dev_fd_complete", {})
    KIND.check_supported()
    before = KIND.census()
    read_end, write_end = os.pipe()
    try:
        infos = new_infos(before)
        assert [info.fd for info in infos] == [read_end, write_end]
        # Without /proc/self/fd/N to read, a pipe is named by its inode.
        assert infos[0].target == f"pipe:[{os.fstat(read_end).st_ino}] (read end)"
    finally:
        os.close(read_end)
        os.close(write_end)
    assert new_infos(before) == []


def test_census_of_200_descriptors_stays_cheap() -> None:
    """Not a benchmark: a guard that the census does not grow a per-descriptor cost beyond one fstat."""
    pipes = [os.pipe() for _ in range(100)]
    try:
        before = KIND.census()
        assert len(before) >= 200
        assert all(stat.S_ISFIFO(os.fstat(end).st_mode) for pair in pipes for end in pair)
        assert KIND.new_since(before) == frozenset()
    finally:
        for pair in pipes:
            for end in pair:
                os.close(end)


# -- end to end: these need the engine to run kinds from the registry


def test_no_leaks_reports_an_open_file(tmp_path: Path) -> None:
    from leakcheck import LeakError, no_leaks

    path = tmp_path / "leaked.log"
    f = None
    try:
        with pytest.raises(LeakError) as raised, no_leaks(fds=True, timeout=0.1):
            f = open(path, "w")  # noqa: SIM115 - the leak under test
        assert str(path) in str(raised.value)
        assert f is not None
        (info,) = raised.value.report.of("fds")
        assert info == FdInfo(fd=f.fileno(), type="file", target=str(path), mode="w")
        assert f"FD {f.fileno()} (type=file) [open]:" in str(raised.value)
    finally:
        if f is not None:
            f.close()


def test_no_leaks_reports_a_socket(tcp: Tuple[socket.socket, socket.socket, socket.socket]) -> None:
    from leakcheck import LeakError, no_leaks

    server = tcp[0]
    port = server.getsockname()[1]
    client = None
    try:
        with pytest.raises(LeakError) as raised, no_leaks(fds=True, timeout=0.1):
            client = socket.create_connection(("127.0.0.1", port))
        assert client is not None
        assert f"AF_INET 127.0.0.1:{client.getsockname()[1]} -> 127.0.0.1:{port}" in str(raised.value)
    finally:
        if client is not None:
            client.close()


def test_no_leaks_passes_a_closed_file(tmp_path: Path) -> None:
    from leakcheck import find_leaks, no_leaks, snapshot

    path = tmp_path / "closed.log"
    with no_leaks(fds=True, timeout=0.1):
        with open(path, "w") as f:
            f.write("x")
        read_end, write_end = os.pipe()
        os.close(read_end)
        os.close(write_end)
    before = snapshot(fds=True)
    with open(path):
        pass
    assert find_leaks(before, fds=True, timeout=0.1).of("fds") == ()


def test_file_only_a_garbage_cycle_holds_is_not_reported(tmp_path: Path) -> None:
    """The decision: the check collects garbage before it judges, and the file's finalizer closes it."""
    from leakcheck import no_leaks

    path = tmp_path / "cycle.log"
    path.write_text("x")
    was_enabled = gc.isenabled()
    gc.disable()  # only the check's own collection may close it
    try:
        with pytest.warns(ResourceWarning, match="cycle.log"), no_leaks(fds=True, timeout=0.1):
            cycle: List[Any] = [open(path)]  # noqa: SIM115 - the leak under test
            cycle.append(cycle)
            del cycle
    finally:
        if was_enabled:
            gc.enable()


def test_file_still_referenced_from_a_cycle_is_reported(tmp_path: Path) -> None:
    from leakcheck import LeakError, no_leaks

    path = tmp_path / "kept.log"
    path.write_text("x")
    kept: List[Any] = []
    try:
        with pytest.raises(LeakError) as raised, no_leaks(fds=True, timeout=0.1):
            cycle: List[Any] = [open(path)]  # noqa: SIM115 - the leak under test
            cycle.append(cycle)
            kept.append(cycle)
        assert str(path) in str(raised.value)
    finally:
        kept[0][0].close()


def test_snapshot_of_fds_round_trips(tmp_path: Path) -> None:
    from leakcheck import Snapshot, parse_dump, snapshot

    name = 'odd\n"name ]'
    with open(tmp_path / name, "w") as f:
        snap = snapshot(fds=True)
        fd = f.fileno()
    infos = [info for info in snap.of("fds") if isinstance(info, FdInfo)]
    assert len(infos) == len(snap.of("fds"))
    assert by_fd(infos, fd).target == str(tmp_path / name)
    text = str(snap)
    assert f"FD {fd} (type=file) [open]:\n  Target: \\{str(tmp_path / name)!r}\n  Mode: w\n" in text
    assert parse_dump(text) == snap
    assert Snapshot.from_json(snap.to_json()) == snap


def test_no_leaks_refuses_fds_where_it_cannot_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from leakcheck import no_leaks

    monkeypatch.setattr(fds, "_PROC_FD", str(tmp_path / "no-proc"))
    monkeypatch.setattr(fds, "_DEV_FD", str(tmp_path / "no-dev-fd"))
    with pytest.raises(ValueError, match="fds=True cannot be checked"):
        no_leaks(fds=True)


def test_the_stack_endpoints_own_descriptors_are_never_leaks() -> None:
    """Like its helper thread, a stack server's sockets and selector are leakcheck's, not the block's."""
    from urllib.request import urlopen

    with leakcheck.no_leaks(fds=True, timeout=0.05):
        server = leakcheck.serve_stacks(port=0)
        with urlopen(server.url, timeout=30) as answer:
            assert b"leakcheck snapshot" in answer.read()
    try:
        own = [fd for fd in os.listdir("/proc/self/fd") if fds.is_own(int(fd))]
        assert len(own) >= 3  # the listener, the wake-up pair, the selector
    finally:
        server.close()
    with leakcheck.no_leaks(fds=True, timeout=0.05):  # and once closed, nothing of it stays marked as ours
        server = leakcheck.serve_stacks(port=0)
        server.close()
    reused = [fd for fd in os.listdir("/proc/self/fd") if fds.is_own(int(fd))]
    assert reused == [], reused


def test_redirecting_a_standard_stream_is_no_leak(tmp_path: Path) -> None:
    """pytest's output capture dup2()s a file onto 1 and 2 around every test: that opens nothing."""
    saved = os.dup(1)
    try:
        with open(tmp_path / "captured.txt", "w") as captured:
            with leakcheck.no_leaks(fds=True, timeout=0.05):
                os.dup2(captured.fileno(), 1)  # redirected inside the block, still redirected after it
            os.dup2(saved, 1)
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def test_a_standard_stream_opened_in_the_block_is_new() -> None:
    script = (
        "import os, leakcheck\n"
        "os.close(0)\n"
        "try:\n"
        "    with leakcheck.no_leaks(fds=True, timeout=0.05):\n"
        "        stdin = open(os.devnull)\n"
        "        assert stdin.fileno() == 0\n"
        "except leakcheck.LeakError as error:\n"
        "    print(error)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True).stdout
    assert "1 leaked file descriptor" in out and "'/dev/null' (fd 0)" in out, out


def test_a_connection_the_stack_endpoint_accepted_is_never_a_leak() -> None:
    """A client connected to an in-process endpoint while a block runs: the accepted socket is leakcheck's."""
    with leakcheck.serve_stacks(port=0) as server:
        assert server.host is not None and server.port is not None
        accepted_one = threading.Event()
        accept = server._accept

        def accept_and_tell() -> None:  # runs on the server's thread
            accept()
            accepted_one.set()

        server._accept = accept_and_tell  # type: ignore[method-assign]
        with leakcheck.no_leaks(fds=True, timeout=0.05), socket.create_connection((server.host, server.port)) as client:
            client.sendall(b"GET / HTTP/1.1\r\n")  # a request that never ends: the connection stays open
            assert accepted_one.wait(30)
            (accepted,) = server._arriving
            assert fds.is_own(accepted.fileno())
            client_fd = client.fileno()
        assert not fds.is_own(client_fd)  # the client's end is the block's own, and closed by its with
