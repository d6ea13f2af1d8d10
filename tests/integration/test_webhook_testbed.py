"""The injection webhook against a real kube-apiserver (the test bed), registered as Istio ships it.

One webhook server and one MutatingWebhookConfiguration serve the module. The configuration
mirrors Istio's ``namespace.`` and ``object.`` webhooks (namespace label
``istio-injection=enabled``, pod label ``sidecar.istio.io/inject``), narrowed by a per-run
namespace label so that no other test's namespace is ever intercepted; it is deleted at the end.
Pods stay Pending (no kubelet): what the API server stored is what we check.
"""

from __future__ import annotations

import json
import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes import client

from injector.config import parse_config
from injector.in_process import WebhookServer
from testbed.launcher import TestBed

pytestmark = pytest.mark.testbed

RUN = uuid.uuid4().hex[:8]
SCOPE_LABEL = "remora-webhook-test"  # only namespaces with SCOPE_LABEL=RUN are intercepted
WEBHOOK_NAME = "namespace.sidecar-injector.remora.test"


def _webhook_configuration(server: WebhookServer) -> dict[str, Any]:
    def entry(
        name: str, namespace_exprs: list[dict[str, Any]], object_exprs: list[dict[str, Any]]
    ) -> dict[str, Any]:
        return {
            "name": name,
            "clientConfig": {"url": server.url, "caBundle": server.ca_bundle},
            "rules": [
                {
                    "operations": ["CREATE"],
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "resources": ["pods"],
                }
            ],
            "sideEffects": "None",
            "failurePolicy": "Fail",
            "reinvocationPolicy": "Never",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
            "namespaceSelector": {
                "matchExpressions": [
                    {"key": SCOPE_LABEL, "operator": "In", "values": [RUN]},
                    *namespace_exprs,
                ]
            },
            "objectSelector": {"matchExpressions": object_exprs},
        }

    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": f"remora-sidecar-injector-test-{RUN}"},
        "webhooks": [
            entry(
                WEBHOOK_NAME,
                [{"key": "istio-injection", "operator": "In", "values": ["enabled"]}],
                [{"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}],
            ),
            entry(
                "object.sidecar-injector.remora.test",
                [
                    {"key": "istio-injection", "operator": "DoesNotExist"},
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                ],
                [
                    {"key": "sidecar.istio.io/inject", "operator": "In", "values": ["true"]},
                    {"key": "istio.io/rev", "operator": "DoesNotExist"},
                ],
            ),
        ],
    }


def _pod(
    name: str, labels: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": labels or {"app": name},
            "annotations": annotations or {},
        },
        "spec": {
            "containers": [
                {
                    "name": "app",
                    "image": "nginx:1.27",
                    "ports": [{"name": "http", "containerPort": 80}],
                    "readinessProbe": {"httpGet": {"path": "/", "port": "http"}},
                }
            ]
        },
    }


def _names(pod: client.V1Pod) -> tuple[list[str], list[str]]:
    inits = [c.name for c in pod.spec.init_containers or []]
    return inits, [c.name for c in pod.spec.containers]


@pytest.fixture(scope="module")
def injector(testbed: TestBed) -> Iterator[WebhookServer]:
    config = parse_config({"kubernetesVersion": "1.34", "nativeSidecars": "false"})
    server = WebhookServer(config).start()
    mwc = _webhook_configuration(server)
    with testbed.api_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        admission.create_mutating_webhook_configuration(mwc)
        try:
            _wait_until_effective(testbed)
            yield server
        finally:
            admission.delete_mutating_webhook_configuration(mwc["metadata"]["name"])
            server.stop()


def _namespace(testbed: TestBed, labels: dict[str, str]) -> str:
    name = f"t-{uuid.uuid4().hex[:8]}"
    testbed.create_namespace(name, labels={SCOPE_LABEL: RUN, **labels})
    return name


