"""pytest plugin benchmark: what ``--leakcheck`` adds to the wall time of a suite of trivial tests.

Run from the repository root::

    python benchmarks/bench_pytest_plugin.py               # 2,000 tests, 5 rounds: about a minute
    python benchmarks/bench_pytest_plugin.py --strict      # exits 1 when a target is missed
    python benchmarks/bench_pytest_plugin.py --python /tmp/bench-venv/bin/python   # with pytest-threadleak

The script writes a generated suite into a temporary directory and runs pytest
on it as a subprocess (``python -m pytest -q -p no:cacheprovider``) in these
configurations, one warm-up run of each, then interleaved round by round:

a.  baseline: the leakcheck plugin disabled (``-p no:leakcheck``);
b.  ``--leakcheck``: every test checked, with creation tracking (its default);
b0. ``--leakcheck --leakcheck-track=no``: every test checked, without tracking;
c.  the plugin loaded but not enabled (no flag): its idle cost;
d0. pytest-threadleak's baseline: ``-p no:leakcheck``, pytest-threadleak loaded;
d.  ``--threadleak -p no:leakcheck``, against d0.

When pytest-threadleak is importable, a, b, b0 and c also pass ``-p no:threadleak``,
so each configuration differs from its baseline by one plugin only.  d0 and d
are skipped, with the reason, when the interpreter given by ``--python`` cannot
import pytest-threadleak.  Keep it out of the project's test environment;
benchmarks/README.md shows a throwaway venv.

The issue's figure is the median over the rounds of the whole pytest process's
wall time, against the baseline's: ``--leakcheck`` (b, tracking creation) may
add at most 5%, and ``--leakcheck --leakcheck-track=no`` (b0) at most 3%.  Other
views of the same runs help to read a result from a busy machine: the median of
each round's own ratio, the ratio of the fastest runs, CPU time, the session
time measured inside pytest, and the median time of one test's
``pytest_runtest_protocol`` (setup, call and teardown) inside pytest.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from typing import Dict, List, Optional, Sequence

try:
    import resource
except ImportError:  # Windows: no CPU times of child processes
    resource = None  # type: ignore[assignment]

TESTS_PER_MODULE = 100
TARGETS = {"b": 0.05, "b0": 0.03}
"""What each checked configuration may add to the baseline's wall time: --leakcheck with creation
tracking (its default) 5%, without it 3%."""
TRACKING_ENV = "LEAKCHECK_TRACK"  # would override the plugin's default: dropped from every run's environment
TIMING_ENV = "LEAKCHECK_BENCH_TIMING_FILE"
BASE_ARGS = ("-q", "-p", "no:cacheprovider")

# --------------------------------------------------------------------------- the generated suite

PYTEST_INI = """\
[pytest]
# The generated suite's own configuration, so that no project's ini file applies.
"""

CONFTEST = f'''\
"""Fixtures of the generated tests, and the timers of bench_pytest_plugin.py."""

import json
import os
import statistics
import time

import pytest

_session = []
_tests = []


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    _session.append(time.perf_counter())


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.perf_counter()
    yield
    _tests.append(time.perf_counter() - started)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    path = os.environ.get("{TIMING_ENV}")
    if path and _session and _tests:
        timings = {{"session": time.perf_counter() - _session[0], "test": statistics.median(_tests)}}
        with open(path, "w") as file:
            json.dump(timings, file)


@pytest.fixture
def resource():
    value = {{"opened": True}}
    yield value
    value["opened"] = False


@pytest.fixture(scope="module")
def shared():
    return {{"name": "shared"}}
'''


def _test_source(index: int) -> str:
    """One trivial test; one in ten uses the function-scoped fixture, one in ten the module-scoped one."""
    if index % 10 == 3:
        return f"def test_{index}(resource):\n    assert resource['opened']\n"
    if index % 10 == 7:
        return f"def test_{index}(shared):\n    assert shared['name'] == 'shared'\n"
    return f"def test_{index}():\n    assert True\n"


def write_suite(root: str, tests: int) -> int:
    """Write ``tests`` trivial tests, 100 per module; return the number of modules."""
    with open(os.path.join(root, "pytest.ini"), "w") as file:
        file.write(PYTEST_INI)
    with open(os.path.join(root, "conftest.py"), "w") as file:
        file.write(CONFTEST)
    modules = 0
    for start in range(0, tests, TESTS_PER_MODULE):
        count = min(TESTS_PER_MODULE, tests - start)
        source = "\n\n".join(_test_source(index) for index in range(count))
        with open(os.path.join(root, f"test_generated_{modules:03d}.py"), "w") as file:
            file.write(source)
        modules += 1
    return modules


LEAKY_TEST = """\
import threading

