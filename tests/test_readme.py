"""Every sample of README.md runs as written, and every output it shows is a real output.

Each fenced block of the README is one test, named after the README line of its
opening fence, so that a sample that breaks fails naming that line:

* ```python blocks run as written, in a fresh process: a block with pytest
  tests as a test file under ``python -m pytest``, a block with ``TestCase``
  classes under ``python -m unittest``, anything else as a script.  Each must
  exit 0.
* ```ini blocks are the ``pytest.ini`` of a small project whose run must pass
  under ``--strict-config``.
* ```sh blocks: every ``python -m leakcheck ...``, ``python -m leakcheck.unittest
  ...`` and ``pytest ...`` line runs in a small project, against a process that
  serves its stacks (its URL and pid stand for the README's), and must exit 0.
  The Quickstart (which ``.ci/run`` runs on every Python) and the ``.ci/sid``
  lines (which need root) are not run here.
* Output blocks (no language, or ``text``) are compared with a real run of
  what they show, after normalising only what changes from run to run or from
  machine to machine (see :func:`normalise`).  A line ``...`` in the README
  stands for any number of lines.

A block that none of these recognises fails too: teach this file about it.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
TIMEOUT = 120.0

FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)\s*$")


@dataclass(frozen=True)
class Block:
    line: int  # 1-based line of the opening fence in README.md
    lang: str
    text: str  # the block's lines, dedented by its fence's indent

    @property
    def where(self) -> str:
        return f"README.md:{self.line}"

    def line_of(self, index: int) -> int:
        """The README line of the block's line ``index`` (0-based)."""
        return self.line + 1 + index


def read_blocks(text: str) -> List[Block]:
    blocks: List[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if opening is None:
            index += 1
            continue
        indent = opening.group("indent")
        body: List[str] = []
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != f"{indent}```":
            body.append(lines[end][len(indent) :] if lines[end].startswith(indent) else lines[end].lstrip())
            end += 1
        if end == len(lines):
            raise AssertionError(f"README.md:{index + 1}: this ``` block is never closed")
        blocks.append(Block(index + 1, opening.group("lang"), "".join(f"{line}\n" for line in body)))
        index = end + 1
    return blocks


def readme_text() -> str:
    return README.read_text(encoding="utf-8")


BLOCKS = read_blocks(readme_text())


def marked_block(marker: str) -> Block:
    """The block between ``<!-- marker -->`` and ``<!-- /marker -->``."""
    text = readme_text()
    start = text.index(f"<!-- {marker} -->")
    line = text.count("\n", 0, start) + 1
    inside = [block for block in BLOCKS if block.line > line]
    assert inside, f"README.md:{line}: no block follows <!-- {marker} -->"
    return inside[0]


# --- running things ----------------------------------------------------------


def environment() -> Dict[str, str]:
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("PYTEST_ADDOPTS", "PYTEST_PLUGINS", "CI", "BUILD_NUMBER", "PYTHONPATH")
    }
    env["COLUMNS"] = "80"  # pytest's section rules are as wide as the terminal
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def run(args: Sequence[str], cwd: Path, timeout: float = TIMEOUT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(args), cwd=cwd, env=environment(), capture_output=True, text=True, timeout=timeout, check=False
    )


