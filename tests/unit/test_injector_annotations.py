"""Annotation parsing: valid values map as Istio maps them; invalid ones name annotation and value."""

from __future__ import annotations

import pytest

from injector import annotations as A
from injector.annotations import pod_settings
from injector.config import default_config, parse_config, parse_kubernetes_version
from injector.containers import exclude_inbound_port
from injector.errors import AnnotationError, ConfigError

CONFIG = default_config()


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        (A.INTERCEPTION_MODE, "IPVS", "interceptionMode invalid, use REDIRECT,TPROXY,NONE"),
        (A.INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,nope", "includeIPRanges invalid"),
        (A.INCLUDE_OUTBOUND_IP_RANGES, "10.0.0.1", "includeIPRanges invalid"),
        (A.EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/8,10.0.0.1", "write 10.0.0.1/32"),
        (A.EXCLUDE_OUTBOUND_IP_RANGES, "10.0.0.0/33", "excludeIPRanges invalid"),
        (A.EXCLUDE_OUTBOUND_IP_RANGES, "*", "excludeIPRanges invalid"),
        (A.INCLUDE_INBOUND_PORTS, "80,http", "includeInboundPorts invalid"),
        (A.EXCLUDE_INBOUND_PORTS, "70000", "excludeInboundPorts invalid"),
        (A.EXCLUDE_OUTBOUND_PORTS, "-1", "excludeOutboundPorts invalid"),
        (A.INCLUDE_OUTBOUND_PORTS, "0", "includeOutboundPorts invalid"),
        (A.STATUS_PORT, "65536", "status port invalid"),
        (A.STATUS_PORT, "abc", "status port invalid"),
        (A.STATUS_PORT, "²", "status port invalid"),  # a digit to isdigit(), not to int()
        (A.STATUS_PORT, "١٥٠٢٠", "status port invalid"),  # Arabic-Indic digits: not ASCII
        (A.READINESS_PERIOD, "²", "periodSeconds invalid"),
        (A.EXCLUDE_INBOUND_PORTS, "80,²", "excludeInboundPorts invalid"),
        (A.READINESS_PERIOD, "-3", "periodSeconds invalid"),
        (A.READINESS_FAILURE_THRESHOLD, "1.5", "failureThreshold invalid"),
        (A.PROXY_CPU, "lots", "not a Kubernetes quantity"),
        (A.PROXY_MEMORY_LIMIT, "1 Gi", "not a Kubernetes quantity"),
        (A.NATIVE_SIDECAR, "yes please", "is not a boolean (use true or false)"),
        (A.REWRITE_PROBES, "sometimes", "is not a boolean"),
        (A.MERGE_METRICS, "2", "is not a boolean"),
        (A.CAP_NET_BIND_SERVICE, "yes", "is not a boolean"),  # Go's ParseBool, as Istio
        (A.NATIVE_SIDECAR, "tRuE", "is not a boolean"),
        (A.PROXY_CONFIG, "holdApplicationUntilProxyStarts: [", "not YAML or JSON"),
        (A.PROXY_CONFIG, "interceptionMode: BPF", "interceptionMode"),
        (A.PROXY_CONFIG, "- a list", "must be a ProxyConfig mapping"),
        (A.USER_VOLUME, "{not json", "not JSON"),
        (A.USER_VOLUME_MOUNT, '{"x": 1}', "JSON object of name -> object"),
        (A.EXCLUDE_INTERFACES, "eth0,this-name-is-far-too-long", "not a network interface name"),
        (A.PROXY_IMAGE, "bad image name", "not a container image"),
        (A.TEMPLATES, "gateway", "only the 'sidecar' template"),
    ],
)
def test_invalid_values_name_the_annotation_and_the_value(name: str, value: str, says: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        pod_settings({name: value}, CONFIG)
    message = str(caught.value)
    assert message.startswith(f"invalid value '{value}' for annotation '{name}': ")
    assert says in message
    assert (caught.value.name, caught.value.value) == (name, value)


def test_defaults_are_istios() -> None:
    s = pod_settings({}, CONFIG)
    assert (s.interception_mode, s.include_ip_ranges, s.exclude_ip_ranges) == ("REDIRECT", "*", "")
    assert (s.include_inbound_ports, s.exclude_inbound_ports) == ("*", "")
    assert s.include_outbound_ports is None and s.exclude_outbound_ports is None
    assert s.status_port == 15020
    assert (s.readiness_initial_delay, s.readiness_period, s.readiness_failure_threshold) == (
        0,
        15,
        4,
    )
    assert s.resources == {
        "requests": {"cpu": "100m", "memory": "128Mi"},
        "limits": {"cpu": "2000m", "memory": "1024Mi"},
    }
    assert s.rewrite_probes and s.merge_metrics and not s.native_sidecar and not s.hold_application


def test_port_lists_are_trimmed_and_empty_entries_dropped() -> None:
    s = pod_settings(
        {A.INCLUDE_INBOUND_PORTS: " 80 , ,8080,", A.EXCLUDE_OUTBOUND_PORTS: ""}, CONFIG
    )
    assert s.include_inbound_ports == "80,8080"
    assert s.exclude_outbound_ports == ""  # present but empty: -o "" is still passed, as in Istio


def test_cidr_lists_reach_the_init_container_as_written() -> None:
    """Validated as Istio's validateCIDRList does, passed on as Istio passes them (host bits and
    order kept), only trimmed of spaces and empty items."""
    s = pod_settings(
        {
            A.INCLUDE_OUTBOUND_IP_RANGES: "10.0.0.1/8, fd00::/8,,",
            A.EXCLUDE_OUTBOUND_IP_RANGES: "192.168.1.1/32",
        },
        CONFIG,
    )
    assert (s.include_ip_ranges, s.exclude_ip_ranges) == ("10.0.0.1/8,fd00::/8", "192.168.1.1/32")
    assert pod_settings({A.INCLUDE_OUTBOUND_IP_RANGES: " * "}, CONFIG).include_ip_ranges == "*"


@pytest.mark.parametrize(("value", "want"), [("TRUE", True), ("1", True), ("F", False)])
def test_boolean_annotations_take_go_spellings(value: str, want: bool) -> None:
    assert pod_settings({A.MERGE_METRICS: value}, CONFIG).merge_metrics is want


def test_one_resource_annotation_replaces_all_configured_resources() -> None:
    s = pod_settings({A.PROXY_MEMORY_LIMIT: "1Gi"}, CONFIG)
    assert s.resources == {"limits": {"memory": "1Gi"}}


def test_proxy_config_annotation_overlays_the_mesh_default() -> None:
    config = parse_config({"meshConfig": {"defaultConfig": {"proxyMetadata": {"A": "1"}}}})
    s = pod_settings(
        {A.PROXY_CONFIG: '{"proxyMetadata": {"B": "2"}, "interceptionMode": "TPROXY"}'}, config
    )
    assert dict(s.proxy_config.proxy_metadata) == {"A": "1", "B": "2"}
    assert s.interception_mode == "TPROXY"
    # The dedicated annotation wins over the proxy config's interception mode.
    s = pod_settings(
        {A.PROXY_CONFIG: "interceptionMode: TPROXY", A.INTERCEPTION_MODE: "NONE"}, config
    )
    assert s.interception_mode == "NONE"


def test_hold_from_annotation_or_config() -> None:
    assert pod_settings(
        {A.PROXY_CONFIG: "holdApplicationUntilProxyStarts: true"}, CONFIG
    ).hold_application
    config = parse_config({"holdApplicationUntilProxyStarts": True})
    held = pod_settings({A.PROXY_CONFIG: "holdApplicationUntilProxyStarts: false"}, config)
    assert held.hold_application  # either one asks for it, as in Istio


@pytest.mark.parametrize(
    ("config", "annotation", "want"),
    [
        ({}, None, False),
        ({"kubernetesVersion": "1.28"}, None, False),
        ({"kubernetesVersion": "1.29"}, None, True),
        ({"kubernetesVersion": "v1.34.4"}, None, True),
        ({"kubernetesVersion": "1.34", "nativeSidecars": "false"}, None, False),
        ({"nativeSidecars": "true"}, None, True),
        ({"nativeSidecars": "true"}, "false", False),
        ({"kubernetesVersion": "1.20"}, "true", True),
    ],
)
def test_native_sidecar_decision(config: dict, annotation: str | None, want: bool) -> None:
    annotations = {A.NATIVE_SIDECAR: annotation} if annotation is not None else {}
    assert pod_settings(annotations, parse_config(config)).native_sidecar is want


def test_image_annotation_short_name_uses_hub_and_tag() -> None:
    config = parse_config({"proxy": {"hub": "r.example/m", "tag": "9"}})
    assert pod_settings({A.PROXY_IMAGE: "dbg"}, config).image == "r.example/m/dbg:9"
    assert pod_settings({A.PROXY_IMAGE: "x/y:z"}, config).image == "x/y:z"
    assert pod_settings({}, config).image == "r.example/m/remora:9"


@pytest.mark.parametrize(
    ("port", "ports", "want"),
    [
        (15020, "", "15020"),
        (15020, "4,5,6", "4,5,6,15020"),
        (0, "4,5,6", "4,5,6"),
        (5, "4,5,6", "4,5,6"),
    ],
)
def test_exclude_inbound_port(port: int, ports: str, want: str) -> None:
    assert exclude_inbound_port(port, ports) == want


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ({"policy": "sometimes"}, "policy"),
        ({"nativeSidecars": "maybe"}, "nativeSidecars"),
        ({"proxy": {"uid": 0}}, "never runs as root"),
        ({"proxy": {"imagee": "x"}}, "unknown key 'proxy.imagee'"),
        ({"polcy": "enabled"}, "unknown key 'polcy'"),
        ({"proxy": {"uid": "abc"}}, "proxy.uid"),
        ({"kubernetesVersion": "latest"}, "kubernetesVersion"),
        (
            {"neverInjectSelector": [{"matchExpressions": [{"key": "a", "operator": "Gt"}]}]},
            "operator",
        ),
        ({"meshConfig": {"defaultConfig": {"statusPort": "x"}}}, "meshConfig"),
        ({"init": {"containerName": "istio-proxy"}}, "distinct"),
        (["not", "a", "mapping"], "must be a mapping"),
    ],
)
def test_bad_config_is_refused_with_the_key(raw: object, says: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(raw)  # type: ignore[arg-type]
    assert says in str(caught.value)


def test_kubernetes_version_parsing() -> None:
    assert parse_kubernetes_version("v1.34.4+k3s1") == (1, 34)
    assert parse_kubernetes_version("1.29") == (1, 29)
    assert parse_kubernetes_version("1.30+") == (1, 30)
    assert parse_kubernetes_version(None) is None


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("statusPort: 70000", "defaultConfig.statusPort: 70000 is not an integer in 0..65535"),
        ("statusPort: -5", "defaultConfig.statusPort: -5 is not an integer in 0..65535"),
        ("concurrency: true", "defaultConfig.concurrency: True is not an integer in 0.."),
        ("proxyAdminPort: 15.7", "defaultConfig.proxyAdminPort: 15.7 is not an integer in 1.."),
    ],
)
def test_an_out_of_range_proxy_config_integer_is_an_annotation_error(value: str, says: str) -> None:
    with pytest.raises(AnnotationError) as caught:
        pod_settings({A.PROXY_CONFIG: value}, CONFIG)
    assert caught.value.name == A.PROXY_CONFIG
    assert str(caught.value).startswith(
        f"invalid value '{value}' for annotation '{A.PROXY_CONFIG}': "
    )
    assert says in str(caught.value)
