"""The istio-iptables command line: flags, environment bindings, derived inputs, exit codes."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from initcontainer import cli, environment
from initcontainer.cli import build_config, machine_facts, main
from initcontainer.cmdline import build_parser
from initcontainer.config import CaptureConfig
from initcontainer.config_from_flags import MachineFacts, config_from_args
from initcontainer.flags import seconds
from meshlib.syntax import SyntaxProblem

PINNED = ["--enable-ipv6=false", "-u", "1337"]


@pytest.fixture(autouse=True)
def _never_touch_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests run in the machine's own network namespace: no backend may be created."""

    def refuse(args: argparse.Namespace) -> None:
        raise AssertionError("a unit test reached a backend; use --dry-run or tests/netns")

    monkeypatch.setattr(cli, "_make_backend", refuse)


def _config(argv: list[str], env: dict[str, str] | None = None) -> CaptureConfig:
    """The config as the CLI builds it: the facts it needs read from this machine."""
    environ = env or {}
    return build_config(build_parser(environ).parse_args(PINNED + argv), environ)


def test_injector_args_parse() -> None:
    argv = "-p 15001 -z 15006 -u 1337 -m REDIRECT -i * -x  -b * -d 15090,15021,15020"
    args = build_parser({}).parse_args([*argv.split(" "), "--log_output_level=default:info"])
    config = config_from_args(args, MachineFacts())
    assert config.outbound_cidrs.everything and config.inbound_ports.everything
    assert config.inbound_ports_exclude == (15090, 15021, 15020)
    assert config.outbound_cidrs_exclude.empty


def test_environment_sets_defaults_and_flags_win() -> None:
    env = {"ISTIO_SERVICE_CIDR": "10.0.0.0/8", "ISTIO_INBOUND_PORTS": "8080"}
    args = build_parser(env).parse_args(["-b", "9090"])
    assert args.istio_service_cidr == "10.0.0.0/8"
    assert args.istio_inbound_ports == "9090"


@pytest.mark.parametrize(
    ("env", "attribute"),
    [
        ({"ISTIO_META_DNS_CAPTURE": "true"}, "redirect_dns"),
        ({"REDIRECT_DNS": "1"}, "redirect_dns"),
        ({"INVALID_DROP": "true"}, "drop_invalid"),
        ({"ISTIO_DUAL_STACK": "true"}, "dual_stack"),
    ],
)
def test_istio_proxy_metadata_names_bind_to_flags(env: dict[str, str], attribute: str) -> None:
    assert getattr(build_parser(env).parse_args([]), attribute) is True
    assert getattr(build_parser({}).parse_args([]), attribute) is False


def test_boolean_flags_take_an_optional_value() -> None:
    parser = build_parser({"ISTIO_META_DNS_CAPTURE": "true"})
    assert parser.parse_args(["--redirect-dns=false"]).redirect_dns is False
    assert build_parser({}).parse_args(["--redirect-dns"]).redirect_dns is True


def test_bad_environment_value_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser({"INVALID_DROP": "maybe"})
    assert exit_info.value.code == 2
    assert "INVALID_DROP" in capsys.readouterr().err


def test_empty_proxy_uid_uses_envoy_user() -> None:
    args = build_parser({}).parse_args(["--enable-ipv6=false", "-u", ""])
    assert machine_facts(args, {"ENVOY_USER": "root"}).envoy_user_uid == "0"
    config = config_from_args(args, MachineFacts(envoy_user_uid="0"))
    assert config.proxy_uids == ("0",) and config.proxy_gids == ("0",)
    assert environment.proxy_id_for_user("no-such-user-remora") == "1337"


def test_the_config_is_a_function_of_flags_and_facts_alone() -> None:
    """Pure: the facts decide only where the flags leave a value to the machine."""
    auto = build_parser({}).parse_args(["-u", "", "--redirect-dns"])
    facts = MachineFacts(envoy_user_uid="7", global_ipv6=True, nameservers=("10.96.0.10",))
    config = config_from_args(auto, facts)
    assert (config.proxy_uids, config.ipv6) == (("7",), True)
    assert [str(s) for s in config.dns.servers] == ["10.96.0.10"]
    explicit = build_parser({}).parse_args(
        ["-u", "1337", "--enable-ipv6=false", "--redirect-dns", "--dns-servers", "1.1.1.1"]
    )
    config = config_from_args(explicit, facts)
    assert (config.proxy_uids, config.ipv6) == (("1337",), False)
    assert [str(s) for s in config.dns.servers] == ["1.1.1.1"]