def _wait_until_effective(testbed: TestBed, timeout: float = 30.0) -> None:
    """The API server picks up a new webhook configuration asynchronously: probe with dry-run."""
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    deadline = time.monotonic() + timeout
    with testbed.api_client() as api:
        core = client.CoreV1Api(api)
        while True:
            pod = core.create_namespaced_pod(namespace, _pod("probe"), dry_run="All")
            if "istio-proxy" in _names(pod)[1]:
                return
            if time.monotonic() > deadline:
                raise AssertionError("the webhook configuration never took effect")
            time.sleep(0.2)


def test_pod_in_a_labelled_namespace_is_stored_injected(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    with testbed.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, _pod("web"))
        stored = core.read_namespaced_pod("web", namespace)
    assert _names(stored) == (["istio-init"], ["app", "istio-proxy"])
    status = json.loads(stored.metadata.annotations["sidecar.istio.io/status"])
    assert status["containers"] == ["istio-proxy"] and status["revision"] == "default"
    assert stored.metadata.labels["security.istio.io/tlsMode"] == "istio"
    app = stored.spec.containers[0]
    assert app.readiness_probe.http_get.path == "/app-health/app/readyz"
    assert app.readiness_probe.http_get.port == 15020
    proxy = stored.spec.containers[1]
    env = {e.name: e.value for e in proxy.env}
    probers = json.loads(env["ISTIO_KUBE_APP_PROBERS"])
    assert probers["/app-health/app/readyz"]["httpGet"]["port"] == 80  # named port resolved
    assert (
        proxy.security_context.run_as_user == 1337
        and proxy.security_context.read_only_root_filesystem
    )
    init = stored.spec.init_containers[0]
    assert init.args[:3] == ["init", "-p", "15001"]
    assert sorted(init.security_context.capabilities.add) == ["NET_ADMIN", "NET_RAW"]
    volumes = {v.name for v in stored.spec.volumes}
    assert {"istio-envoy", "istio-token", "istiod-ca-cert", "istio-podinfo"} <= volumes


def test_deployment_pods_are_injected_through_the_controllers(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "shop"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "shop"}},
            "template": {"metadata": {"labels": {"app": "shop"}}, "spec": _pod("x")["spec"]},
        },
    }
    hits_before = injector.state.cache.hits
    with testbed.api_client() as api:
        client.AppsV1Api(api).create_namespaced_deployment(namespace, deployment)
        core = client.CoreV1Api(api)
        deadline = time.monotonic() + 60
        while len(pods := core.list_namespaced_pod(namespace).items) < 2:
            assert time.monotonic() < deadline, "the Deployment's pods never appeared"
            time.sleep(0.2)
    for pod in pods:
        assert _names(pod) == (["istio-init"], ["app", "istio-proxy"])
        env = {e.name: e.value for e in pod.spec.containers[1].env}
        assert env["ISTIO_META_WORKLOAD_NAME"] == "shop"
        assert (
            env["ISTIO_META_OWNER"]
            == f"kubernetes://apis/apps/v1/namespaces/{namespace}/deployments/shop"
        )
        assert pod.metadata.labels["service.istio.io/canonical-name"] == "shop"
    # At admission the ReplicaSet's pods are identical (name and uid come later), so the second
    # one is answered from the patch cache.
    assert injector.state.cache.hits >= hits_before + 1


