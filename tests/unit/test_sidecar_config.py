"""The agent's start-up decisions: env + flags -> AgentConfig, and clear errors on bad input."""

from __future__ import annotations

from typing import Any

import pytest

from meshlib.meshconfig import ProxyConfig
from sidecar.config import AgentConfig, AgentOptions, ConfigError, build_config, concurrency_for
from sidecar.node import metadata_from_env, parse_downward_api_map

BASE = {"POD_NAME": "web-0", "POD_NAMESPACE": "default", "INSTANCE_IP": "10.0.0.5"}


def config(env: dict[str, str] | None = None, **options: Any) -> AgentConfig:
    return build_config({**BASE, **(env or {})}, AgentOptions(**options), host_cpus=4)


@pytest.mark.parametrize(
    ("flag", "proxy_concurrency", "cpu_limit", "host", "expected"),
    [
        (3, 1, "8", 4, 3),  # the flag wins
        (None, 1, "8", 4, 1),  # then ProxyConfig
        (None, 0, "8", 4, 4),  # ProxyConfig 0: one worker per host CPU
        (None, None, "1", 4, 1),  # then the CPU limit
        (None, None, "8", 4, 4),  # capped at the host's CPUs
        (None, None, "0.5", 4, 1),  # at least one
        (None, None, "0", 4, 2),  # no limit: Istio's default of 2
        (None, None, None, 4, 2),
    ],
)
def test_concurrency_precedence(
    flag: int | None, proxy_concurrency: int | None, cpu_limit: str | None, host: int, expected: int
) -> None:
    got = concurrency_for(
        flag=flag,
        proxy_config=ProxyConfig(concurrency=proxy_concurrency),
        cpu_limit=cpu_limit,
        host_cpus=host,
    )
    assert got == expected