_release = threading.Event()


def test_leaks_a_thread():
    threading.Thread(target=_release.wait, name="bench-sanity-leak", daemon=True).start()
"""


# --------------------------------------------------------------------------- configurations and runs


class Config:
    """One way to run pytest on the suite, the configuration it is compared with, and its runs."""

    def __init__(self, key: str, label: str, args: Sequence[str], baseline: Optional[str]) -> None:
        self.key = key
        self.label = label
        self.args = tuple(args)
        self.baseline = baseline
        self.wall: List[float] = []  # seconds, the whole pytest process
        self.cpu: List[float] = []  # seconds, user + system
        self.session: List[float] = []  # seconds, pytest_sessionstart .. pytest_sessionfinish
        self.test: List[float] = []  # seconds, median pytest_runtest_protocol of one run


def make_configs(threadleak: bool) -> List[Config]:
    no_threadleak = ("-p", "no:threadleak") if threadleak else ()
    configs = [
        Config("a", "a  baseline: -p no:leakcheck", ("-p", "no:leakcheck", *no_threadleak), None),
        Config("b", "b  --leakcheck (tracking creation)", ("--leakcheck", *no_threadleak), "a"),
        Config(
            "b0", "b0 --leakcheck --leakcheck-track=no", ("--leakcheck", "--leakcheck-track=no", *no_threadleak), "a"
        ),
        Config("c", "c  plugin loaded, no flag", no_threadleak, "a"),
    ]
    if threadleak:
        configs += [
            Config("d0", "d0 threadleak loaded, no flag", ("-p", "no:leakcheck"), "a"),
            Config("d", "d  --threadleak", ("-p", "no:leakcheck", "--threadleak"), "d0"),
        ]
    return configs


class Run:
    """One pytest process."""

    def __init__(self, wall: float, cpu: float, timings: Dict[str, float], output: str, status: int) -> None:
        self.wall = wall
        self.cpu = cpu
        self.session = timings.get("session", float("nan"))
        self.test = timings.get("test", float("nan"))
        self.output = output
        self.status = status


def _children_cpu() -> float:
    if resource is None:
        return float("nan")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_pytest(
    python: str, root: str, args: Sequence[str], scratch: str, wrapper: Sequence[str] = (), hash_seed: str = ""
) -> Run:
    """Run pytest once on the suite in ``root``, under ``wrapper`` (a command prefix) if given."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST_")}
    if hash_seed:
        env["PYTHONHASHSEED"] = hash_seed
    for key in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE", TRACKING_ENV):
        env.pop(key, None)
    # Bytecode is cached, as on most machines, but in the scratch directory, never next to the sources.
    env["PYTHONPYCACHEPREFIX"] = os.path.join(scratch, "pycache")
    timing_file = env[TIMING_ENV] = os.path.join(scratch, f"timings-{os.getpid()}-{threading.get_ident()}.json")
    if os.path.exists(timing_file):
        os.remove(timing_file)
    command = [*wrapper, python, "-m", "pytest", *BASE_ARGS, *args]
    cpu = _children_cpu()
    started = time.perf_counter()
    completed = subprocess.run(command, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    cpu = _children_cpu() - cpu
    try:
        with open(timing_file) as file:
            timings = json.load(file)
    except (OSError, ValueError):
        timings = {}
    return Run(wall, cpu, timings, completed.stdout.decode(errors="replace"), completed.returncode)


VALGRIND = ("valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null")
_INSTRUCTIONS = re.compile(r"I\s+refs:\s+([\d,]+)")


def count_instructions(python: str, root: str, configs: Sequence[Config], scratch: str, tests: int) -> Dict[str, int]:
    """Instructions each configuration executes, once each under cachegrind: a figure free of machine noise.

    A fixed hash seed makes the count repeat to within a few instructions.
    The bytecode cache is the one the timed runs warmed, so no run counts a
    compilation.
    """

    def count(config: Config) -> int:
        run = check_run(config, run_pytest(python, root, config.args, scratch, VALGRIND, "0"), tests)
        found = _INSTRUCTIONS.search(run.output)
        if found is None:
            sys.exit(f"no instruction count in cachegrind's output for {config.label!r}:\n{run.output[-2000:]}")
        return int(found.group(1).replace(",", ""))

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        counts = dict(zip((config.key for config in configs), pool.map(count, configs), strict=True))
    return counts


def instructions_table(configs: Sequence[Config], counts: Dict[str, int], tests: int) -> None:
    cells = []
    for config in configs:
        value = counts[config.key]
        row = [config.label, config.baseline or "-", f"{value / 1e6:,.1f} M"]
        if config.baseline is None:
            cells.append([*row, "-", "-"])
        else:
            base = counts[config.baseline]
            cells.append([*row, f"{(value / base - 1) * 100:+.2f}%", f"{(value - base) / tests:+,.0f}"])
    print_table(["configuration", "vs", "instructions", "ratio", "per test"], cells)


def probe(python: str) -> Dict[str, str]:
    """What the interpreter under test has: versions, and why pytest-threadleak is missing."""
    code = textwrap.dedent(
        """\
        import json, platform
        info = {"python": platform.python_version()}
        for name in ("pytest", "leakcheck"):
            module = __import__(name)
            info[name] = getattr(module, "__version__", "?") + " " + module.__file__
        try:
            import pytest_threadleak
            info["threadleak"] = pytest_threadleak.__file__
        except ImportError as error:
            info["threadleak_error"] = f"{type(error).__name__}: {error}"
        print(json.dumps(info))
        """
    )
    completed = subprocess.run([python, "-c", code], capture_output=True, check=False)
    if completed.returncode != 0:
        sys.exit(f"{python} cannot import pytest and leakcheck:\n{completed.stderr.decode(errors='replace')}")
    info: Dict[str, str] = json.loads(completed.stdout)
    return info


CREATED_AT = "Created at"
"""What a report with creation sites shows, and one without does not."""
CHECKED = ("b", "b0", "d")
"""The configurations that check tests: the leaking test fails under them, and passes under the others."""


def sanity_check(python: str, configs: Sequence[Config], scratch: str) -> None:
    """Each configuration must do what its label says.

    Only b, b0 and d fail a test that leaks a thread; b's report says where
    the thread was created, b0's does not.
    """
    root = os.path.join(scratch, "sanity")
    os.mkdir(root)
    with open(os.path.join(root, "pytest.ini"), "w") as file:
        file.write(PYTEST_INI)
    with open(os.path.join(root, "test_leaky.py"), "w") as file:
        file.write(LEAKY_TEST)
    for config in configs:
        args = (*config.args, "--leakcheck-timeout=0.05") if config.key in ("b", "b0") else config.args
        run = run_pytest(python, root, args, scratch)
        should_fail = config.key in CHECKED
        named = "bench-sanity-leak" in run.output
        if config.key in ("b", "b0"):
            tracked = config.key == "b"
            if (CREATED_AT in run.output) != tracked:
                should = "show" if tracked else "not show"
                sys.exit(f"sanity check: {config.label!r} should {should} {CREATED_AT!r} in its report:\n{run.output}")
        if (run.status == 1 and named) if should_fail else run.status == 0:
            continue
        expected = "fail, naming bench-sanity-leak" if should_fail else "pass"
        sys.exit(f"sanity check: {config.label!r} should {expected} (exit status {run.status}):\n{run.output}")


def check_run(config: Config, run: Run, tests: int) -> Run:
    if run.status != 0 or f"{tests} passed" not in run.output:
        tail = run.output[-3000:]
        sys.exit(f"configuration {config.label!r}: expected '{tests} passed', exit status {run.status}:\n{tail}")
    return run


# --------------------------------------------------------------------------- the tables


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def ratio(values: Sequence[float], base: Sequence[float]) -> float:
    return median(values) / median(base)


def paired(values: Sequence[float], base: Sequence[float]) -> float:
    """The median of each round's own ratio: drift between rounds cancels out."""
    return median([x / y for x, y in zip(values, base, strict=True)])


def percent(value: float) -> str:
    return f"{(value - 1) * 100:+.1f}%"


def print_table(headers: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()
    print(line)
    print("-" * len(line))
    for c in cells:
        print("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)).rstrip())


def wall_table(configs: Sequence[Config], tests: int) -> None:
    """The issue's figure: the whole process's wall time."""
    by_key = {config.key: config for config in configs}
    headers = ("configuration", "vs", "wall (median)", "min..max", "ratio", "paired", "fastest", "per test")
    cells = []
    for config in configs:
        row = [config.label, config.baseline or "-", f"{median(config.wall):.3f} s"]
        row.append(f"{min(config.wall):.3f}..{max(config.wall):.3f}")
        if config.baseline is None:
            row += ["-", "-", "-", "-"]
        else:
            base = by_key[config.baseline].wall
            wall = ratio(config.wall, base)
            per_test = (median(config.wall) - median(base)) / tests * 1e6
            row += [f"{wall:.3f} ({percent(wall)})", percent(paired(config.wall, base))]
            row += [percent(min(config.wall) / min(base)), f"{per_test:+.1f} us"]
        cells.append(row)
    print_table(headers, cells)


def inside_table(configs: Sequence[Config]) -> None:
    """The same runs seen from inside: CPU time, session time, one test's protocol."""
    by_key = {config.key: config for config in configs}
    headers = ("configuration", "vs", "CPU", "ratio", "session", "ratio", "one test", "added", "fastest", "added")
    cells = []
    for config in configs:
        row = [config.label, config.baseline or "-", f"{median(config.cpu):.3f} s"]
        base = by_key[config.baseline] if config.baseline else None
        row.append(percent(ratio(config.cpu, base.cpu)) if base else "-")
        row.append(f"{median(config.session):.3f} s")
        row.append(percent(ratio(config.session, base.session)) if base else "-")
        for pick in (median, min):
            test = pick(config.test)
            row.append(f"{test * 1e6:.1f} us")
            row.append(f"{(test - pick(base.test)) * 1e6:+.1f} us ({percent(test / pick(base.test))})" if base else "-")
        cells.append(row)
    print_table(headers, cells)


# --------------------------------------------------------------------------- main


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description="leakcheck pytest plugin benchmark (see benchmarks/README.md)")
    parser.add_argument("--tests", type=int, default=2_000, help="number of generated trivial tests (default 2000)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds of every configuration (default 5)")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs pytest (default: the one running this script)"
    )
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", action="store_true", help="keep the generated suite and print where it is")
    parser.add_argument(
        "--instructions",
        action="store_true",
        help="also count each configuration's instructions once under valgrind's cachegrind (needs valgrind)",
    )
    args = parser.parse_args(argv)
    if args.tests < 1 or args.rounds < 1:
        parser.error("--tests and --rounds must be at least 1")
    if args.instructions and shutil.which(VALGRIND[0]) is None:
        parser.error("--instructions needs valgrind on PATH")

    info = probe(args.python)
    threadleak = "threadleak" in info
    print(
        f"leakcheck pytest plugin benchmark: Python {info['python']} ({args.python}), "
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    )
    print(f"  pytest {info['pytest']}")
    print(f"  leakcheck {info['leakcheck']}")
    if threadleak:
        print(f"  pytest-threadleak {info['threadleak']}")
    else:
        print(f"  configurations d0, d (pytest-threadleak) skipped: {info['threadleak_error']} in {args.python}")

    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="leakcheck-bench-pytest-")
    try:
        root = os.path.join(scratch, "suite")
        os.mkdir(root)
        modules = write_suite(root, args.tests)
        print(
            f"  suite: {args.tests:,} tests in {modules} modules, {TESTS_PER_MODULE} per module; one in ten uses a "
            f"function-scoped yield fixture, one in ten a module-scoped one; {args.rounds} rounds"
        )
        configs = make_configs(threadleak)
        sanity_check(args.python, configs, scratch)
        for config in configs:  # warm-up: bytecode caches, assertion rewriting, the OS's file cache
            check_run(config, run_pytest(args.python, root, config.args, scratch), args.tests)
        for index in range(args.rounds):
            for config in configs if index % 2 == 0 else reversed(configs):
                run = check_run(config, run_pytest(args.python, root, config.args, scratch), args.tests)
                config.wall.append(run.wall)
                config.cpu.append(run.cpu)
                config.session.append(run.session)
                config.test.append(run.test)
        counts = count_instructions(args.python, root, configs, scratch, args.tests) if args.instructions else {}
        if args.keep:
            print(f"  generated suite kept in {root}")
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    print()
    print("Whole pytest process, wall time (the issue's figure). ratio: of the medians; paired: median of each")
    print("round's own ratio; fastest: ratio of the fastest runs; per test: (median - baseline median) / tests")
    wall_table(configs, args.tests)
    print()
    print("Inside the same runs: CPU time (user + system), pytest_sessionstart..pytest_sessionfinish, and one")
    print("test's pytest_runtest_protocol (setup + call + teardown): each run's median, the median of those")
    print("and the fastest of those")
    inside_table(configs)
    print()
    if counts:
        print("Instructions executed by the whole pytest process, counted once under cachegrind with a fixed")
        print("hash seed: the same work as the wall time, without the machine's noise")
        instructions_table(configs, counts, args.tests)
        print()

    by_key = {config.key: config for config in configs}
    a, c = by_key["a"], by_key["c"]
    missed = []
    for key, target in TARGETS.items():
        checked = by_key[key]
        added = ratio(checked.wall, a.wall) - 1
        ok = added <= target
        if not ok:
            missed.append(f"{checked.label.split(None, 1)[1]} adds {added * 100:.1f}% (target <= {target * 100:.0f}%)")
        print(
            f"{key}: {checked.label.split(None, 1)[1]} adds {added * 100:.1f}% (target <= {target * 100:.0f}%): "
            f"{'OK' if ok else 'MISSED'}  [paired {percent(paired(checked.wall, a.wall))}, "
            f"fastest {percent(min(checked.wall) / min(a.wall))}, CPU {percent(ratio(checked.cpu, a.cpu))}; "
            f"{(median(checked.test) - median(a.test)) * 1e6:+.1f} us per test inside]"
        )
        if counts:
            added_instructions = counts[key] / counts["a"] - 1
            verdict = "OK" if added_instructions <= target else "MISSED"
            print(f"{key}: executes {added_instructions * 100:+.2f}% instructions (noise-free view): {verdict}")
    b, b0 = by_key["b"], by_key["b0"]
    print(
        f"creation tracking adds {percent(ratio(b.wall, b0.wall))} to --leakcheck (info)  "
        f"[paired {percent(paired(b.wall, b0.wall))}, CPU {percent(ratio(b.cpu, b0.cpu))}; "
        f"{(median(b.test) - median(b0.test)) * 1e6:+.1f} us per test inside]"
    )
    print(f"plugin loaded but not enabled adds {percent(ratio(c.wall, a.wall))} (info)")
    if threadleak:
        d, d0 = by_key["d"], by_key["d0"]
        print(
            f"pytest-threadleak --threadleak adds {percent(ratio(d.wall, d0.wall))} (info)"
            f"  [paired {percent(paired(d.wall, d0.wall))}, fastest {percent(min(d.wall) / min(d0.wall))}, "
            f"CPU {percent(ratio(d.cpu, d0.cpu))}; {(median(d.test) - median(d0.test)) * 1e6:+.1f} us per test inside]"
        )
    for miss in missed:
        print(f"TARGET MISSED: {miss}")
    print(f"total {time.perf_counter() - started:.1f} s")
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
