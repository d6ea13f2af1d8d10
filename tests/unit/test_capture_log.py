"""The init container's log lines are meshlib.logs' lines, written without ``logging``."""

from __future__ import annotations

import io
import json
import logging
from typing import Any

import pytest

from initcontainer import log as logs
from meshlib.logs import JsonFormatter, TextFormatter

# The lines the init container writes (messages and fields from cli/backend_restore/flags).
LINES: list[tuple[int, str, str, dict[str, Any]]] = [
    (
        logs.INFO,
        "initcontainer",
        "capture rules installed",
        {"backend": "iptables-restore", "ipv4_rules": 16, "ipv6_rules": 0, "elapsed_ms": 9.4},
    ),
    (
        logs.INFO,
        "initcontainer.backend",
        "iptables backend chosen",
        {"mode": "nft", "reason": "no rules in either backend; nft is the default"},
    ),
    (logs.INFO, "initcontainer", "IPv6 detected", {"ipv6": True}),
    (logs.INFO, "initcontainer", "DNS servers read", {"path": "/r", "servers": ["10.0.0.1"]}),
    (logs.WARNING, "initcontainer", "DNS capture is on but no DNS server is known", {}),
    (
        logs.ERROR,
        "initcontainer",
        "capture failed",
        {"error": 'iptables-nft-restore rejected "x"\n\tline 3', "fix": "run as root é ✓"},
    ),
    (logs.DEBUG, "initcontainer", "final state", {"family": "ipv4", "save": "*nat\nCOMMIT\n"}),
    (logs.INFO, "initcontainer", "odd values", {"none": None, "nan": float("nan"), "t": (1, 2)}),
]


def _record(level: int, name: str, msg: str, fields: dict[str, Any]) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, None, None)
    record.__dict__.update(fields)
    return record


@pytest.mark.parametrize(("level", "name", "msg", "fields"), LINES)
def test_lines_are_those_of_meshlib_logs(
    level: int, name: str, msg: str, fields: dict[str, Any]
) -> None:
    record = _record(level, name, msg, fields)
    assert logs.text_line(level, name, msg, fields) == TextFormatter().format(record)
    assert logs.json_line(record.created, level, name, msg, fields) == (
        JsonFormatter().format(record)
    )


@pytest.mark.parametrize(
    "value",
    [
        "plain",
        'quote " backslash \\ tab \t newline \n nul \x00',
        "é ✓ 😀",
        0,
        -7,
        10**30,
        1.5,
        1e-7,
        float("inf"),
        float("-inf"),
        True,
        False,
        None,
        [1, "a", None, [True]],
        ("tuple", 2),
        {"k": 1, "n": {"x": [1.0]}},
        {1: "int key", None: "none key", False: "bool key", 2.5: "float key"},
        object,  # anything else: str(), as json.dumps(default=str)
    ],
)
def test_json_values_match_json_dumps(value: Any) -> None:
    assert logs.to_json(value) == json.dumps(value, default=str, separators=(",", ":"))


def test_level_filters_and_format_switches() -> None:
    stream = io.StringIO()
    log = logs.getLogger("initcontainer")
    try:
        logs.configure("warning", "text", stream)
        log.info("hidden")
        log.warning("shown", extra={"n": 1})
        assert stream.getvalue() == "warning initcontainer: shown n=1\n"
        assert not log.is_enabled_for(logs.DEBUG)

        logs.configure("debug", "json", stream)
        log.debug("debug line", extra={"family": "ipv4"})
        line = json.loads(stream.getvalue().splitlines()[-1])
        assert line["level"] == "debug" and line["msg"] == "debug line"
        assert line["family"] == "ipv4" and line["time"].endswith("Z")
        assert log.is_enabled_for(logs.DEBUG)
    finally:
        logs.configure()


def test_main_logs_json_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    from initcontainer.cli import main

    try:
        assert main(["--dry-run", "--enable-ipv6=false", "-u", "", "--log_as_json"]) == 0
    finally:
        logs.configure()
    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert lines and lines[0]["logger"] == "initcontainer"
    assert lines[0]["msg"] == "proxy uid derived" and "envoy_user" in lines[0]
