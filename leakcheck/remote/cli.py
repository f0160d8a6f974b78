"""``python -m leakcheck``: read and check another process's stacks from the shell.

::

    python -m leakcheck stacks PID|URL [--match KEYWORD]... [--json | --group | --no-group]
    python -m leakcheck check PID|URL [--absent KEYWORD]... [--present KEYWORD]... [--timeout S]
    python -m leakcheck run [--fail] [--timeout S] script.py [args...]   (or -m module [args...])
    python -m leakcheck --version

A PID names a process that called ``leakcheck.start_agent()``, or any CPython
3.14+ process of this user, which is attached to (``sys.remote_exec``); a URL a stack
endpoint (``serve_stacks()``, or ``wsgi_app``/``asgi_app`` in a web app).
``stacks`` shows identical stacks once, with their count, when more than
20 share one (``--group`` always, ``--no-group`` never).  ``check`` exits 0
when every ``--absent`` keyword matches no stack and every ``--present``
keyword matches one, 1 with the offending stacks when not, and 2 when it
cannot tell: a usage error or a target it cannot reach.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import Optional, Sequence

from .. import __version__
from ..engine.options import parse_seconds
from ..reporting.dump import groups
from ..reporting.snapshot import Snapshot
from .assertions import assert_no_stack_match, assert_stack_match
from .client import RemoteError, Source, check_source, take

PROG = "python -m leakcheck"
VERSION = f"leakcheck {__version__}"


def _target(text: str) -> Source:
    if re.fullmatch(r"[+-]?[0-9]+", text):  # ASCII digits only: int() would take other scripts' digits too
        try:
            return check_source(int(text), "target")
        except ValueError:  # a pid that is not positive, or too long to convert
            raise argparse.ArgumentTypeError(f"the target must be a positive PID, not {text[:30]}") from None
    if "://" not in text:
        raise argparse.ArgumentTypeError(f"the target must be a PID or an http:// or https:// URL, not {text!r}")
    try:
        return check_source(text, "target")
    except (TypeError, ValueError) as problem:
        message = str(problem).replace("target: source", "the target", 1)
        raise argparse.ArgumentTypeError(message.removeprefix("target: ")) from None


def _seconds(text: str) -> float:
    try:
        return parse_seconds(text, "--timeout")
    except ValueError as problem:
        raise argparse.ArgumentTypeError(str(problem)) from None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Read and check the thread and task stacks of another process."
    )
    parser.add_argument("--version", action="version", version=VERSION)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    target_help = "a pid (running leakcheck.start_agent(), or any Python 3.14+ process), or a stack endpoint's URL"

    stacks = commands.add_parser("stacks", help="print the stacks of a process", description="Print the dump.")
    stacks.add_argument("target", type=_target, metavar="PID|URL", help=target_help)
    stacks.add_argument("--match", action="append", default=[], metavar="KEYWORD", help="keep stacks containing it")
    stacks.add_argument("--json", action="store_true", help="print JSON instead of the text dump")
    grouping = stacks.add_mutually_exclusive_group()
    grouping.add_argument(
        "--group",
        action="store_true",
        default=None,
        help=f"show identical stacks once, with their count (the default when more than {GROUP_ABOVE} share one)",
    )
    grouping.add_argument("--no-group", dest="group", action="store_false", help="show every stack")

    check = commands.add_parser(
        "check",
        help="exit 0 when stacks are absent or present as asked, 1 otherwise",
        description="Exit 0 when the condition holds; 1, printing the offending stacks, when it does not.",
    )
    check.add_argument("target", type=_target, metavar="PID|URL", help=target_help)
    check.add_argument("--absent", action="append", default=[], metavar="KEYWORD", help="no stack may contain it")
    check.add_argument("--present", action="append", default=[], metavar="KEYWORD", help="some stack must contain it")
    check.add_argument(
        "--timeout", type=_seconds, default=0.0, metavar="S", help="keep fetching for up to S seconds (default 0)"
    )
    for command in (stacks, check):
        command.add_argument("--token", default=None, help="bearer token of the endpoint (URL targets)")

    run = commands.add_parser(
        "run",
        help="run a program; when its main code ends, show what keeps it alive",
        description="Run a Python program. When its main code has finished but non-daemon threads or pending "
        "tasks keep the process alive, print them with their stacks.",
    )
    run.add_argument("--fail", action="store_true", help="then exit with status 1 at once instead of waiting")
    run.add_argument(
        "--timeout", type=_seconds, default=1.0, metavar="S", help="grace period for them to end (default 1)"
    )
    run.add_argument("-m", dest="module", metavar="MODULE", help="run a library module as a script")
    run.add_argument("program", nargs=argparse.REMAINDER, metavar="script.py [args...]")
    for command in (stacks, check, run):
        command.set_defaults(parser=command)
    return parser


GROUP_ABOVE = 20
"""``stacks`` groups identical stacks by default when more than this many share one."""


def _grouped(taken: Snapshot, asked: Optional[bool]) -> bool:
    if asked is not None:
        return asked
    return any(len(members) > GROUP_ABOVE for _, records in taken.records for members in groups(records))


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "run":
        return _run(args)
    token = args.token
    if token is not None and not isinstance(args.target, str):
        args.parser.error("--token goes with a URL target")
    try:
        if args.command == "stacks":
            from .endpoint import check_token, select_stacks

            if args.json and args.group:
                args.parser.error("--group is for the text dump: the JSON is never grouped")
            taken = select_stacks(take(args.target, 5.0, check_token(token)), args.match)
            sys.stdout.write(taken.to_json() + "\n" if args.json else taken.dump(group=_grouped(taken, args.group)))
            return 0
        if not args.absent and not args.present:
            args.parser.error("check needs at least one --absent or --present keyword")
        failures = []
        for keyword in args.present:
            try:
                assert_stack_match(keyword, timeout=args.timeout, source=args.target, token=token)
            except AssertionError as problem:
                failures.append(str(problem))
        if args.absent:
            try:
                assert_no_stack_match(*args.absent, timeout=args.timeout, source=args.target, token=token)
            except AssertionError as problem:
                failures.append(str(problem))
    except (RemoteError, ValueError) as problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    if failures:
        print("\n\n".join(failures))
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    from .run import NotRunnable, check_program, run_program

    parser: argparse.ArgumentParser = args.parser
    module: Optional[str] = args.module
    try:
        if module is not None:
            return run_program(module, args.program, True, args.fail, args.timeout)
        program: Optional[str] = args.program[0] if args.program else None
        problem = check_program(program)
        if problem is not None or program is None:
            parser.error(problem or "run needs a script")
        return run_program(program, args.program[1:], False, args.fail, args.timeout)
    except NotRunnable as problem:
        parser.error(str(problem))


if __name__ == "__main__":
    sys.exit(main())