def shown(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit status {result.returncode}\n--- stdout ---\n{result.stdout}--- stderr ---\n{result.stderr}"


def pytest_project(root: Path) -> Path:
    """A directory that is its own pytest rootdir, so that nothing of this repository configures it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "pytest.ini").write_text("[pytest]\n", encoding="utf-8")
    return root


# --- python blocks -----------------------------------------------------------

PYTEST_SIGNS = re.compile(r"^\s*(def test_|async def test_|pytestmark\b|@pytest\.mark)", re.MULTILINE)
UNITTEST_SIGNS = re.compile(
    r"^class \w+\((unittest\.TestCase|unittest\.IsolatedAsyncioTestCase|\w*LeakCheckTestCase)\)", re.MULTILINE
)


def check_python(block: Block, tmp_path: Path) -> None:
    project = pytest_project(tmp_path / "project")
    module = f"test_readme_line_{block.line}"
    (project / f"{module}.py").write_text(block.text, encoding="utf-8")
    if UNITTEST_SIGNS.search(block.text):
        how = "python -m unittest"
        result = run([sys.executable, "-m", "unittest", "-v", module], project)
        ran = re.search(r"^Ran (\d+) tests?", result.stderr, re.MULTILINE)
        ok = result.returncode == 0 and ran is not None and int(ran.group(1)) > 0
    elif PYTEST_SIGNS.search(block.text):
        how = "python -m pytest"
        result = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", f"{module}.py"], project)
        ok = result.returncode == 0
    else:
        how = "a script"
        result = run([sys.executable, f"{module}.py"], project)
        ok = result.returncode == 0
    assert ok, f"{block.where}: this ```python sample fails when run as written ({how}):\n{shown(result)}"


# --- ini blocks --------------------------------------------------------------


def check_ini(block: Block, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "pytest.ini").write_text(block.text, encoding="utf-8")
    (project / "test_trivial.py").write_text("def test_nothing():\n    pass\n", encoding="utf-8")
    result = run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:cacheprovider",
            "-q",
            "--strict-config",
            "-W",
            "error::pytest.PytestConfigWarning",
        ],
        project,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, (
        f"{block.where}: this ```ini sample, as the pytest.ini of a project with one passing test, fails:\n"
        f"{shown(result)}"
    )


# --- sh blocks ---------------------------------------------------------------

# Shell lines of the README that this test does not run, and why.
NOT_RUN = {
    "python3 -m venv": "the Quickstart: bash .ci/run runs it on every supported Python",
    ".ci/sid": "needs root and a Debian sid root (.ci/sid setup)",
}

README_URL = "http://127.0.0.1:6060/"
README_PID = "4242"

STACK_SERVER = """\
import sys

import leakcheck

server = leakcheck.serve_stacks(port=0)
leakcheck.start_agent()
print(server.url, flush=True)
sys.stdin.read()
"""

UNITTEST_MODULE = """\
import threading
import unittest


class ServerTests(unittest.TestCase):
    def test_shutdown(self):
        stop = threading.Event()
        thread = threading.Thread(target=stop.wait)
        thread.start()
        stop.set()
        thread.join()
"""


@pytest.fixture
def stack_server() -> Iterator[subprocess.Popen[str]]:
    """A process that serves its stacks on a URL and through the agent, until its stdin closes."""
    process = subprocess.Popen(
        [sys.executable, "-c", STACK_SERVER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=environment(),
    )
    try:
        yield process
    finally:
        assert process.stdin is not None
        process.stdin.close()
        process.wait(timeout=TIMEOUT)
        assert process.stdout is not None
        process.stdout.close()


def check_sh(block: Block, tmp_path: Path, server: subprocess.Popen[str]) -> None:
    assert server.stdout is not None
    url = server.stdout.readline().strip()
    assert url.startswith("http://"), f"the stack server did not start: {url!r}"
    project = pytest_project(tmp_path / "project")
    (project / "server.py").write_text("print('served')\n", encoding="utf-8")
    (project / "tests").mkdir()
    (project / "tests" / "__init__.py").write_text("", encoding="utf-8")
    (project / "tests" / "test_server.py").write_text(UNITTEST_MODULE, encoding="utf-8")
    for index, line in enumerate(block.text.splitlines()):
        where = f"README.md:{block.line_of(index)}"
        words = shlex.split(line, comments=True)
        if not words:
            continue
        if words[:3] in (["python", "-m", "leakcheck"], ["python", "-m", "leakcheck.unittest"]):
            args = [
                sys.executable,
                *(url if word == README_URL else str(server.pid) if word == README_PID else word for word in words[1:]),
            ]
        elif words[0] == "pytest":
            args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *words[1:]]
        elif any(line.startswith(prefix) for prefix in NOT_RUN):
            continue
        else:
            raise AssertionError(f"{where}: tests/test_readme.py does not know how to check this shell line: {line}")
        result = run(args, project)
        assert result.returncode == 0, (
            f"{where}: this command fails: {line}\n(run as {shlex.join(args)})\n{shown(result)}"
        )


# --- output blocks -----------------------------------------------------------


def stdlib_dirs() -> List[str]:
    paths = sysconfig.get_paths()
    return sorted({paths["stdlib"], paths["platstdlib"]}, key=len, reverse=True)


def normalise(text: str, extra: Sequence[Tuple[str, str]] = ()) -> str:
    """Text with what changes from run to run or machine to machine replaced by placeholders.

    Idents, native ids, task ids, pids and times become placeholders; the standard
    library's directory becomes ``...`` and the repository's root is dropped; a
    standard library frame's line number (which changes between Python versions)
    becomes ``N``, in a frame line and in a summary line; the hundredths of a waited time are dropped.  Line numbers of
    every other frame stay as they are.
    """
    for old, new in extra:
        text = text.replace(old, new)
    for directory in stdlib_dirs():
        text = text.replace(f"{directory}{os.sep}", ".../")
    text = text.replace(f"{ROOT}{os.sep}", "")
    text = re.sub(r"\b(ident|native_id|loop_thread)=\d+", r"\1=N", text)
    text = re.sub(r"\bid=0x[0-9a-f]+", "id=0x?", text)
    text = re.sub(r"\bpid[ =]-?\d+", "pid N", text)
    text = re.sub(r"\btaken at [\d.]+", "taken at T", text)
    text = re.sub(r'(File "\.\.\./[^"]*", line )\d+', r"\g<1>N", text)
    text = re.sub(r"(\(\.\.\./[^():]*:)\d+\)", r"\g<1>N)", text)  # a summary line's standard library frame
    text = re.sub(r"\bwaited (\d+\.\d)\ds", r"waited \g<1>?s", text)
    return text


def is_gap(line: str) -> bool:
    return line.strip() == "..."


def lines_match(expected: Sequence[str], actual: Sequence[str]) -> bool:
    """Whether ``actual`` is ``expected`` with each gap line standing for any number of lines."""
    reachable = {0}  # positions in actual reachable after matching a prefix of expected
    for line in expected:
        if is_gap(line):
            reachable = set(range(min(reachable), len(actual) + 1)) if reachable else set()
        else:
            reachable = {position + 1 for position in reachable if position < len(actual) and actual[position] == line}
    return len(actual) in reachable


def assert_output(block: Block, actual: str, what: str, extra: Sequence[Tuple[str, str]] = ()) -> None:
    expected_lines = normalise(block.text, extra).splitlines()
    actual_lines = normalise(actual, extra).strip("\n").splitlines()
    if lines_match(expected_lines, actual_lines):
        return
    diff = "\n".join(
        difflib.unified_diff(expected_lines, actual_lines, f"{block.where} (normalised)", what, lineterm="")
    )
    raise AssertionError(
        f"{block.where}: this output block is not what {what} prints (a line '...' stands for any lines):\n"
        f"{diff}\n--- the real output ---\n{actual}"
    )


def section(text: str, start: str, end: Callable[[str], bool]) -> str:
    """The lines of ``text`` from the first one starting with ``start`` up to the first that ``end`` accepts."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if line.startswith(start)), None)
    assert first is not None, f"no line starts with {start!r} in:\n{text}"
    last = next((i for i in range(first + 1, len(lines)) if end(lines[i])), len(lines))
    return "\n".join(lines[first:last]).strip("\n") + "\n"


@cache
def example_output(name: str) -> str:
    result = run([sys.executable, f"examples/{name}"], ROOT)
    assert result.returncode == 0, f"examples/{name} fails:\n{shown(result)}"
    return result.stdout


def output_of_log_follow_server(block: Block, tmp_path: Path) -> None:
    out = example_output("log_follow_server.py")
    assert_output(
        block, section(out, "leakcheck: ", lambda line: line.startswith("=== ")), "examples/log_follow_server.py"
    )


def output_of_asyncio_task_leak(block: Block, tmp_path: Path) -> None:
    out = example_output("asyncio_task_leak.py")
    assert_output(
        block, section(out, "Task 'event-pump'", lambda line: not line.strip()), "examples/asyncio_task_leak.py"
    )


# Ends the inner session at once, once it has reported, although the leaked
# thread (not a daemon, blocked forever) would keep its process alive.
EXIT_AFTER_REPORT = """\
import os
import sys

status = 0


def pytest_sessionfinish(session, exitstatus):
    global status
    status = int(exitstatus)


def pytest_unconfigure(config):
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)
"""


def output_of_pytest_teardown_error(block: Block, tmp_path: Path) -> None:
    """The fixture sample without its last two lines (the client never hangs up), as tests/test_logs.py."""
    sample = marked_block("fixture-sample")
    lines = sample.text.splitlines(keepends=True)
    cut = [line for line in lines if "lines.put(None)" in line or "assert_no_stack_match(" in line]
    assert len(cut) == 2 and lines[-2:] == cut, (
        f"{sample.where}: the fixture sample no longer ends with lines.put(None) and assert_no_stack_match(...); "
        f"the output block at {block.where} shows it without them: update both"
    )
    project = pytest_project(tmp_path / "project")
    (project / "tests").mkdir()
    (project / "tests" / "test_logs.py").write_text("".join(lines[:-2]), encoding="utf-8")
    (project / "conftest.py").write_text(EXIT_AFTER_REPORT, encoding="utf-8")
    result = run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "tests/test_logs.py"], project)
    assert result.returncode == 1, shown(result)
    error = section(result.stdout, "_", lambda line: line.startswith("=====") or line.startswith("_____"))
    assert_output(block, error, "the fixture sample without its last two lines", [(f"{project}{os.sep}", "")])


