"""The init container's structured log lines, written without the ``logging`` package.

The lines are exactly those of :mod:`meshlib.logs` (the same fields, order and separators,
as text or one JSON object per line on stderr; ``tests/unit/test_capture_log.py`` compares
them), so a pod's init container reads like every other Remora process. What differs is the
cost: ``logging`` imports ``re``, ``threading``, ``traceback`` and ``string`` (~20 ms of
start-up on the shared 2-core VM), and ``json`` compiles regular expressions at import;
this module needs neither, for a process that writes five lines and exits.

Usage mirrors ``logging``: ``log = getLogger("initcontainer")``, then
``log.info("capture rules installed", extra={"backend": ...})``; :func:`configure` sets the
level and the format once, from ``--log_output_level`` and ``--log_as_json``.
"""

from __future__ import annotations

import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, TextIO

DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
LEVELS = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "critical": CRITICAL}
_NAMES = {number: name for name, number in LEVELS.items()}
_FLOAT_SPECIALS = {"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}  # json.dumps' spelling


class _Settings:
    """Process-wide: one init container, one level, one format."""

    level = INFO
    json = False
    stream: TextIO | None = None  # None: sys.stderr at the time of writing (tests swap it)


def configure(level: str = "info", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Set the level (``debug`` .. ``critical``) and the format (``text`` or ``json``)."""
    _Settings.level = LEVELS[level]
    _Settings.json = fmt == "json"
    _Settings.stream = stream


class Logger:
    """A named source of log lines; the subset of ``logging.Logger`` this package uses."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def is_enabled_for(self, level: int) -> bool:
        return level >= _Settings.level

    def debug(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self._log(DEBUG, msg, extra)

    def info(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self._log(INFO, msg, extra)

    def warning(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self._log(WARNING, msg, extra)

    def error(self, msg: str, extra: dict[str, Any] | None = None) -> None:
        self._log(ERROR, msg, extra)

    def _log(self, level: int, msg: str, extra: dict[str, Any] | None) -> None:
        if level < _Settings.level:
            return
        fields = extra or {}
        if _Settings.json:
            line = json_line(time.time(), level, self.name, msg, fields)
        else:
            line = text_line(level, self.name, msg, fields)
        stream = _Settings.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()


def getLogger(name: str) -> Logger:
    return Logger(name)


def text_line(level: int, name: str, msg: str, fields: dict[str, Any]) -> str:
    """``meshlib.logs.TextFormatter``: ``info  initcontainer: msg key=value ...``."""
    line = f"{_NAMES[level]:5} {name}: {msg}"
    if fields:
        line += " " + " ".join(f"{key}={value}" for key, value in fields.items())
    return line


def json_line(created: float, level: int, name: str, msg: str, fields: dict[str, Any]) -> str:
    """``meshlib.logs.JsonFormatter``: ``{"time","level","logger","msg",...fields}``."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    millis = int((created - int(created)) * 1000)
    entry = {
        "time": f"{stamp}.{millis:03d}Z",
        "level": _NAMES[level],
        "logger": name,
        "msg": msg,
        **fields,
    }
    return to_json(entry)


def to_json(value: object) -> str:
    """``json.dumps(value, default=str, separators=(",", ":"))`` for the values we log."""
    if isinstance(value, str):
        return _json_string(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, float):
        text = float.__repr__(value)
        return _FLOAT_SPECIALS.get(text, text)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{to_json(_key(k))}:{to_json(v)}" for k, v in value.items()) + "}"
    return to_json(str(value))


def _json_string(text: str) -> str:
    """The C encoder ``json.dumps`` itself uses (``ensure_ascii=True``): identical output.

    Imported here, not at the top: it is an extension module to load, and only JSON logs
    (``--log_as_json``) need it.
    """
    from _json import encode_basestring_ascii

    return str(encode_basestring_ascii(text))


def _key(key: object) -> str:
    """JSON object keys are strings; json.dumps spells the scalar ones this way."""
    if isinstance(key, str):
        return key
    if key is None or isinstance(key, (bool, int, float)):
        return to_json(key)
    return str(key)