@pytest.mark.parametrize(
    ("namespace_labels", "pod_labels", "annotations"),
    [
        ({}, {}, {}),  # unlabelled namespace
        ({"istio-injection": "disabled"}, {}, {}),
        (
            {"istio-injection": "enabled"},
            {"sidecar.istio.io/inject": "false"},
            {},
        ),  # objectSelector
        ({"istio-injection": "enabled"}, {}, {"sidecar.istio.io/inject": "false"}),  # server side
        (
            {"istio-injection": "enabled", "istio.io/rev": "canary"},
            {"sidecar.istio.io/inject": "false"},
            {},
        ),
    ],
    ids=[
        "unlabelled",
        "namespace-disabled",
        "opt-out-label",
        "opt-out-annotation",
        "opt-out-label-rev",
    ],
)
def test_pods_not_selected_are_stored_unchanged(
    testbed: TestBed,
    injector: WebhookServer,
    namespace_labels: dict[str, str],
    pod_labels: dict[str, str],
    annotations: dict[str, str],
) -> None:
    namespace = _namespace(testbed, namespace_labels)
    pod = _pod("plain", {"app": "plain", **pod_labels}, annotations)
    result = testbed.kubectl(
        "create", "-n", namespace, "-f", "-", "-o", "json", input=json.dumps(pod)
    )
    stored = json.loads(result.stdout)
    assert [c["name"] for c in stored["spec"]["containers"]] == ["app"]
    assert "initContainers" not in stored["spec"]
    assert "sidecar.istio.io/status" not in (stored["metadata"].get("annotations") or {})
    if annotations:  # the webhook was called and said why, visibly to kubectl
        assert "Warning: remora sidecar injector: pod not injected" in result.stderr
        assert 'sidecar.istio.io/inject is "false"' in result.stderr


def test_pod_label_opts_in_in_an_unlabelled_namespace(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {})
    with testbed.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(
            namespace, _pod("optin", {"app": "optin", "sidecar.istio.io/inject": "true"})
        )
        stored = core.read_namespaced_pod("optin", namespace)
    assert _names(stored) == (["istio-init"], ["app", "istio-proxy"])


def test_invalid_annotation_is_refused_with_the_message_visible_to_kubectl(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    pod = _pod("bad", annotations={"sidecar.istio.io/proxyCPU": "lots"})
    result = testbed.kubectl(
        "create", "-n", namespace, "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode != 0
    assert f'admission webhook "{WEBHOOK_NAME}" denied the request' in result.stderr
    assert "invalid value 'lots' for annotation 'sidecar.istio.io/proxyCPU'" in result.stderr
    missing = testbed.kubectl("get", "pod", "bad", "-n", namespace, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_server_side_dry_run_is_injected_and_not_stored(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    result = testbed.kubectl(
        "create",
        "-n",
        namespace,
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=json.dumps(_pod("dry")),
    )
    dry = json.loads(result.stdout)
    assert [c["name"] for c in dry["spec"]["containers"]] == ["app", "istio-proxy"]
    missing = testbed.kubectl("get", "pod", "dry", "-n", namespace, check=False)
    assert "NotFound" in missing.stderr


def test_native_sidecar_annotation_on_the_real_api_server(
    testbed: TestBed, injector: WebhookServer
) -> None:
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    pod = _pod("native", annotations={"sidecar.istio.io/nativeSidecar": "true"})
    with testbed.api_client() as api:
        core = client.CoreV1Api(api)
        core.create_namespaced_pod(namespace, pod)
        stored = core.read_namespaced_pod("native", namespace)
    assert _names(stored) == (["istio-init", "istio-proxy"], ["app"])
    assert stored.spec.init_containers[1].restart_policy == "Always"  # kept by a 1.34 API server


def test_metrics_count_what_the_api_server_sent(testbed: TestBed, injector: WebhookServer) -> None:
    def injected_total() -> float:
        assert injector.ca_pem is not None
        verify = ssl.create_default_context(cadata=injector.ca_pem.decode())
        with httpx.Client(verify=verify) as http:
            text = http.get(injector.base_url + "/metrics").text
        prefix = "remora_injector_injections_total "
        return next(
            float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)
        )

    before = injected_total()
    namespace = _namespace(testbed, {"istio-injection": "enabled"})
    with testbed.api_client() as api:
        client.CoreV1Api(api).create_namespaced_pod(namespace, _pod("counted"))
    assert injected_total() == before + 1


def test_the_cluster_version_is_learnt_for_the_native_sidecar_choice(testbed: TestBed) -> None:
    from injector.cli import detect_kubernetes_version

    # v1.34 API server, no kubelet registered: the API server's version decides.
    assert detect_kubernetes_version(str(testbed.kubeconfig)) == (1, 34)
