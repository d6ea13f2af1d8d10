"""Click parameter types shared by the ``remora`` subcommands, so their flags read alike.

Imports click: the init container, which must start without it, never imports this module.
"""

from __future__ import annotations

import os
from typing import Any

import click
from click.core import ParameterSource

from meshlib.syntax import SyntaxProblem, parse_duration


class Duration(click.ParamType):
    """A Go duration (``45s``, ``1m30s``, ``500ms``) or a plain number of seconds, ≥ ``minimum``.

    The syntax is :func:`meshlib.syntax.parse_duration` with bare seconds, because Istio
    writes durations both ways (``drainDuration: 45s`` in ProxyConfig,
    ``TERMINATION_DRAIN_DURATION_SECONDS=5`` in the environment) and a CLI user types either.
    The value arrives in the command as float seconds; click names the flag in the error.
    """

    name = "duration"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        # A default written as a number goes through the same rule as what the user typed.
        text = value if isinstance(value, str) else format(value, "f")
        try:
            seconds = parse_duration(text, bare_seconds=True)
        except SyntaxProblem as exc:
            self.fail(str(exc) + _from_environment(param, ctx), param, ctx)
        if seconds < self.minimum:
            problem = f"{value!r} is shorter than {self.minimum:g}s"
            self.fail(problem + _from_environment(param, ctx), param, ctx)
        return seconds


def _from_environment(param: click.Parameter | None, ctx: click.Context | None) -> str:
    """``", from SECRET_TTL"`` when the bad value came from an option's environment variable.

    click names only the flag, which a pod's author never typed: they set the variable.
    """
    if ctx is None or not isinstance(param, click.Option) or not param.name or not param.envvar:
        return ""
    if ctx.get_parameter_source(param.name) is not ParameterSource.ENVIRONMENT:
        return ""
    names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar)
    return ", from " + next((name for name in names if os.environ.get(name)), names[0])


DURATION = Duration()