def test_machine_facts_are_read_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    def unexpected(*args: object) -> None:
        raise AssertionError("read from the machine although a flag gave the value")

    monkeypatch.setattr(environment, "has_global_ipv6", unexpected)
    monkeypatch.setattr(environment, "resolv_conf_nameservers", unexpected)
    monkeypatch.setattr(environment, "proxy_id_for_user", unexpected)
    args = build_parser({}).parse_args(
        ["-u", "1", "--dual-stack", "--redirect-dns", "--dns-servers", ""]
    )
    assert machine_facts(args, {}) == MachineFacts()
    assert build_config(args, {}).ipv6
    monkeypatch.setattr(environment, "has_global_ipv6", lambda: True)
    auto = build_parser({}).parse_args(["-u", "1337"])
    assert build_config(auto, {}).ipv6 is True
    assert _config([]).ipv6 is False  # --enable-ipv6=false wins


def test_dns_servers_come_from_resolv_conf_or_the_flag(tmp_path: Path) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search svc.cluster.local\nnameserver 10.96.0.10\nnameserver fd00::a\n")
    config = _config(["--redirect-dns", "--resolv-conf", str(resolv)])
    assert [str(s) for s in config.dns.servers] == ["10.96.0.10", "fd00::a"]
    explicit = _config(["--redirect-dns", "--dns-servers", "1.1.1.1", "--resolv-conf", str(resolv)])
    assert [str(s) for s in explicit.dns.servers] == ["1.1.1.1"]
    assert _config(["--redirect-dns", "--capture-all-dns"]).dns.servers == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("5s", 5.0), ("500ms", 0.5), ("1m", 60.0), ("2", 2.0), ("1.5s", 1.5), ("1m30s", 90.0)],
)
def test_durations_are_go_durations_or_seconds(value: str, expected: float) -> None:
    assert seconds(value) == expected
    assert build_parser({}).parse_args([f"--probe-timeout={value}"]).probe_timeout == expected


def test_probe_address_is_checked_while_parsing(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*PINNED, "--validate", "--probe-address=example.com"])
    assert exit_info.value.code == 2
    assert "not an IP address" in capsys.readouterr().err


@pytest.mark.parametrize("value", ["soon", "-1s", "5 s", "1d"])
def test_bad_duration(value: str) -> None:
    with pytest.raises(SyntaxProblem):
        seconds(value)


@pytest.mark.parametrize(
    ("value", "level"),
    [
        ("default:debug", "debug"),
        ("info", "info"),
        ("default:warn,ads:debug", "warning"),
        ("x", "info"),
    ],
)
def test_istio_log_levels(value: str, level: str) -> None:
    assert cli._log_level(value) == level


def test_dry_run_prints_one_block_per_family(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--dry-run", "--dual-stack", "-u", "1337", "-i", "*", "-b", "*"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("# ipv4\n*nat\n")
    ipv4, ipv6 = out.split("# ipv6\n")
    assert ipv4.count("COMMIT") == 1 and ipv6.count("COMMIT") == 1
    assert "127.0.0.6/32" in ipv4 and "::6/128" in ipv6


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-p", "70000"], "outside the port range"),
        (["-x", "*"], "'*' is not allowed"),
        (["--cni-mode"], "init container, not from a CNI plugin"),
        (["--native-nftables"], "not implemented"),
        (["--backend=python-iptables", "--iptables-mode=nft"], "only iptables-legacy"),
        (["--redirect-dns", "--resolv-conf=/"], "cannot read /"),
    ],
)
def test_bad_configuration_exits_2_with_a_reason(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*PINNED, *argv]) == 2
    assert message in capsys.readouterr().err


def test_help_teaches_with_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for needle in ("examples:", "--cleanup-only", "python-iptables #244", "NET_ADMIN", "126"):
        assert needle in text
