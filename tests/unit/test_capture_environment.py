"""Machine facts (IPv6, resolv.conf) and the probe plan derived from the config."""

from __future__ import annotations

from pathlib import Path

import pytest

from initcontainer.config import CaptureConfig, CidrSelection, parse_cidrs
from initcontainer.environment import has_global_ipv6, resolv_conf_nameservers
from initcontainer.errors import CaptureError
from initcontainer.probe import ProbeTarget, plan_probes

# /proc/net/if_inet6: address, ifindex, prefix length, scope, flags, interface.
LOOPBACK = "00000000000000000000000000000001 01 80 10 80       lo\n"
LINK_LOCAL = "fe80000000000000a8c1abfffe123456 02 40 20 80     eth0\n"
GLOBAL = "fd000240000000000000000000000001 02 40 00 80     eth0\n"


@pytest.mark.parametrize(
    ("content", "expected"),
    [(LOOPBACK, False), (LOOPBACK + LINK_LOCAL, False), (LOOPBACK + LINK_LOCAL + GLOBAL, True)],
)
def test_ipv6_means_a_global_address(tmp_path: Path, content: str, expected: bool) -> None:
    path = tmp_path / "if_inet6"
    path.write_text(content)
    assert has_global_ipv6(str(path)) is expected


def test_no_ipv6_in_the_kernel(tmp_path: Path) -> None:
    assert has_global_ipv6(str(tmp_path / "missing")) is False


def test_resolv_conf(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("# comment\nnameserver 10.96.0.10\noptions ndots:5\nnameserver  fd00::a \n")
    assert resolv_conf_nameservers(str(path)) == ["10.96.0.10", "fd00::a"]
    assert resolv_conf_nameservers(str(tmp_path / "none")) == []


def test_an_app_probe_dials_outbound_and_expects_15001() -> None:
    config = CaptureConfig(outbound_cidrs=CidrSelection(everything=True), ipv6=True)
    assert plan_probes(config, 15002, uid=0) == [
        ProbeTarget(("192.0.2.1", 15002), 15001, 4),
        ProbeTarget(("2001:db8::1", 15002), 15001, 6),
    ]


def test_the_proxy_uid_probes_the_inbound_path_like_istio() -> None:
    config = CaptureConfig(outbound_cidrs=CidrSelection(everything=True))
    assert plan_probes(config, 15002, uid=1337) == [ProbeTarget(("127.0.0.6", 15002), 15006, 4)]


def test_probe_address_stays_inside_the_captured_ranges() -> None:
    config = CaptureConfig(
        outbound_cidrs=parse_cidrs("10.96.0.0/12,10.0.0.0/8", "-i"),
        outbound_cidrs_exclude=parse_cidrs("10.96.0.0/12", "-x"),
    )
    assert plan_probes(config, 15002, uid=0)[0].dial == ("10.0.0.1", 15002)


def test_nothing_to_probe_is_an_error_with_a_fix() -> None:
    with pytest.raises(CaptureError) as error:
        plan_probes(CaptureConfig(), 15002, uid=0)
    assert "--probe-address" in error.value.hint
    excluded = CaptureConfig(
        outbound_cidrs=CidrSelection(everything=True), outbound_ports_exclude=(15002,)
    )
    with pytest.raises(CaptureError, match="excluded"):
        plan_probes(excluded, 15002, uid=0)
