"""Envoy's bootstrap and command line for a sidecar (pure: :class:`AgentConfig` in, JSON out).

What the bootstrap holds, and why:

* ``node``: the identity the control plane keys its config on (:mod:`sidecar.node`).
* ``dynamic_resources``: ADS (delta by default, like Istio) to the control plane for listeners
  and clusters. ``initial_fetch_timeout: 0s`` keeps Envoy from going live with an empty
  config: it stays "initializing", and so not ready, until the first full config arrives.
* ``xds-grpc``: the control plane over HTTP/2, plaintext or TLS verified against the mesh
  root with the control plane's DNS SAN checked; with TLS Envoy presents the workload
  certificate (SDS ``default``) so the control plane can tell who is asking.
* ``sds-grpc``: the agent's SDS server on a unix socket; the control plane's TLS contexts
  refer to it by this name for ``default`` (the workload certificate) and ``ROOTCA``.
* two static listeners kubelet and Prometheus use: ``:15021/healthz/ready`` forwarded to the
  agent (so the probe fails if Envoy is down, not only if the agent is), and
  ``:15090/stats/prometheus`` forwarded to the admin endpoint, which stays on loopback.
* ``stats_config``: the stats inclusion list (:mod:`sidecar.stats`), and
  ``deferred_stat_options``: a cluster's traffic stats are created when it carries its first
  request, not when it arrives. With every stat created up front, a sidecar given 1,000
  services holds 113k stats and takes a full push about 2.5 times as long
  (``docs/benchmarks.md``, "Control plane").
* ``cluster_manager.enable_deferred_cluster_creation``: each worker thread builds its copy
  of a cluster on its first request to it. Otherwise every cluster that arrives is built
  once per worker as well, on cores the main thread needs for the push itself.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any

from sidecar.config import AgentConfig
from sidecar.stats import stats_matcher

XDS_CLUSTER = "xds-grpc"
SDS_CLUSTER = "sds-grpc"
AGENT_CLUSTER = "agent"
PROMETHEUS_CLUSTER = "prometheus_stats"
HEALTH_LISTENER = "health"
# Envoy's log lines in the agent's shapes (meshlib.logs): the same keys in JSON, so one
# container log parses as one stream; %j is the message escaped for a JSON string.
ENVOY_JSON_LOG_FORMAT = (
    '{"time":"%Y-%m-%dT%T.%fZ","level":"%l","logger":"envoy %n","msg":"%j","caller":"%g:%#"}'
)
ENVOY_TEXT_LOG_FORMAT = "%Y-%m-%dT%T.%fZ\t%l\tenvoy %n %g:%#\t%v"
PROMETHEUS_LISTENER = "prometheus"

_HTTP2 = {
    "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {
            "http2_protocol_options": {
                "connection_keepalive": {"interval": "30s", "timeout": "10s"},
            }
        },
    }
}


def _socket(address: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": address, "port_value": port}}


def _static_cluster(name: str, address: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address}}]}],
        },
        **extra,
    }


def sds_config_source() -> dict[str, Any]:
    """How a TLS context asks the agent for a secret (the control plane uses the same shape)."""
    return {
        "api_config_source": {
            "api_type": "GRPC",
            "transport_api_version": "V3",
            "set_node_on_first_message_only": True,
            "grpc_services": [{"envoy_grpc": {"cluster_name": SDS_CLUSTER}}],
        },
        "initial_fetch_timeout": "0s",
        "resource_api_version": "V3",
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _xds_cluster(config: AgentConfig) -> dict[str, Any]:
    xds = config.xds
    cluster: dict[str, Any] = {
        "name": XDS_CLUSTER,
        "type": "STATIC" if _is_ip(xds.host) else "STRICT_DNS",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": XDS_CLUSTER,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket(xds.host, xds.port)}}]}
            ],
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "priority": "DEFAULT",
                    "max_connections": 100000,
                    "max_pending_requests": 100000,
                    "max_requests": 100000,
                }
            ]
        },
        "upstream_connection_options": {"tcp_keepalive": {"keepalive_time": 300}},
        "typed_extension_protocol_options": _HTTP2,
    }
    if not _is_ip(xds.host):
        cluster["dns_lookup_family"] = "V4_PREFERRED"
    if xds.tls:
        server_is_ip = _is_ip(xds.server_name)
        common: dict[str, Any] = {
            "alpn_protocols": ["h2"],
            "validation_context": {
                "trusted_ca": {"filename": xds.root_cert_path},
                "match_typed_subject_alt_names": [
                    {
                        "san_type": "IP_ADDRESS" if server_is_ip else "DNS",
                        "matcher": {"exact": xds.server_name},
                    }
                ],
            },
        }
        if config.workload_certificates:
            # The control plane learns who is asking from the workload certificate.
            common["tls_certificate_sds_secret_configs"] = [
                {"name": "default", "sds_config": sds_config_source()}
            ]
        tls: dict[str, Any] = {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "common_tls_context": common,
        }
        if not server_is_ip:
            tls["sni"] = xds.server_name  # SNI carries host names only (RFC 6066)
        cluster["transport_socket"] = {"name": "envoy.transport_sockets.tls", "typed_config": tls}
    return cluster


def _forwarding_listener(
    name: str, address: str, port: int, path: str, cluster: str, *, prefix: bool
) -> dict[str, Any]:
    match = {"prefix": path} if prefix else {"path": path}
    return {
        "name": name,
        "stat_prefix": name,
        "address": _socket(address, port),
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": name,
                            "codec_type": "AUTO",
                            "route_config": {
                                "virtual_hosts": [
                                    {
                                        "name": name,
                                        "domains": ["*"],
                                        "routes": [
                                            {
                                                "match": match,
                                                "route": {"cluster": cluster, "timeout": "5s"},
                                            }
                                        ],
                                    }
                                ]
                            },
                            "http_filters": [
                                {
                                    "name": "envoy.filters.http.router",
                                    "typed_config": {
                                        "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"
                                    },
                                }
                            ],
                        },
                    }
                ]
            }
        ],
    }


def merge_override(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Protobuf merge semantics on JSON (what Istio's ``ISTIO_BOOTSTRAP_OVERRIDE`` does):
    objects merge key by key, lists are appended, anything else is replaced."""
    merged = dict(base)
    for key, value in override.items():
        current = merged.get(key)
        if isinstance(current, Mapping) and isinstance(value, Mapping):
            merged[key] = merge_override(current, value)
        elif isinstance(current, list) and isinstance(value, list):
            merged[key] = [*current, *value]
        else:
            merged[key] = value
    return merged


