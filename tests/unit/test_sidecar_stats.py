"""Envoy's stats inclusion list: the decision (pod annotations, ProxyConfig, Istio's required
entries) and what a real Envoy with the sidecar bootstrap then creates."""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from meshlib.envoy_binary import envoy_path
from meshlib.ports import free_port
from sidecar.bootstrap import build_bootstrap, envoy_args
from sidecar.config import AgentOptions, ConfigError, build_config
from sidecar.stats import (
    ISTIO_PREFIXES,
    PREFIXES_ANNOTATION,
    REGEXPS_ANNOTATION,
    SUFFIXES_ANNOTATION,
    StatsConfigError,
    stats_inclusion,
)


def decide(
    annotations: dict[str, str] | None = None,
    matcher: object = None,
    pod_ips: tuple[str, ...] = ("10.1.2.3",),
    drain: bool = True,
) -> tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    inclusion = stats_inclusion(
        annotations=annotations or {},
        proxy_stats_matcher=matcher,
        pod_ips=pod_ips,
        drain_on_zero_connections=drain,
    )
    return inclusion.prefixes, inclusion.suffixes, inclusion.regexps


def test_defaults_are_only_prefixes_ending_in_a_dot() -> None:
    """Envoy rejects unlisted stats without converting their names only when every entry is
    a "."-ended prefix: one suffix or regular expression costs ~20 % of a full push."""
    prefixes, suffixes, regexps = decide()
    assert suffixes == () and regexps == ()
    assert all(p.endswith(".") for p in prefixes), prefixes
    assert set(ISTIO_PREFIXES) | {"control_plane.", "http.", "listener."} == set(prefixes)
    assert "server." in prefixes and "cluster.xds-grpc." in prefixes  # readiness, Istio's


def test_listener_stats_only_when_the_drain_waits_for_connections() -> None:
    assert "listener." not in decide(drain=False)[0]


def test_annotation_replaces_proxy_config_per_list_and_comes_first() -> None:
    prefixes, suffixes, _ = decide(
        {PREFIXES_ANNOTATION: " http.{pod_ip}_ ,cluster.outbound|80||db.shop.svc.cluster.local,"},
        {"inclusionPrefixes": ["from.proxy.config"], "inclusionSuffixes": ["upstream_cx_active"]},
        pod_ips=("10.1.2.3", "fd00::3"),
    )
    assert prefixes[:3] == (
        "http.10.1.2.3_",
        "http.fd00__3_",  # Envoy writes "_" for ":" in stat names
        "cluster.outbound|80||db.shop.svc.cluster.local",
    )
    assert "from.proxy.config" not in prefixes
    assert suffixes == ("upstream_cx_active",)  # no suffix annotation: ProxyConfig's list


def test_entries_are_not_repeated() -> None:
    prefixes, suffixes, _ = decide(
        {PREFIXES_ANNOTATION: "server.", SUFFIXES_ANNOTATION: "rbac.denied,rbac.denied"}
    )
    assert prefixes.count("server.") == 1 and suffixes == ("rbac.denied",)


@pytest.mark.parametrize(
    ("annotations", "matcher", "message"),
    [
        ({REGEXPS_ANNOTATION: "cluster\\.(.*"}, None, "is not a regular expression"),
        ({}, {"inclusionRegexps": ["("]}, "is not a regular expression"),
        ({}, ["http."], "must be an object"),
        ({}, {"inclusionPrefixes": "http."}, "must be a list of strings"),
    ],
)
def test_bad_settings_say_what_to_fix(
    annotations: dict[str, str], matcher: object, message: str
) -> None:
    with pytest.raises(StatsConfigError, match=message):
        decide(annotations, matcher)


def test_a_bad_annotation_stops_the_agent_with_a_config_error() -> None:
    with pytest.raises(ConfigError, match="statsInclusionRegexps"):
        build_config(
            {"POD_NAME": "web-0", "POD_NAMESPACE": "shop"},
            AgentOptions(),
            host_cpus=2,
            pod_annotations={REGEXPS_ANNOTATION: "("},
        )


def _wait(url: str, timeout_s: float = 15.0) -> httpx.Response:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return httpx.get(url, timeout=2)
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


