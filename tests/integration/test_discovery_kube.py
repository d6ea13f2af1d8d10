"""The Kubernetes source against the real test bed API server, all the way to a real Envoy.

Services without selectors and hand-made EndpointSlices: there is no kubelet, so pods never
get IPs. The mesh ConfigMap lives in the test's own namespace (``mesh_namespace``), so the
test changes no cluster-wide state.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client

from controlplane.app import DiscoveryOptions
from controlplane.sources.kube import KubeSource
from harness.control_plane import ControlPlaneThread
from harness.envoy import EnvoyProcess
from harness.kube_objects import endpoint_slice_object
from harness.mesh import CHARTS_CRDS, chart_crds
from harness.polling import wait_for
from meshlib.ports import free_port

pytestmark = [pytest.mark.testbed, pytest.mark.envoy]


def endpoint_slice(namespace: str, *addresses: str) -> dict[str, Any]:
    """The hand-made slice of service ``web``: ready IPv4 endpoints on port 8080."""
    return endpoint_slice_object(
        "web",
        namespace,
        {"http": 8080},
        addresses,
        name="web-manual",
        ready=True,
        address_type="IPv4",
        protocol="TCP",
        with_api_version=True,
    )


@pytest.fixture
def namespace(testbed: Any, unique_name: str) -> Iterator[str]:
    testbed.create_namespace(unique_name)
    yield unique_name
    testbed.kubectl("delete", "namespace", unique_name, "--wait=false", check=False)


def test_services_and_endpoint_slices_reach_envoy_and_deletions_remove_them(
    testbed: Any, namespace: str
) -> None:
    api = testbed.api_client()
    core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
    cp = ControlPlaneThread(
        DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None),
        synced=False,
        source_name="kubernetes",
    )
    source = KubeSource(
        testbed.api_client(),
        cp.store,
        cp.server.metrics,
        mesh_namespace=namespace,
        on_synced=cp.server.mark_synced,
    )
    try:
        cp.call(source.start)
        wait_for(lambda: cp.server.synced, timeout=30, what="the first complete list of every kind")
        with EnvoyProcess("client-1", namespace, "10.250.0.1", cp.xds_port) as envoy:
            cluster = f"outbound|80||web.{namespace}.svc.cluster.local"
            core.create_namespaced_service(
                namespace,
                {
                    "metadata": {"name": "web"},
                    "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080}]},
                },
            )
            discovery.create_namespaced_endpoint_slice(
                namespace, endpoint_slice(namespace, "10.244.0.5")
            )
            wait_for(
                lambda: envoy.endpoints().get(cluster) == ["10.244.0.5:8080 (HEALTHY)"],
                timeout=15,
                what="service + endpoints in Envoy",
            )
            vip = core.read_namespaced_service("web", namespace).spec.cluster_ip
            routes = envoy.route_configs()["80"]
            vhost = next(
                v
                for v in routes["virtual_hosts"]
                if v["name"] == f"web.{namespace}.svc.cluster.local:80"
            )
            assert (
                vip in vhost["domains"] and "web" in vhost["domains"]
            )  # the proxy is in the same namespace

            discovery.replace_namespaced_endpoint_slice(
                "web-manual",
                namespace,
                endpoint_slice(namespace, "10.244.0.5", "10.244.0.6"),
            )
            wait_for(
                lambda: (
                    envoy.endpoints().get(cluster)
                    == ["10.244.0.5:8080 (HEALTHY)", "10.244.0.6:8080 (HEALTHY)"]
                ),
                timeout=15,
                what="the endpoint update",
            )

            core.create_namespaced_config_map(
                namespace,
                {
                    "metadata": {"name": "istio"},
                    "data": {"mesh": "outboundTrafficPolicy:\n  mode: REGISTRY_ONLY\n"},
                },
            )

            def default_chain_target() -> str:
                outbound = next(
                    e
                    for e in envoy.config_dump("dynamic_listeners")
                    if e["name"] == "virtualOutbound"
                )
                chain = outbound["active_state"]["listener"]["default_filter_chain"]
                return str(chain["filters"][0]["typed_config"]["cluster"])

            wait_for(
                lambda: default_chain_target() == "BlackHoleCluster",
                timeout=15,
                what="the mesh config change",
            )

            discovery.delete_namespaced_endpoint_slice("web-manual", namespace)
            core.delete_namespaced_service("web", namespace)
            wait_for(
                lambda: cluster not in envoy.active_clusters(),
                timeout=15,
                what="the service removed from Envoy",
            )
            wait_for(
                lambda: cluster not in envoy.endpoints(),
                timeout=15,
                what="the endpoints removed from Envoy",
            )
            metrics = cp.server.metrics
            assert metrics.config_events.labels("kubernetes", "Service")._value.get() >= 2
            assert metrics.watch_events.labels("EndpointSlice", "DELETED")._value.get() >= 1
    finally:
        source.stop()
        cp.stop()


def _virtual_service(namespace: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "reviews", "namespace": namespace},
        "spec": spec,
    }


TLS_ROUTE = {
    "match": [{"port": 443, "sniHosts": ["reviews.example.com"]}],
    "route": [{"destination": {"host": "reviews"}}],
}


def test_a_virtual_service_is_watched_and_the_gauges_follow_it(
    testbed: Any, namespace: str
) -> None:
    """Created, changed (a field Remora does not honour goes), made invalid, deleted: the
    model and both gauges follow the cluster."""
    group, plural = "networking.istio.io", "virtualservices"
    with chart_crds(testbed):
        custom = client.CustomObjectsApi(testbed.api_client())
        cp = ControlPlaneThread(
            DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None),
            synced=False,
            source_name="kubernetes",
        )
        source = KubeSource(
            testbed.api_client(),
            cp.store,
            cp.server.metrics,
            mesh_namespace=namespace,
            on_synced=cp.server.mark_synced,
        )
        registry = cp.server.metrics.registry

        def modelled() -> Any:
            return cp.call(lambda: cp.store.snapshot().virtual_services.get((namespace, "reviews")))

        def gauge(name: str, **labels: str) -> float:
            return cp.call(lambda: registry.get_sample_value(name, labels)) or 0.0

        def replace(spec: dict[str, Any]) -> None:
            current = custom.get_namespaced_custom_object(group, "v1", namespace, plural, "reviews")
            current["spec"] = spec
            custom.replace_namespaced_custom_object(
                group, "v1", namespace, plural, "reviews", current
            )

        tls = {"kind": "VirtualService", "field": "spec.tls[]"}
        whole = {"kind": "VirtualService", "field": "*"}
        try:
            cp.call(source.start)
            wait_for(lambda: cp.server.synced, timeout=30, what="the first complete list")
            tls_before, whole_before = (
                gauge("remora_config_unsupported", **tls),
                gauge("remora_config_unsupported", **whole),
            )
            invalid_before = gauge("remora_config_invalid", kind="VirtualService")
            route = [{"destination": {"host": "reviews"}}]
            custom.create_namespaced_custom_object(
                group,
                "v1",
                namespace,
                plural,
                _virtual_service(
                    namespace,
                    {"hosts": ["reviews"], "http": [{"route": route}], "tls": [TLS_ROUTE]},
                ),
            )
            wait_for(lambda: modelled() is not None, timeout=30, what="the VirtualService")
            assert modelled().hosts == ("reviews",)
            assert gauge("remora_config_unsupported", **tls) == tls_before + 1
            # VirtualServices are translated: a valid one counts only its unhonoured fields.
            assert gauge("remora_config_unsupported", **whole) == whole_before

            replace({"hosts": ["reviews", "ratings"], "http": [{"route": route}]})
            wait_for(
                lambda: modelled() is not None and modelled().hosts == ("reviews", "ratings"),
                timeout=30,
                what="the change",
            )
            assert gauge("remora_config_unsupported", **tls) == tls_before
            assert gauge("remora_config_unsupported", **whole) == whole_before

            halves = [{**route[0], "weight": 40}, {"destination": {"host": "b"}, "weight": 50}]
            replace({"hosts": ["reviews"], "http": [{"route": halves}]})
            wait_for(lambda: modelled() is None, timeout=30, what="the refusal")
            assert gauge("remora_config_invalid", kind="VirtualService") == invalid_before + 1
            assert gauge("remora_config_unsupported", **whole) == whole_before

            custom.delete_namespaced_custom_object(group, "v1", namespace, plural, "reviews")
            wait_for(
                lambda: gauge("remora_config_invalid", kind="VirtualService") == invalid_before,
                timeout=30,
                what="the deletion",
            )
        finally:
            source.stop()
            cp.stop()


def test_an_istio_without_v1_is_watched_as_v1beta1(testbed: Any, namespace: str) -> None:
    """Istio up to 1.21 serves networking.istio.io as v1beta1 and v1alpha3 only: the source
    lists and watches v1beta1 there."""
    name = "virtualservices.networking.istio.io"
    if testbed.kubectl("get", "crd", name, check=False).returncode == 0:
        pytest.skip("a VirtualService CRD is installed already: cannot install an old one")
    crd = yaml.safe_load((CHARTS_CRDS / f"{name}.yaml").read_text())
    versions = [v for v in crd["spec"]["versions"] if v["name"] != "v1"]
    for version in versions:
        version["storage"] = version["name"] == "v1beta1"
    crd["spec"]["versions"] = versions
    testbed.kubectl("apply", "-f", "-", input=json.dumps(crd))
    cp = ControlPlaneThread(
        DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None),
        synced=False,
        source_name="kubernetes",
    )
    source = KubeSource(testbed.api_client(), cp.store, cp.server.metrics, mesh_namespace=namespace)
    try:
        testbed.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
        custom = client.CustomObjectsApi(testbed.api_client())
        body = {
            **_virtual_service(namespace, {"hosts": ["reviews"]}),
            "apiVersion": "networking.istio.io/v1beta1",
        }
        custom.create_namespaced_custom_object(
            "networking.istio.io", "v1beta1", namespace, "virtualservices", body
        )
        cp.call(source.start)
        wait_for(
            lambda: cp.call(
                lambda: cp.store.snapshot().virtual_services.get((namespace, "reviews"))
            ),
            timeout=30,
            what="the v1beta1 VirtualService listed",
        )
        custom.patch_namespaced_custom_object(
            "networking.istio.io", "v1beta1", namespace, "virtualservices", "reviews",
            {"spec": {"hosts": ["ratings"]}},
        )  # fmt: skip
        wait_for(
            lambda: (
                cp.call(lambda: cp.store.snapshot().virtual_services[(namespace, "reviews")].hosts)
                == ("ratings",)
            ),
            timeout=30,
            what="the change watched",
        )
    finally:
        source.stop()
        cp.stop()
        testbed.kubectl("delete", "crd", name, "--ignore-not-found", check=False)


def test_remora_discovery_with_kubeconfig_serves_the_cluster(testbed: Any, namespace: str) -> None:
    core = client.CoreV1Api(testbed.api_client())
    core.create_namespaced_service(
        namespace,
        {"metadata": {"name": "api"}, "spec": {"ports": [{"name": "grpc", "port": 9000}]}},
    )
    monitoring = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "remora", "discovery", "--kubeconfig", str(testbed.kubeconfig),
         "--mesh-namespace", namespace, "--listen-address", "127.0.0.1", "--xds-port", str(free_port()),
         "--monitoring-port", str(monitoring)],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{monitoring}"
    try:
        wait_for(
            lambda: httpx.get(f"{url}/ready").status_code == 200,
            timeout=30,
            what="synced with the cluster",
        )
        model = httpx.get(f"{url}/debug/model").json()
        assert model["objects"]["Service"] >= 2  # ours and the apiserver's own 'kubernetes'
        assert model["objects"]["Namespace"] >= 4
        metrics = httpx.get(f"{url}/metrics").text
        assert 'remora_config_events_total{kind="Service",source="kubernetes"}' in metrics
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr[-2000:]
    assert '"msg":"listed"' in stderr  # structured logs of the initial lists
