"""Shared by the xDS benchmarks: a synthetic mesh of N services x M endpoints, as Kubernetes
YAML, and an Envoy started exactly as the sidecar agent starts it (same bootstrap, same
command line), so that the figures are the product's."""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import httpx

from bench import procfs
from harness.envoy import loopback_sidecar
from meshlib.envoy_binary import envoy_path
from meshlib.processes import stop_process
from sidecar.bootstrap import build_bootstrap, envoy_args

NAMESPACE = "bench"

# What ``--bootstrap before`` removes from the product's bootstrap: the bootstrap as it was
# before the inclusion list, where Envoy creates every stat of every resource up front and
# every worker builds every cluster as it arrives.
STATS_KEYS = ("stats_config", "deferred_stat_options", "cluster_manager")


class SidecarEnvoy:
    """Envoy with the sidecar agent's bootstrap and command line (no agent around it: the
    bench measures Envoy and the control plane). ``before`` drops the stats inclusion list,
    deferred stats and deferred worker clusters, i.e. the bootstrap before them."""

    def __init__(
        self,
        pod: str,
        namespace: str,
        ip: str,
        xds_port: int,
        *,
        delta: bool = True,
        concurrency: int = 2,
        before: bool = False,
    ) -> None:
        self._dir = tempfile.TemporaryDirectory(prefix="remora-bench-envoy-")
        self.config = loopback_sidecar(
            pod,
            namespace,
            ip,
            xds_port,
            delta=delta,
            concurrency=concurrency,
            workdir=self._dir.name,
        )
        bootstrap = build_bootstrap(self.config)
        if before:
            for key in STATS_KEYS:
                bootstrap.pop(key, None)
        self.bootstrap = bootstrap
        path = Path(self._dir.name) / "envoy-rev.json"
        path.write_text(json.dumps(bootstrap))
        self.process = subprocess.Popen(
            [str(envoy_path()), *envoy_args(self.config, str(path))],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.admin = httpx.Client(
            base_url=f"http://127.0.0.1:{self.config.ports.admin}", timeout=5.0
        )

    def __enter__(self) -> SidecarEnvoy:
        return self

    def __exit__(self, *exc: object) -> None:
        stop_process(self.process)
        self.admin.close()
        self._dir.cleanup()

    def get(self, path: str) -> httpx.Response:
        if self.process.poll() is not None:
            raise RuntimeError(f"envoy exited with {self.process.returncode}")
        return self.admin.get(path)

    def _dump(self, resource: str) -> list[dict[str, Any]]:
        response = self.get(f"/config_dump?resource={resource}")
        response.raise_for_status()
        return list(response.json().get("configs", []))

    def listener_names(self) -> set[str]:
        return {e["name"] for e in self._dump("dynamic_listeners") if "active_state" in e}

    def active_clusters(self) -> int:
        return len(self._dump("dynamic_active_clusters"))

    def memory(self) -> dict[str, float]:
        """MiB from ``/proc/<pid>/smaps_rollup``: Rss, Anonymous."""
        rollup = procfs.smaps_rollup_kib(self.process.pid)
        return {name: rollup[name] / 1024 for name in ("Rss", "Anonymous") if name in rollup}

    def cpu_seconds(self) -> float:
        """CPU time Envoy has used so far, all threads (``/proc/<pid>/stat`` utime + stime)."""
        return procfs.read_stat(self.process.pid).cpu_seconds

    def stat_count(self) -> int:
        return len(self.get("/stats").text.splitlines())


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


def sidecar_pod(i: int, j: int) -> dict[str, Any]:
    """Endpoint ``j`` of service ``i`` as a pod with a sidecar (the injector's label), running
    as the service's own account: clients then speak mTLS to it (auto-mTLS)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"svc-{i}-{j}",
            "namespace": NAMESPACE,
            "labels": {"app": f"svc-{i}", "security.istio.io/tlsMode": "istio"},
        },
        "spec": {"serviceAccountName": f"svc-{i}", "containers": [{"name": "app"}]},
        "status": {"podIP": endpoint_ip(i, j)},
    }


def mesh(services: int, endpoints: int, *, pods: bool = False) -> list[dict[str, Any]]:
    """The mesh as Kubernetes objects; with ``pods``, every endpoint is a pod with a sidecar."""
    objects: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    ]
    for i in range(services):
        objects.append(service(i))
        objects.append(endpoint_slice(i, endpoints))
        if pods:
            objects.extend(sidecar_pod(i, j) for j in range(endpoints))
    return objects
