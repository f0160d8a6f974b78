"""The pytest plugin's settings: command line, ini file and marker, validated.

Every mistake becomes a ``pytest.UsageError`` naming the bad setting, raised
when the run starts (command line and ini) or when the tests are collected
(markers), never a surprise at the end of some test.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional, Tuple

import pytest

from ..engine.matching import (
    Matcher,
    MatcherLike,
    ignore_any_function,
    ignore_created_by,
    ignore_name,
    ignore_top_function,
    validate_matchers,
)
from ..engine.options import NOTHING_CHECKED, OPTION_NAMES, Options, make_options, parse_kinds, parse_seconds
from ..kinds.registry import default_kinds, flag_kinds
from ..kinds.tracking import env_default, parse_flag
from .pytest_loops import is_anyio_runner_task

MARKER = "leakcheck"
SCOPES = ("test", "module", "session")
MARKER_KEYS = ("enabled", *OPTION_NAMES)

_MATCHER_PREFIXES = {
    "name": ignore_name,
    "top": ignore_top_function,
    "any": ignore_any_function,
    "created": ignore_created_by,
}

MARKER_HELP = (
    f"{MARKER}(enabled=True, **options): check this test (class, module) for leaked threads and "
    f"asyncio tasks; options as for leakcheck.no_leaks: {', '.join(OPTION_NAMES)}"
)


def add_options(parser: pytest.Parser) -> None:
    group = parser.getgroup("leakcheck", "leakcheck: leaked threads and asyncio tasks")
    group.addoption(
        "--leakcheck",
        action="store_true",
        default=None,
        help="fail tests that leave threads or asyncio tasks running (ini: leakcheck = true)",
    )
    group.addoption(
        "--leakcheck-timeout",
        metavar="SECONDS",
        default=None,
        help="grace period for threads and tasks to finish after each check's window (default 1.0)",
    )
    group.addoption(
        "--leakcheck-kinds",
        metavar="KINDS",
        default=None,
        help=f"comma-separated kinds to check: {','.join(flag_kinds())} (default: {','.join(default_kinds())})",
    )
    group.addoption(
        "--leakcheck-track",
        metavar="yes|no",
        nargs="?",
        const="yes",
        default=None,
        help="record where each thread, task and process is created, and blame each test only for what it "
        "started (default: yes, or what LEAKCHECK_TRACK says)",
    )
    group.addoption(
        "--leakcheck-scope",
        metavar="SCOPE",
        default=None,
        help="check each test (test, the default), each module (module) or the whole run (session)",
    )
    parser.addini("leakcheck", "check every test for leaked threads and tasks", type="bool", default=False)
    timeout_help = "grace period in seconds (default 1.0)"
    if pytest.version_tuple >= (8, 4):  # a float option takes a TOML number in pytest 9's [tool.pytest]
        parser.addini("leakcheck_timeout", timeout_help, type="float", default=None)
    else:
        parser.addini("leakcheck_timeout", timeout_help, default=None)
    parser.addini("leakcheck_kinds", f"kinds to check: {','.join(flag_kinds())}", default=None)
    parser.addini("leakcheck_scope", "test, module or session", default=None)
    parser.addini("leakcheck_track", "record creation sites; blame only what a test started: yes or no", default=None)
    parser.addini(
        "leakcheck_ignore",
        "never report these; one per line: name:REGEX, top:QUALNAME, any:QUALNAME or created:QUALNAME",
        type="linelist",
        default=[],
    )


class Settings(NamedTuple):
    """The run-wide settings, from the command line and the ini file."""

    enabled: bool
    scope: str
    defaults: Mapping[str, Any]
    """Keyword options for :func:`leakcheck.no_leaks` that markers start from."""

    default_options: Options
    """The options of a check without a marker, validated once."""

    given: Tuple[str, ...] = ()
    """The settings given besides ``leakcheck`` itself, as named to the user: ``--leakcheck-timeout``,
    ``ini leakcheck_ignore``.  They do nothing in a run that checks no test."""

    def options(self, marker_options: Mapping[str, Any]) -> Options:
        """The options of one check: the run-wide ones, overridden by a marker's."""
        if not marker_options:
            return self.default_options
        merged = dict(self.defaults)
        merged.update(marker_options)
        if "ignore" in marker_options:  # ini matchers always apply; a marker adds its own
            merged["ignore"] = (*self.defaults.get("ignore", ()), *validate_matchers(marker_options["ignore"]))
        return make_options(merged, where="the marker")


