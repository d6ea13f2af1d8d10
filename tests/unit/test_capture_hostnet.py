"""``ip`` (iproute2) in the init container: needed for ::6 and TPROXY, never for REDIRECT clean-up.

Debian's iptables package does not pull in iproute2, so an image can have iptables and no
``ip``. Each test makes a directory of stub tools the whole of ``$PATH`` (no real iptables
or ip can run, so the machine's own network namespace is never touched): ``*-save`` stubs
that print empty tables, and, when a test wants it, an ``ip`` that only records its
arguments.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from leaks import child_pids, new_children

from initcontainer import hostnet
from initcontainer.cli import main
from initcontainer.errors import EXIT_FAILURE, CaptureError
from initcontainer.plan import CapturePlan, TproxyRoute

SAVE_TOOLS = (
    "iptables-nft-save",
    "ip6tables-nft-save",
    "iptables-legacy-save",
    "ip6tables-legacy-save",
)
EMPTY_NAT = "#!/bin/sh\nprintf '*nat\\nCOMMIT\\n'\n"
CLEANUP = ["--cleanup-only", "--enable-ipv6=false", "-u", "1337", "-t", "1337", "-r", "133"]


@pytest.fixture
def tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty-tables iptables, and nothing else, as the whole of $PATH."""
    for name in SAVE_TOOLS:
        (tmp_path / name).write_text(EMPTY_NAT)
        (tmp_path / name).chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    return tmp_path


def _install_ip(directory: Path) -> Path:
    """An ``ip`` that appends its arguments, one call a line, to the returned file."""
    calls = directory / "ip.calls"
    (directory / "ip").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n')
    (directory / "ip").chmod(0o755)
    return calls


def test_redirect_cleanup_succeeds_without_ip(
    tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    children = set(child_pids())
    assert main([*CLEANUP, "-m", "REDIRECT"]) == 0
    err = capsys.readouterr().err
    assert "nothing to clean up" in err and "ip is not installed" in err
    assert new_children(children) == []


def test_tproxy_cleanup_without_ip_says_what_to_install(
    tools: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*CLEANUP, "-m", "TPROXY"]) == EXIT_FAILURE
    err = capsys.readouterr().err
    assert "ip is not installed" in err and "apt-get install iproute2" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("mode", ["REDIRECT", "TPROXY"])
def test_cleanup_with_ip_removes_tproxy_routing_in_either_mode(tools: Path, mode: str) -> None:
    # A REDIRECT clean-up may follow a TPROXY install: when ip is there, the routing goes too.
    calls = _install_ip(tools)
    assert main([*CLEANUP, "-m", mode, "-t", "7", "-r", "70"]) == 0
    assert calls.read_text().splitlines() == [
        "-4 rule del fwmark 7 lookup 70",
        "-4 route flush table 70",
        "-6 rule del fwmark 7 lookup 70",
        "-6 route flush table 70",
    ]


def test_remove_tproxy_route_reports_whether_ip_ran(tools: Path) -> None:
    assert hostnet.remove_tproxy_route(1337, 133, ip_required=False) is False
    with pytest.raises(CaptureError) as error:
        hostnet.remove_tproxy_route(1337, 133, ip_required=True)
    assert error.value.message == "ip is not installed"
    assert "apt-get install iproute2" in error.value.hint
    _install_ip(tools)
    assert hostnet.remove_tproxy_route(1337, 133, ip_required=False) is True


@pytest.mark.parametrize(
    ("plan", "needed_for"),
    [
        (CapturePlan(ipv4=(), ipv6=()), "::6"),  # any pod with IPv6 rules
        (CapturePlan(ipv4=(), ipv6=None, tproxy_route=TproxyRoute(1337, 133)), "TPROXY"),
    ],
)
def test_setup_without_ip_is_a_capture_error_naming_the_package(
    tools: Path, plan: CapturePlan, needed_for: str
) -> None:
    with pytest.raises(CaptureError) as error:
        hostnet.setup(plan)
    assert error.value.message == "ip is not installed"
    assert "iproute2" in error.value.hint and needed_for in error.value.hint


def test_setup_without_ipv6_or_tproxy_runs_no_ip(tools: Path) -> None:
    # An IPv4-only REDIRECT pod, the common case, must start in an image without iproute2.
    hostnet.setup(CapturePlan(ipv4=(), ipv6=None))
    calls = _install_ip(tools)
    hostnet.setup(CapturePlan(ipv4=(), ipv6=(), tproxy_route=TproxyRoute(5, 50)))
    assert calls.read_text().splitlines() == [
        "-6 addr replace ::6/128 dev lo",
        "-4 rule del fwmark 5 lookup 50",
        "-4 rule add fwmark 5 lookup 50",
        "-4 route replace local 0.0.0.0/0 dev lo table 50",
        "-6 rule del fwmark 5 lookup 50",
        "-6 rule add fwmark 5 lookup 50",
        "-6 route replace local ::/0 dev lo table 50",
    ]
