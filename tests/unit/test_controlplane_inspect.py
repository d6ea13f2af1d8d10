"""The tables of proxy-status and proxy-config, from the JSON the control plane and Envoy serve."""

from __future__ import annotations

from controlplane.inspect import (
    envoy_dump_path,
    format_proxy_status,
    format_resources,
    kubectl_exec_agent_request,
    resources_from_envoy_dump,
)


def test_proxy_status_table_shows_status_per_type_and_the_nack() -> None:
    statuses = [
        {
            "proxy": "web-1.shop",
            "node_id": "sidecar~10.0.0.1~web-1.shop~shop.svc.cluster.local",
            "mode": "delta",
            "types": {
                "CDS": {"status": "STALE", "last_nack": {"error": "Invalid duration: -1s"}},
                "EDS": {"status": "SYNCED", "last_nack": None},
                "LDS": {"status": "SYNCED", "last_nack": None},
            },
        }
    ]
    lines = format_proxy_status(statuses).splitlines()
    assert lines[0].split() == ["NAME", "MODE", "CDS", "LDS", "EDS", "RDS", "LAST", "NACK"]
    assert lines[1].split()[:6] == ["web-1.shop", "delta", "STALE", "SYNCED", "SYNCED", "NOT"]
    assert lines[1].endswith("CDS: Invalid duration: -1s")


def test_cluster_listener_route_and_endpoint_tables() -> None:
    clusters = format_resources(
        "clusters",
        [
            {"name": "outbound|80||web.shop.svc.cluster.local", "type": "EDS"},
            {"name": "PassthroughCluster", "type": "ORIGINAL_DST"},
        ],
    ).splitlines()
    assert clusters[1].split() == ["web.shop.svc.cluster.local", "80", "-", "OUTBOUND", "EDS"]
    assert clusters[2].split() == ["PassthroughCluster", "-", "-", "-", "ORIGINAL_DST"]

    listener = {
        "name": "virtualOutbound",
        "filterChains": [
            {
                "filterChainMatch": {
                    "destinationPort": 80,
                    "prefixRanges": [{"addressPrefix": f"10.96.0.{i}"} for i in range(5)],
                },
                "filters": [{"typedConfig": {"rds": {"routeConfigName": "80"}}}],
            },
            {
                "filterChainMatch": {"destinationPort": 8080, "applicationProtocols": ["h2c"]},
                "filters": [{"typedConfig": {"rds": {"routeConfigName": "8080"}}}],
            },
        ],
        "defaultFilterChain": {"filters": [{"typedConfig": {"cluster": "PassthroughCluster"}}]},
    }
    rows = format_resources("listeners", [listener]).splitlines()
    assert "10.96.0.0, 10.96.0.1, 10.96.0.2 (+2)" in rows[1]
    assert rows[1].split()[-3:] == ["ALL", "Route:", "80"]
    assert rows[2].split() == ["virtualOutbound", "ALL", "8080", "App:", "h2c", "Route:", "8080"]
    assert rows[3].endswith("Cluster: PassthroughCluster (no match)")

    route = {
        "name": "80",
        "virtualHosts": [
            {"name": "blocked", "domains": ["*"], "routes": [{"directResponse": {"status": 502}}]}
        ],
    }
    assert format_resources("routes", [route]).splitlines()[1].split() == [
        "80",
        "blocked",
        "*",
        "direct",
        "502",
    ]

    cla = {
        "clusterName": "c",
        "endpoints": [
            {
                "locality": {"zone": "z1"},
                "lbEndpoints": [
                    {
                        "endpoint": {
                            "address": {"socketAddress": {"address": "10.0.0.1", "portValue": 8080}}
                        },
                        "healthStatus": "DRAINING",
                    }
                ],
            }
        ],
    }
    assert format_resources("endpoints", [cla]).splitlines()[1].split() == [
        "10.0.0.1:8080",
        "DRAINING",
        "z1",
        "c",
    ]


def test_envoy_config_dump_is_unwrapped_and_camel_cased() -> None:
    dump = {"configs": [{"version_info": "1", "cluster": {"name": "a", "eds_cluster_config": {}}}]}
    assert resources_from_envoy_dump("clusters", dump) == [{"name": "a", "edsClusterConfig": {}}]
    listeners = {
        "configs": [{"name": "l", "active_state": {"listener": {"name": "l", "filter_chains": []}}}]
    }
    assert resources_from_envoy_dump("listeners", listeners) == [{"name": "l", "filterChains": []}]


def test_from_pod_goes_through_the_sidecar_agent() -> None:
    command = kubectl_exec_agent_request("web-1", "shop", envoy_dump_path("clusters"), "/k/config")
    assert command == [
        "kubectl", "--kubeconfig", "/k/config", "exec", "-n", "shop", "web-1", "-c", "istio-proxy", "--",
        "remora", "proxy", "request", "GET", "config_dump?resource=dynamic_active_clusters&include_eds",
    ]  # fmt: skip