def build_bootstrap(config: AgentConfig) -> dict[str, Any]:
    """The Envoy bootstrap for this sidecar, as a JSON-ready dict (with the pod's override)."""
    generated = _generated_bootstrap(config)
    if config.bootstrap_override:
        return merge_override(generated, config.bootstrap_override)
    return generated


def _generated_bootstrap(config: AgentConfig) -> dict[str, Any]:
    ads_source = {"ads": {}, "resource_api_version": "V3", "initial_fetch_timeout": "0s"}
    loopback = config.loopback
    stats: dict[str, Any] = {}
    if config.stats is not None:
        stats["stats_config"] = {"stats_matcher": stats_matcher(config.stats)}
    return {
        "node": {
            "id": config.node_id,
            "cluster": config.node_cluster,
            "metadata": dict(sorted(config.node_metadata.items())),
        },
        "admin": {"address": _socket(loopback, config.ports.admin)},
        **stats,
        "deferred_stat_options": {"enable_deferred_creation_stats": True},
        "cluster_manager": {"enable_deferred_cluster_creation": True},
        "layered_runtime": {
            "layers": [
                {
                    "name": "global config",
                    "static_layer": {"re2.max_program_size.error_level": 32768},
                },
                {"name": "admin", "admin_layer": {}},
            ]
        },
        # A sidecar takes every connection the app gets; the limit is the pod's, not Envoy's.
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": 2147483647,
                    },
                }
            ]
        },
        "dynamic_resources": {
            "ads_config": {
                "api_type": config.xds.api,
                "transport_api_version": "V3",
                "set_node_on_first_message_only": True,
                "grpc_services": [{"envoy_grpc": {"cluster_name": XDS_CLUSTER}}],
            },
            "cds_config": ads_source,
            "lds_config": ads_source,
        },
        "static_resources": {
            "clusters": [
                _static_cluster(PROMETHEUS_CLUSTER, _socket(loopback, config.ports.admin)),
                _static_cluster(AGENT_CLUSTER, _socket(loopback, config.ports.status)),
                _static_cluster(
                    SDS_CLUSTER,
                    {"pipe": {"path": config.sds_socket}},
                    typed_extension_protocol_options=_HTTP2,
                ),
                _xds_cluster(config),
            ],
            "listeners": [
                _forwarding_listener(
                    PROMETHEUS_LISTENER,
                    config.bind_address,
                    config.ports.prometheus,
                    "/stats/prometheus",
                    PROMETHEUS_CLUSTER,
                    prefix=True,
                ),
                _forwarding_listener(
                    HEALTH_LISTENER,
                    config.bind_address,
                    config.ports.health,
                    "/healthz/ready",
                    AGENT_CLUSTER,
                    prefix=False,
                ),
            ],
        },
    }


def envoy_args(config: AgentConfig, bootstrap_path: str) -> list[str]:
    """Envoy's command line (without the binary).

    Hot restart is off: the agent restarts nothing, and two Envoys on a host would otherwise
    fight over the shared-memory domain socket. ``--drain-strategy immediate`` makes a drained
    listener ask every connection to close at once instead of spreading it over the drain time.
    """
    return [
        "-c",
        bootstrap_path,
        "--concurrency",
        str(config.concurrency),
        "--disable-hot-restart",
        "--drain-time-s",
        str(max(1, round(config.drain_duration_s))),
        "--drain-strategy",
        "immediate",
        "--local-address-ip-version",
        "v6" if config.ipv6 else "v4",
        "--log-level",
        config.proxy_log_level,
        "--component-log-level",
        config.component_log_level,
        "--log-format",
        ENVOY_JSON_LOG_FORMAT if config.log_json else ENVOY_TEXT_LOG_FORMAT,
    ]
