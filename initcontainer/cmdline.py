"""Reading ``remora init``'s command line and environment, by the flag table.

Two parsers read the one table (:data:`initcontainer.flags.FLAG_GROUPS`):

* :func:`parse_command_line`, on every pod start: a small hand-written parser for the
  command lines argparse accepts (``-p 15001``, ``-p15001``, ``-p=15001``, ``--envoy-port
  15001``, ``--envoy-port=15001``; booleans with or without a value). It exists because
  ``import argparse`` and building its parser cost ~13 ms of a 40 ms start-up budget.
* :func:`build_parser`, argparse: ``--help``, and the reference for everything else. The
  fast parser hands any command line it does not fully understand, and every error, to
  argparse, so help and error messages are argparse's, word for word, and a command line
  argparse accepts is never refused. ``tests/unit/test_capture_flags.py`` checks that both
  parsers give the same values on a table of command lines.

An environment variable gives a flag its default (the first of its variables that is set);
for a boolean an empty value counts as unset, as in istio-iptables, where pflag refuses to
set a bool to ``""`` and the default stays.
"""

from __future__ import annotations

import os
import sys

from initcontainer.flags import FLAG_GROUPS, FLAGS, Flag

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from collections.abc import Callable, Mapping
    from typing import Any

    from initcontainer.flags import Args


# --- the fast parser: every pod start ------------------------------------------------------


class _NeedsArgparse(Exception):
    """Help, an error, or a form the fast parser leaves to argparse (e.g. a ``--`` argument)."""


def _options() -> dict[str, Flag]:
    """``-p`` and ``--envoy-port`` -> the flag; every spelling argparse knows, but ``-h``."""
    options: dict[str, Flag] = {}
    for flag in FLAGS:
        options[f"--{flag.long}"] = flag
        if flag.short:
            options[f"-{flag.short}"] = flag
    return options


OPTIONS = _options()
_FLAG_NAMES = frozenset((*OPTIONS, "-h", "--help"))  # what argparse knows


def parse_command_line(argv: list[str], environ: Mapping[str, str] | None = None) -> Args:
    """The flags of ``argv`` (defaults from ``environ``), with the values argparse gives.

    Anything but a plain, valid command line (``--help``, a bad value, an unknown flag) goes
    to argparse, which prints the help or the error and exits 2.
    """
    env = os.environ if environ is None else environ
    try:
        return _parse_fast(argv, env)
    except _NeedsArgparse:
        return build_parser(env).parse_args(argv)


class Parsed:
    """The parsed flags as attributes, like ``argparse.Namespace`` (``args.envoy_port``)."""

    def __init__(self, values: dict[str, Any]) -> None:
        self.__dict__.update(values)

    def __repr__(self) -> str:
        return f"Parsed({vars(self)!r})"


def _parse_fast(argv: list[str], env: Mapping[str, str]) -> Parsed:
    """argparse's rules for our flags (all optional, one value each, booleans ``nargs='?'``)."""
    values = {flag.dest: _default(flag, env) for flag in OPTIONS.values()}
    index = 0
    while index < len(argv):
        flag, value = _split_option(argv[index])
        index += 1
        if value is None:  # the value is the next argument, unless that is a flag
            if index < len(argv) and not _is_option(argv[index]):
                value = argv[index]
                index += 1
            elif flag.is_bool:  # a bare boolean flag means true
                values[flag.dest] = True
                continue
            else:
                raise _NeedsArgparse  # "expected one argument"
        if value == "--":  # argparse drops it: an edge case not worth a second implementation
            raise _NeedsArgparse
        values[flag.dest] = _convert(flag, value)
    return Parsed(values)


def _split_option(arg: str) -> tuple[Flag, str | None]:
    """``--flag``, ``--flag=value``, ``-f``, ``-f=value`` or ``-fvalue`` -> (flag, value)."""
    flag = OPTIONS.get(arg)
    if flag is not None:
        return flag, None
    name, equals, value = arg.partition("=")
    if equals and name in OPTIONS:
        return OPTIONS[name], value
    if arg[:1] == "-" and arg[1:2] not in ("", "-") and arg[:2] in OPTIONS:
        return OPTIONS[arg[:2]], arg[2:]
    raise _NeedsArgparse  # help, "--", an unknown flag or a stray argument