DUMP_APP = """\
import asyncio

import leakcheck


async def follow_logs(queue):
    line = await queue.get()


async def flush_metrics():
    await asyncio.sleep(60)


def main():
    loop = asyncio.new_event_loop()
    loop.create_task(follow_logs(asyncio.Queue()), name="follow-logs")
    idle = asyncio.new_event_loop()
    idle.create_task(flush_metrics(), name="flush-metrics")
    idle.run_until_complete(asyncio.sleep(0))  # flush-metrics starts, then its loop stops
    print(leakcheck.serve_stacks().url, flush=True)
    loop.run_forever()


main()
"""


def snapshot_at_rest(app: Path, source: str, at_rest: Callable[[Any], bool]) -> Any:
    """Run ``source`` as ``app`` (it prints the URL of its stack endpoint), and fetch its snapshot until
    ``at_rest`` accepts it, or the time is up.  Each fetch is a round trip."""
    import leakcheck

    app.parent.mkdir()
    app.write_text(source, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, app.name], cwd=app.parent, stdout=subprocess.PIPE, text=True, env=environment()
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert url.startswith("http://"), f"the app did not start: {url!r}"
        deadline = time.monotonic() + TIMEOUT
        while True:
            taken = leakcheck.fetch_snapshot(url)
            if at_rest(taken) or time.monotonic() > deadline:
                return taken
    finally:
        process.kill()
        process.wait(timeout=TIMEOUT)
        if process.stdout is not None:
            process.stdout.close()


