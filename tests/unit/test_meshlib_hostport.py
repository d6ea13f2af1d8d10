"""meshlib.hostport: addresses followed by a port, with IPv6 literals in brackets."""

from __future__ import annotations

import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

import meshlib
from meshlib.hostport import bracket_host, host_port


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("localhost", "localhost"),
        ("reviews.default.svc.cluster.local", "reviews.default.svc.cluster.local"),
        ("::1", "[::1]"),
        ("fd00::3", "[fd00::3]"),
        ("::ffff:10.0.0.1", "[::ffff:10.0.0.1]"),
    ],
)
def test_bracket_host_brackets_only_ipv6_literals(host: str, expected: str) -> None:
    assert bracket_host(host) == expected


@pytest.mark.parametrize(
    ("host", "port", "expected"),
    [
        ("10.0.0.1", 80, "10.0.0.1:80"),
        ("reviews", 9080, "reviews:9080"),
        ("::1", 15000, "[::1]:15000"),
        ("fd00::3", 8080, "[fd00::3]:8080"),
    ],
)
def test_host_port(host: str, port: int, expected: str) -> None:
    assert host_port(host, port) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::1", "fd00::3", "example.com"])
def test_a_url_built_with_host_port_parses_back_to_the_host_and_port(host: str) -> None:
    url = urllib.parse.urlsplit(f"http://{host_port(host, 15021)}/healthz/ready")
    assert (url.hostname, url.port) == (host, 15021)


def test_importing_it_loads_no_other_module() -> None:
    """The init container imports it; its start budget is tens of milliseconds."""
    code = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import meshlib.hostport\n"
        "print(sorted(set(sys.modules) - before - {'meshlib', 'meshlib.hostport'}))\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": str(Path(meshlib.__file__).parents[1])},
    )
    assert result.stdout.strip() == "[]", result.stderr