@pytest.mark.parametrize(
    ("env", "options", "message"),
    [
        ({"POD_NAME": ""}, {}, "POD_NAME is not set"),
        ({"INSTANCE_IP": "not-an-ip"}, {}, "is not an IP address"),
        ({"PROXY_CONFIG": "{nope"}, {}, "PROXY_CONFIG is not valid JSON"),
        ({"PROXY_CONFIG": '{"interceptionMode":"MAGIC"}'}, {}, "interceptionMode"),
        ({"ISTIO_CPU_LIMIT": "two"}, {}, "ISTIO_CPU_LIMIT='two' is not a number"),
        ({"ISTIO_KUBE_APP_PROBERS": "[1"}, {}, "ISTIO_KUBE_APP_PROBERS is not valid JSON"),
        (
            {"ISTIO_PROMETHEUS_ANNOTATIONS": '{"scrape":"true","port":"x"}'},
            {},
            "ISTIO_PROMETHEUS_ANNOTATIONS port: 'x' is not a port number",
        ),
        ({"ISTIO_METAJSON_LABELS": "{bad"}, {}, "ISTIO_METAJSON_LABELS is not valid JSON"),
        ({"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "maybe"}, {}, "is not a boolean"),
        ({}, {"discovery_address": "no-port"}, "is not host:port"),
        ({}, {"discovery_address": "cp:70000"}, "'cp:70000' has a bad port: '70000' is outside"),
        ({}, {"admin_port": 15021}, "pick distinct ports"),
        ({}, {"concurrency": 0}, "use 1 or more"),
    ],
)
def test_bad_input_says_what_to_fix(
    env: dict[str, str], options: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        config(env, **options)


def test_drain_settings_from_env_and_proxy_config() -> None:
    cfg = config(
        {
            "PROXY_CONFIG": '{"drainDuration":"30s","terminationDrainDuration":"20s"}',
            "MINIMUM_DRAIN_DURATION": "3s",
            "EXIT_ON_ZERO_ACTIVE_CONNECTIONS": "false",
        }
    )
    assert cfg.drain_duration_s == 30
    assert cfg.termination_drain_duration_s == 20
    assert cfg.minimum_drain_duration_s == 3
    assert cfg.exit_on_zero_active_connections is False
    # TERMINATION_DRAIN_DURATION_SECONDS (plain seconds, Istio's env) beats PROXY_CONFIG,
    # and the minimum never exceeds the maximum.
    cfg = config({"TERMINATION_DRAIN_DURATION_SECONDS": "2", "MINIMUM_DRAIN_DURATION": "9s"})
    assert cfg.termination_drain_duration_s == 2
    assert cfg.minimum_drain_duration_s == 2


def test_probe_destination_is_the_pod_ip_unless_legacy_localhost() -> None:
    assert config().probe_host == "10.0.0.5"
    legacy = config({"REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION": "true"})
    assert legacy.probe_host == "127.0.0.1"


def test_spiffe_identity_from_trust_domain_namespace_and_account() -> None:
    cfg = config({"TRUST_DOMAIN": "example.org", "SERVICE_ACCOUNT": "api"})
    assert cfg.spiffe_id == "spiffe://example.org/ns/default/sa/api"
    assert config().spiffe_id == "spiffe://cluster.local/ns/default/sa/default"


def test_ipv6_only_pod_listens_on_ipv6() -> None:
    assert config({"INSTANCE_IP": "fd00::5"}).bind_address == "::"
    assert config().bind_address == "0.0.0.0"


def test_metadata_strips_prefixes_and_parses_json() -> None:
    meta = metadata_from_env(
        {
            "ISTIO_META_CLUSTER_ID": "Kubernetes",
            "ISTIO_METAJSON_LABELS": '{"app":"web"}',
            "ISTIO_META_": "ignored: no key",
            "OTHER": "x",
        }
    )
    assert meta == {"CLUSTER_ID": "Kubernetes", "LABELS": {"app": "web"}}


def test_downward_api_labels_file() -> None:
    text = 'app="web"\nversion="v1"\nquote="a \\"b\\"\\nc"\ngarbage line\nhalf="unterminated\n'
    assert parse_downward_api_map(text) == {"app": "web", "version": "v1", "quote": 'a "b"\nc'}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("true", True), ("T", True), ("1", True), ("False", False), ("0", False), ("", True)],
)
def test_boolean_variables_read_as_go_parse_bool(value: str, expected: bool) -> None:
    """Istio's env.Register reads booleans with strconv.ParseBool; empty means unset."""
    assert config({"EXIT_ON_ZERO_ACTIVE_CONNECTIONS": value}).exit_on_zero_active_connections is (
        expected
    )


@pytest.mark.parametrize("value", ["yes", "on", "tRuE"])
def test_boolean_variables_refuse_what_go_refuses(value: str) -> None:
    with pytest.raises(
        ConfigError, match=f"^REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION: '{value}'"
    ):
        config({"REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION": value})


@pytest.mark.parametrize(("value", "seconds"), [("7", 7.0), ("7s", 7.0), ("1m", 60.0)])
def test_termination_drain_seconds_takes_seconds_or_a_duration(value: str, seconds: float) -> None:
    cfg = config({"TERMINATION_DRAIN_DURATION_SECONDS": value})
    assert cfg.termination_drain_duration_s == seconds


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MINIMUM_DRAIN_DURATION": "3"}, "MINIMUM_DRAIN_DURATION: '3' is missing a unit"),
        ({"TERMINATION_DRAIN_DURATION_SECONDS": "soon"}, "TERMINATION_DRAIN_DURATION_SECONDS: "),
        ({"MINIMUM_DRAIN_DURATION": "-1s"}, "MINIMUM_DRAIN_DURATION: '-1s' is negative"),
    ],
)
def test_duration_variables_name_themselves(env: dict[str, str], message: str) -> None:
    """MINIMUM_DRAIN_DURATION is a Go duration in Istio (no bare number); errors name the variable."""
    with pytest.raises(ConfigError, match=f"^{message}"):
        config(env)
