"""Flag values -> config: what is accepted, how it is normalised, and what is refused."""

from __future__ import annotations

import pytest

from initcontainer.config import (
    CaptureConfig,
    ConfigError,
    OwnerGroups,
    parse_cidrs,
    parse_inbound_ports,
    parse_interfaces,
    parse_ipv4_loopback_cidr,
    parse_mode,
    parse_owner_ids,
    parse_port_list,
    split_list,
    validate,
)
from initcontainer.plan import build_plan
from meshlib import interception


def test_lists_drop_empty_items_and_spaces() -> None:
    assert split_list(" 80, ,443,") == ["80", "443"]
    assert split_list("") == []


def test_port_lists_keep_order_and_drop_duplicates() -> None:
    assert parse_port_list("15090,15021,15090", "-d") == (15090, 15021)


@pytest.mark.parametrize("value", ["0", "65536", "http", "-1"])
def test_bad_ports_name_the_flag(value: str) -> None:
    with pytest.raises(ConfigError, match=r"^-d: "):
        parse_port_list(f"80,{value}", "-d")


def test_inbound_ports_star_means_all() -> None:
    assert parse_inbound_ports("*", "-b").everything
    selection = parse_inbound_ports("8080,9090", "-b")
    assert not selection.everything and selection.ports == (8080, 9090)
    assert parse_inbound_ports("", "-b").empty


def test_cidrs_are_split_by_family_and_normalised() -> None:
    selection = parse_cidrs("10.1.2.3/8,fd00::1/64,192.0.2.7/32", "-i")
    assert [str(n) for n in selection.for_family(4)] == ["10.0.0.0/8", "192.0.2.7/32"]
    assert [str(n) for n in selection.for_family(6)] == ["fd00::/64"]
    assert not selection.has_loopback()
    assert parse_cidrs("127.0.0.0/8", "-i").has_loopback()
    assert parse_cidrs("*", "-i").everything


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("10.0.0.1", "-i: '10.0.0.1' has no prefix length: write 10.0.0.1/32 for one address"),
        ("10.0.0.0/8,fd00::1", "-i: 'fd00::1' has no prefix length: write fd00::1/128"),
    ],
)
def test_a_bare_address_is_refused_as_the_injector_and_istio_refuse_it(
    value: str, message: str
) -> None:
    """One rule with the webhook (meshlib.syntax): what one refuses, the other refuses."""
    with pytest.raises(ConfigError) as caught:
        parse_cidrs(value, "-i")
    assert str(caught.value).startswith(message)


def test_excluding_everything_is_refused_with_the_alternative() -> None:
    with pytest.raises(ConfigError, match="empty -i"):
        parse_cidrs("*", "-x", allow_everything=False)


def test_bad_cidr_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'10\.0\.0\.0/33' is not a CIDR"):
        parse_cidrs("10.0.0.0/33", "-i")


def test_owner_ids_must_be_numeric() -> None:
    assert parse_owner_ids("1337,1338,1337", "-u") == ("1337", "1338")
    with pytest.raises(ConfigError, match="not a numeric id"):
        parse_owner_ids("istio-proxy", "-u")
    with pytest.raises(ConfigError, match="at least one"):
        parse_owner_ids(",", "-u")


@pytest.mark.parametrize("name", ["a-very-long-interface0", "eth 0", "eth/0", "eth'0"])
def test_bad_interface_names(name: str) -> None:
    with pytest.raises(ConfigError, match="not a valid interface name"):
        parse_interfaces(name, "-c")


def test_modes() -> None:
    assert parse_mode("", "-m") == interception.REDIRECT
    assert parse_mode("tproxy", "-m") == interception.TPROXY
    with pytest.raises(ConfigError, match="no init container"):
        parse_mode("NONE", "-m")
    with pytest.raises(ConfigError, match="not REDIRECT or TPROXY"):
        parse_mode("DNAT", "-m")


def test_ipv4_loopback_cidr_must_be_loopback_with_a_sane_prefix() -> None:
    assert parse_ipv4_loopback_cidr("127.0.0.0/8", "x") == "127.0.0.0/8"
    assert parse_ipv4_loopback_cidr(" 127.0.0.1/32 ", "x") == "127.0.0.1/32"
    assert parse_ipv4_loopback_cidr("127.0.0.5/8", "x") == "127.0.0.0/8"  # canonical form
    for bad in ("10.0.0.0/8", "127.0.0.0/7", "::1/128", "127.0.0.1"):
        with pytest.raises(ConfigError):
            parse_ipv4_loopback_cidr(bad, "x")


def test_owner_group_include_and_exclude_are_exclusive() -> None:
    config = CaptureConfig(owner_groups=OwnerGroups(include=("app",), exclude=("backup",)))
    with pytest.raises(ConfigError, match="mutually exclusive"):
        validate(config)


def test_owner_group_include_list_is_capped() -> None:
    groups = tuple(str(g) for g in range(65))
    with pytest.raises(ConfigError, match="at most 64"):
        validate(CaptureConfig(owner_groups=OwnerGroups(include=groups)))


def test_an_interface_both_excluded_and_rerouted_is_accepted_as_istio_does() -> None:
    config = CaptureConfig(
        exclude_interfaces=("tap0",),
        reroute_interfaces=("tap0",),
        outbound_cidrs=parse_cidrs("*", "-i"),
    )
    validate(config)
    chains: dict[str, list[str | None]] = {"PREROUTING": [], "OUTPUT": []}
    for rule in build_plan(config).ipv4:
        if rule.table == "nat" and rule.chain in chains and "tap0" in rule.params:
            position = len(chains[rule.chain]) + 1 if rule.position is None else rule.position
            chains[rule.chain].insert(position - 1, rule.target)
    # tap0's inbound traffic is re-routed (that rule is inserted at the head), its outbound
    # traffic stays excluded: the same rules, in the same places, as istio-iptables'.
    assert chains == {"PREROUTING": ["ISTIO_REDIRECT", "RETURN", "RETURN"], "OUTPUT": ["RETURN"]}


def test_defaults_are_istio_iptables_defaults() -> None:
    config = CaptureConfig()
    assert (config.proxy_port, config.inbound_capture_port, config.inbound_tunnel_port) == (
        15001,
        15006,
        15008,
    )
    assert config.proxy_uids == config.proxy_gids == ("1337",)
    assert (config.tproxy_mark, config.tproxy_route_table) == (1337, 133)
    validate(config)