def output_of_dump(block: Block, tmp_path: Path) -> None:
    def at_rest(taken: Any) -> bool:
        # Both tasks suspended, and the main thread back in its selector (between two selects it
        # shows other frames).
        (main_thread,) = [info for info in taken.threads if info.name == "MainThread"]
        selecting = bool(main_thread.frames) and main_thread.frames[-1].function.startswith("selectors.")
        return len(taken.tasks) == 2 and all(task.awaiting for task in taken.tasks) and selecting

    app = tmp_path / "srv" / "app.py"
    taken = snapshot_at_rest(app, DUMP_APP, at_rest)
    # Tasks come in no particular order: take them in the README's.
    first, *blocks = str(taken).strip("\n").split("\n\n")
    blocks.sort(key=lambda text: (text.startswith("Task "), block.text.find(text.split(" (", 1)[0] + " (")))
    replace = [(f"{app.parent}{os.sep}", "/srv/")]
    assert_output(block, "\n\n".join([first, *blocks]), "a snapshot of DUMP_APP", replace)


WORKERS_APP = """\
import queue
import threading

import leakcheck

jobs = queue.Queue()


def worker():
    job = jobs.get()


for number in range(3):
    threading.Thread(target=worker, name=f"worker-{number}", daemon=True).start()
print(leakcheck.serve_stacks().url, flush=True)
threading.Event().wait()
"""


def output_of_grouped_dump(block: Block, tmp_path: Path) -> None:
    def at_rest(taken: Any) -> bool:  # every worker waits in the queue (a worker just started shows other frames)
        workers = [info for info in taken.threads if info.name.startswith("worker-")]
        return sum(bool(info.frames) and info.frames[-1].function.endswith("Condition.wait") for info in workers) == 3

    app = tmp_path / "srv" / "workers.py"
    taken = snapshot_at_rest(app, WORKERS_APP, at_rest)
    grouped = section(taken.dump(group=True), "3 threads with this stack:", lambda line: not line.strip())
    assert_output(block, grouped, "a grouped snapshot of WORKERS_APP", [(f"{app.parent}{os.sep}", "/srv/")])