def _is_option(arg: str) -> bool:
    """Whether argparse reads ``arg`` as a flag (then it is not the previous flag's value).

    Its rule: a ``-`` prefix makes a flag, except ``-`` alone, a negative number, or a
    string with a space that names no flag of ours (so ``-x ''``, ``-d -1`` take values).
    """
    if not arg.startswith("-"):
        return False
    if arg in _FLAG_NAMES:
        return True
    if len(arg) == 1:
        return False
    if "=" in arg and arg.partition("=")[0] in _FLAG_NAMES:
        return True
    if arg[1] != "-" and arg[:2] in _FLAG_NAMES:
        return True
    return not _looks_negative(arg) and " " not in arg


def _looks_negative(arg: str) -> bool:
    """argparse's ``^-\\d+$|^-\\d*\\.\\d+$`` (``$`` also matches before a final newline)."""
    body = arg[1:].removesuffix("\n")
    whole, dot, fraction = body.partition(".")
    if not dot:
        return whole.isdecimal()
    return (not whole or whole.isdecimal()) and fraction.isdecimal()


def _convert(flag: Flag, value: str) -> Any:
    try:
        return flag.parse(value)
    except ValueError:  # argparse says what is wrong, after the flag's name
        raise _NeedsArgparse from None


def _default(flag: Flag, env: Mapping[str, str]) -> Any:
    """The value of the flag's environment variable, else the flag's default.

    Like argparse, a default given as a string goes through the flag's type (``"5s"`` -> 5.0).
    """
    found = environment_value(flag, env)
    if found is not None:
        return _convert(flag, found[1])
    default = flag.default
    return flag.parse(default) if isinstance(default, str) else default


def environment_value(flag: Flag, env: Mapping[str, str]) -> tuple[str, str] | None:
    """The first of the flag's environment variables that is set: (name, text), or None.

    A boolean's variable set to the empty string is unset, as in istio-iptables (pflag
    refuses ``""`` as a bool, and the flag keeps its default).
    """
    for name in flag.envs:
        text = env.get(name)
        if text is not None and not (flag.is_bool and not text.strip()):
            return name, text
    return None


# --- argparse: --help, errors, and the reference ---------------------------------------------


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The argparse parser, with defaults taken from ``environ`` (the process environment)."""
    import argparse

    from initcontainer.helptext import DESCRIPTION, EPILOG, PROG, USAGE  # only for argparse

    class HelpFormatter(argparse.RawDescriptionHelpFormatter):
        """The width from $COLUMNS or the terminal, found without shutil (zlib, bz2, lzma)."""

        def __init__(self, prog: str) -> None:
            super().__init__(prog, width=_help_width())

    env = os.environ if environ is None else environ
    parser = argparse.ArgumentParser(
        prog=PROG,
        usage=USAGE,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=HelpFormatter,
        allow_abbrev=False,
    )
    for title, flags in FLAG_GROUPS:
        group = parser.add_argument_group(title)
        for flag in flags:
            _add_flag(group, flag, env, parser)
    return parser


def _add_flag(
    group: argparse._ArgumentGroup,
    flag: Flag,
    env: Mapping[str, str],
    parser: argparse.ArgumentParser,
) -> None:
    import argparse

    names = ([f"-{flag.short}"] if flag.short else []) + [f"--{flag.long}"]
    default = flag.default
    found = environment_value(flag, env)
    if found is not None:
        name, text = found
        try:
            default = flag.parse(text)
        except ValueError as error:
            parser.error(f"environment variable {name}: {error}")
    help_text = flag.help + (f" [env {', '.join(flag.envs)}]" if flag.envs else "")
    kwargs: dict[str, Any] = {
        "dest": flag.dest,
        "default": default,
        "type": _argparse_type(flag.value.parse, argparse.ArgumentTypeError),
        "metavar": flag.value.metavar,
        "help": help_text,
    }
    if flag.is_bool:
        kwargs.update(nargs="?", const=True)
    else:
        kwargs.update(choices=flag.value.choices)
    group.add_argument(*names, **kwargs)


def _argparse_type(convert: Callable[[str], Any], error: type[Exception]) -> Callable[[str], Any]:
    """``convert``, its ValueError's message shown as is (argparse's ArgumentTypeError).

    ``str`` and ``int`` stay themselves: argparse's "invalid int value: 'abc'" is the message.
    """
    if convert in (str, int):
        return convert

    def checked(value: str) -> Any:
        try:
            return convert(value)
        except ValueError as bad:  # SyntaxProblem, FlagValueError
            raise error(str(bad)) from None

    checked.__name__ = convert.__name__
    return checked


def _help_width() -> int:
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno() if sys.__stdout__ else 1).columns
        except (OSError, ValueError):
            columns = 100
    return max(columns, 40) - 2
