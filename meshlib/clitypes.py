"""Click parameter types shared by the ``remora`` subcommands, so their flags read alike.

Imports click: the init container, which must start without it, never imports this module.
"""

from __future__ import annotations

import math
from typing import Any

import click

from meshlib.meshconfig import MeshConfigError, parse_duration


class Duration(click.ParamType):
    """``45s``, ``1m30s``, ``500ms`` or a plain number of seconds, finite and ≥ ``minimum``.

    Istio writes durations both ways (``drainDuration: 45s`` in ProxyConfig,
    ``TERMINATION_DRAIN_DURATION_SECONDS=5`` in the environment), so a flag takes either.
    The value arrives in the command as float seconds.
    """

    name = "duration"

    def __init__(self, minimum: float = 0.0) -> None:
        self.minimum = minimum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        seconds: float | None
        if isinstance(value, float | int):
            seconds = float(value)
        else:
            try:
                seconds = float(value)  # plain seconds
            except ValueError:
                try:
                    seconds = parse_duration(value, "duration")
                except MeshConfigError:
                    seconds = None
        if seconds is None or not math.isfinite(seconds):
            self.fail(f"{value!r} is not a duration (use e.g. 5s, 1m30s or 500ms)", param, ctx)
        if seconds < self.minimum:
            self.fail(f"{value!r} is shorter than {self.minimum:g}s", param, ctx)
        return seconds


DURATION = Duration()