def parse_matcher(line: str) -> Matcher:
    """One ``leakcheck_ignore`` line: ``name:REGEX``, ``top:QUALNAME``, ``any:QUALNAME`` or ``created:QUALNAME``."""
    prefix, separator, value = line.partition(":")
    make = _MATCHER_PREFIXES.get(prefix.strip())
    if not separator or make is None:
        raise ValueError(
            f"leakcheck_ignore: {line!r} must be name:REGEX, top:QUALNAME, any:QUALNAME or created:QUALNAME"
        )
    try:
        return make(value.strip())
    except (TypeError, ValueError, re.error) as error:
        raise ValueError(f"leakcheck_ignore: {line!r}: {error}") from None


# Before pytest 8 an ini key that is not set reads as "", not as its default None:
# only from pytest 8 on can an empty value be told from an absent one.
_EMPTY_INI_IS_UNSET = pytest.version_tuple < (8,)


def _setting(config: pytest.Config, option: str, what: str) -> Tuple[Optional[str], str]:
    """The text of the setting ``option``, from the command line or else the ini file, and its name there.

    The text is None when the setting is not given.  An empty value is a
    mistake, not a way to ask for the default.  ``what`` says what the value
    must be, for the error when the ini file's value is not of its type.
    """
    flag = "--" + option.replace("_", "-")
    value = config.getoption(option)
    if value is not None:
        text = str(value).strip()
        if not text:
            raise ValueError(f"{flag} is empty: give it {what}, or leave it out for the default")
        return text, flag
    try:
        value = config.getini(option)
    except (ValueError, pytest.UsageError) as error:  # a float option given as text that is no number
        raise ValueError(f"{flag} (ini {option}) must be {what} ({error})") from None
    if value is None:
        return None, flag
    text = str(value).strip()
    if not text:
        if _EMPTY_INI_IS_UNSET:
            return None, flag
        raise ValueError(f"ini {option} is empty: give it {what}, or leave it out for the default")
    return text, f"ini {option}"


def _ini_flag(config: pytest.Config, name: str) -> bool:
    try:
        return bool(config.getini(name))
    except (ValueError, pytest.UsageError) as error:  # pytest's message does not name the key
        raise ValueError(f"ini {name} must be true or false ({error})") from None


def read_settings(config: pytest.Config) -> Settings:
    """Validate the command line and ini settings, or fail the run with a usage error."""
    try:
        enabled = bool(config.getoption("leakcheck")) or _ini_flag(config, "leakcheck")
        defaults: Dict[str, Any] = {}
        given: List[str] = []
        timeout, name = _setting(config, "leakcheck_timeout", "a number of seconds")
        if timeout is not None:
            given.append(name)
            defaults["timeout"] = parse_seconds(timeout, "--leakcheck-timeout (ini leakcheck_timeout)")
        kinds, name = _setting(config, "leakcheck_kinds", f"a comma-separated list of {', '.join(flag_kinds())}")
        if kinds is not None:
            given.append(name)
            defaults.update(parse_kinds(kinds, "--leakcheck-kinds (ini leakcheck_kinds)"))
        scope, name = _setting(config, "leakcheck_scope", f"one of {', '.join(SCOPES)}")
        if scope is not None:
            given.append(name)
            if scope not in SCOPES:
                scopes = ", ".join(SCOPES)
                raise ValueError(f"--leakcheck-scope (ini leakcheck_scope) must be one of {scopes}, not {scope!r}")
        track, name = _setting(config, "leakcheck_track", "yes or no")
        if track is not None:
            given.append(name)
            try:
                defaults["track_creation"] = parse_flag(track, "--leakcheck-track (ini leakcheck_track)")
            except ValueError as error:
                if name.startswith("--"):  # a bare --leakcheck-track took the next argument (a path) as its value
                    raise ValueError(f"{error}: give the value after '=' (--leakcheck-track=yes)") from None
                raise
        else:  # on by default: a checked run is where "created at" is needed most
            from_env = env_default()
            defaults["track_creation"] = True if from_env is None else from_env
        lines: List[str] = [line for line in config.getini("leakcheck_ignore") if line.strip()]
        if lines:
            given.append("ini leakcheck_ignore")
        matchers: Tuple[MatcherLike, ...] = tuple(parse_matcher(line) for line in lines)
        # anyio runs every test and fixture in one task of its own, which outlives them.
        defaults["ignore"] = (*matchers, is_anyio_runner_task)
        default_options = make_options(defaults)
    except (TypeError, ValueError) as error:
        raise pytest.UsageError(f"leakcheck: {error}") from None
    return Settings(
        enabled=enabled,
        scope=scope or "test",
        defaults=defaults,
        default_options=default_options,
        given=tuple(given),
    )