@contextlib.contextmanager
def sidecar_envoy(
    tmp_path: Path, annotations: dict[str, str] | None = None, **static: list[dict[str, Any]]
) -> Iterator[dict[str, int]]:
    """Envoy with the sidecar bootstrap of a pod with ``annotations``, its xDS part removed so
    that it starts at once, plus ``static`` listeners/clusters; yields the ports."""
    ports = {name: free_port() for name in ("admin", "status", "health", "prometheus")}
    config = build_config(
        {"POD_NAME": "web-0", "POD_NAMESPACE": "shop", "INSTANCE_IP": "127.0.0.1"},
        AgentOptions(
            discovery_address="127.0.0.1:15010",
            admin_port=ports["admin"],
            status_port=ports["status"],
            health_port=ports["health"],
            prometheus_port=ports["prometheus"],
            bind_address="127.0.0.1",
            concurrency=2,
            config_dir=str(tmp_path),
        ),
        host_cpus=2,
        pod_annotations=annotations or {},
    )
    bootstrap = build_bootstrap(config)
    del bootstrap["dynamic_resources"]
    for kind, resources in static.items():
        bootstrap["static_resources"][kind].extend(resources)
    path = tmp_path / "envoy-rev.json"
    path.write_text(json.dumps(bootstrap))
    envoy = subprocess.Popen(
        [str(envoy_path()), *envoy_args(config, str(path))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(f"http://127.0.0.1:{ports['admin']}/ready")
        yield ports
    finally:
        envoy.terminate()
        envoy.wait(10)


@pytest.mark.envoy
def test_envoy_creates_only_the_included_stats(tmp_path: Path) -> None:
    """A request through the Prometheus listener counts in its HTTP connection manager's
    stats (Remora's request metrics), no cluster stat but ``xds-grpc``'s exists, and the stats
    readiness and the drain read are there."""
    with sidecar_envoy(tmp_path) as ports:
        scrape = _wait(f"http://127.0.0.1:{ports['prometheus']}/stats/prometheus")
        assert scrape.status_code == 200
        stats = httpx.get(f"http://127.0.0.1:{ports['admin']}/stats", timeout=5).text
        values = dict(line.split(": ", 1) for line in stats.splitlines() if ": " in line)
        assert int(values["http.prometheus.downstream_rq_2xx"]) >= 1
        assert "server.live" in values
        assert "cluster_manager.active_clusters" in values
        assert "listener.prometheus.downstream_cx_active" in values  # the drain counts these
        other = {
            n for n in values if n.startswith("cluster.") and not n.startswith("cluster.xds-grpc.")
        }
        assert other == set()
        assert len(values) < 400, f"{len(values)} stats: the inclusion list is not applied"


@pytest.mark.envoy
def test_a_pod_asks_for_per_cluster_counters_with_istios_annotation(tmp_path: Path) -> None:
    with sidecar_envoy(
        tmp_path, annotations={PREFIXES_ANNOTATION: "cluster.prometheus_stats."}
    ) as ports:
        _wait(f"http://127.0.0.1:{ports['prometheus']}/stats/prometheus")
        stats = httpx.get(f"http://127.0.0.1:{ports['admin']}/stats", timeout=5).text
        assert "cluster.prometheus_stats.upstream_rq_2xx: 1" in stats


@pytest.mark.envoy
def test_deferred_worker_clusters_carry_original_destination_traffic(tmp_path: Path) -> None:
    """Workers build clusters on first use (``enable_deferred_cluster_creation``); the
    product's inbound and headless clusters are ORIGINAL_DST, so one must still carry traffic
    (here the destination comes from a header instead of a captured connection)."""
    listener_port = free_port()
    cluster = {
        "name": "inbound|8080||",
        "type": "ORIGINAL_DST",
        "lb_policy": "CLUSTER_PROVIDED",
        "connect_timeout": "1s",
        "original_dst_lb_config": {"use_http_header": True},
    }
    router = {
        "name": "envoy.filters.http.router",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
        },
    }
    hcm = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "inbound_8080",
        "route_config": {
            "virtual_hosts": [
                {
                    "name": "inbound",
                    "domains": ["*"],
                    "routes": [{"match": {"prefix": "/"}, "route": {"cluster": cluster["name"]}}],
                }
            ]
        },
        "http_filters": [router],
    }
    listener = {
        "name": "virtualInbound",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": listener_port}},
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }
    with sidecar_envoy(
        tmp_path,
        annotations={PREFIXES_ANNOTATION: "cluster.inbound|"},
        clusters=[cluster],
        listeners=[listener],
    ) as ports:
        answer = httpx.get(
            f"http://127.0.0.1:{listener_port}/ready",
            headers={"x-envoy-original-dst-host": f"127.0.0.1:{ports['admin']}"},
            timeout=5,
        )
        assert answer.status_code == 200 and answer.text.strip() == "LIVE"
        stats = httpx.get(f"http://127.0.0.1:{ports['admin']}/stats", timeout=5).text
        assert "cluster.inbound|8080||.upstream_rq_total: 1" in stats
