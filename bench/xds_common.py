"""Shared by the xDS benchmarks: a synthetic mesh of N services x M endpoints, as Kubernetes YAML."""

from __future__ import annotations

from typing import Any

NAMESPACE = "bench"

# Envoy stats limited like Istio's default sidecar bootstrap (its stats_matcher inclusion list):
# per-cluster stats are most of Envoy's per-cluster cost (memory and time).
ISTIO_LIKE_STATS: dict[str, Any] = {
    "stats_config": {
        "stats_matcher": {
            "inclusion_list": {
                "patterns": [
                    {"prefix": "cluster_manager"},
                    {"prefix": "listener_manager"},
                    {"prefix": "server"},
                    {"prefix": "cluster.xds-grpc"},
                    {"prefix": "control_plane"},
                ]
            }
        }
    }
}


def service_ip(i: int) -> str:
    return f"10.96.{i // 250}.{i % 250 + 1}"


def endpoint_ip(i: int, j: int) -> str:
    return f"10.{100 + i // 250}.{i % 250}.{j + 1}"


def service(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": f"svc-{i}", "namespace": NAMESPACE},
        "spec": {
            "clusterIP": service_ip(i),
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}],
        },
    }


def endpoint_slice(i: int, endpoints: int, generation: int = 0) -> dict[str, Any]:
    """The slice of service ``i``; a different ``generation`` moves its first endpoint."""
    addresses = [endpoint_ip(i, j) for j in range(endpoints)]
    if generation:
        addresses[0] = f"10.99.{generation // 250}.{generation % 250 + 1}"
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"svc-{i}-abcde",
            "namespace": NAMESPACE,
            "labels": {"kubernetes.io/service-name": f"svc-{i}"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": [{"addresses": [a], "conditions": {"ready": True}} for a in addresses],
    }


def mesh(services: int, endpoints: int) -> list[dict[str, Any]]:
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    ]
    for i in range(services):
        objects.append(service(i))
        objects.append(endpoint_slice(i, endpoints))
    return objects


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