def unused_settings_warning(settings: Settings, config: pytest.Config) -> Optional[str]:
    """The warning for settings given to a run in which no test is checked, if it deserves one.

    Settings on the command line were given for this very run.  Settings in the
    ini file also serve the marked tests of the suite, which a narrower run
    (paths, ``-k``, ``-m``, deselected tests) may simply not include: they are
    only warned about when the run was not narrowed.
    """
    from_command_line = [name for name in settings.given if name.startswith("--")]
    from_ini = [name for name in settings.given if not name.startswith("--")]
    if not from_command_line and not (from_ini and not _narrowed(config)):
        return None
    names = " and ".join(from_command_line or from_ini)
    verb = "does" if len(from_command_line or from_ini) == 1 else "do"
    return (
        f"leakcheck: {names} {verb} nothing in this run: no test is checked. Checks are turned on by --leakcheck "
        f"(ini leakcheck = true), by @pytest.mark.{MARKER} or by the leakcheck fixture"
    )


def _narrowed(config: pytest.Config) -> bool:
    """Whether the run was narrowed to part of the suite."""
    option = config.option
    if getattr(option, "keyword", "") or getattr(option, "markexpr", "") or getattr(option, "deselect", None):
        return True
    source = getattr(config, "args_source", None)
    return source is None or source == pytest.Config.ArgsSource.ARGS


def read_marker(marker: Optional[pytest.Mark], settings: Settings, where: str) -> Tuple[Optional[bool], Options]:
    """Validate a ``leakcheck`` marker, or raise a usage error naming ``where``.

    Returns what the marker says of ``enabled`` (``None``: there is no marker)
    and the options of the check.
    """
    if marker is None:
        return None, settings.options({})
    try:
        if marker.args:
            raise TypeError(f"takes keyword options only, not positional arguments {marker.args!r}")
        unknown = sorted(set(marker.kwargs) - set(MARKER_KEYS))
        if unknown:
            raise TypeError(f"unknown option {', '.join(map(repr, unknown))}; the options are {', '.join(MARKER_KEYS)}")
        kwargs = dict(marker.kwargs)
        enabled = kwargs.pop("enabled", None)
        if enabled is not None and not isinstance(enabled, bool):
            raise TypeError(f"enabled must be True or False, not {enabled!r}")
        options = settings.options(kwargs)
    except (TypeError, ValueError) as error:
        message = str(error)
        if message == NOTHING_CHECKED:
            # One of the two may come from --leakcheck-kinds (ini leakcheck_kinds) rather than the marker.
            defaults = default_kinds()
            off = [kind for kind in defaults if marker.kwargs.get(kind) is False]
            origin = "" if len(off) == len(defaults) else " (with --leakcheck-kinds, ini leakcheck_kinds)"
            message = (
                f"{' and '.join(f'{kind}=False' for kind in defaults)}{origin} leave nothing to check; "
                f"@pytest.mark.{MARKER}(enabled=False) turns the check off"
            )
        raise pytest.UsageError(f"{where}: @pytest.mark.{MARKER}: {message}") from None
    return True if enabled is None else enabled, options