def output_of_worker_leaks(block: Block, tmp_path: Path) -> None:
    out = example_output("worker_leaks.py")
    report = section(out, "leakcheck: ", lambda line: line.startswith("What to do:"))
    # What changes from run to run: the temporary directory, the pipe's inode, how long the
    # check took beyond its grace period (it also collects garbage once for the descriptors),
    # and the child's state.
    report = re.sub(r"/worker-[^/]+/", "/worker-v7dh6prh/", report)
    report = re.sub(r"pipe:\[\d+\]", "pipe:[562807]", report)
    report = re.sub(r"waited \d+\.\d+s", "waited 0.20s", report)
    # Under load the child may still be starting (running) when the grace period ends, not yet asleep in read().
    report = report.replace("[running]:\n  Command:", "[sleeping]:\n  Command:")
    report = report.replace(sys.executable, "python")
    assert_output(block, report, "examples/worker_leaks.py")


def output_of_readme_sample(block: Block, tmp_path: Path) -> None:
    """The output of the python block just before ``block``, run as a script."""
    (sample,) = [before for before in BLOCKS if before.lang == "python" and before.line < block.line][-1:]
    script = tmp_path / "sample.py"
    script.write_text(sample.text, encoding="utf-8")
    result = run([sys.executable, str(script)], tmp_path)
    assert result.returncode == 0, shown(result)
    assert_output(block, result.stdout, f"the sample at {sample.where}", [(f"{tmp_path}{os.sep}", "")])


OUTPUTS: Dict[str, Callable[[Block, Path], None]] = {
    "leakcheck: 1 leaked process,": output_of_worker_leaks,
    "leakcheck: 1 leaked probe resource": output_of_readme_sample,
    "leakcheck: 2 leaked threads": output_of_readme_sample,
    "leakcheck: 1 leaked task": output_of_readme_sample,
    "leakcheck: 1 leaked thread": output_of_log_follow_server,
    "Task 'event-pump'": output_of_asyncio_task_leak,
    "_": output_of_pytest_teardown_error,
    "leakcheck snapshot of pid": output_of_dump,
    "3 threads with this stack:": output_of_grouped_dump,
}


def check_output(block: Block, tmp_path: Path) -> None:
    for start, check in OUTPUTS.items():
        if block.text.startswith(start):
            check(block, tmp_path)
            return
    raise AssertionError(f"{block.where}: tests/test_readme.py does not know what prints this output block")


# --- the tests ---------------------------------------------------------------


def block_id(block: Block) -> str:
    return f"line{block.line}-{block.lang or 'output'}"


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.lang == "python"], ids=block_id)
def test_python_sample_runs_as_written(block: Block, tmp_path: Path) -> None:
    check_python(block, tmp_path)


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.lang == "ini"], ids=block_id)
def test_ini_sample_is_accepted(block: Block, tmp_path: Path) -> None:
    check_ini(block, tmp_path)


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.lang == "sh"], ids=block_id)
def test_shell_lines_run(block: Block, tmp_path: Path, stack_server: subprocess.Popen[str]) -> None:
    check_sh(block, tmp_path, stack_server)


@pytest.mark.parametrize("block", [block for block in BLOCKS if block.lang in ("", "text")], ids=block_id)
def test_output_block_is_a_real_output(block: Block, tmp_path: Path) -> None:
    check_output(block, tmp_path)


def test_every_block_is_checked() -> None:
    unknown = [block.where for block in BLOCKS if block.lang not in ("python", "ini", "sh", "", "text")]
    assert not unknown, f"tests/test_readme.py does not check the blocks at {', '.join(unknown)}"


def test_gaps_stand_for_any_number_of_lines() -> None:
    assert lines_match(["a", "  ...", "d"], ["a", "b", "c", "d"])
    assert lines_match(["a", "  ...", "d"], ["a", "d"])
    assert not lines_match(["a", "  ...", "d"], ["a", "b"])
    assert not lines_match(["a", "d"], ["a", "b", "d"])


def test_the_blocks_are_found_with_their_lines() -> None:
    text = "intro\n```python\nx = 1\n```\n- item\n\n  ```\n  out\n    deeper\n  ```\n"
    assert read_blocks(text) == [Block(2, "python", "x = 1\n"), Block(7, "", "out\n  deeper\n")]
