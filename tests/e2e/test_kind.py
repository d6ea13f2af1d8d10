"""Remora in a real cluster (kind): what a user proves after ``helm install``.

``make kind-up`` creates the cluster, loads the image, installs the chart and deploys
``manifests/demo.yaml`` unchanged into a namespace labelled ``istio-injection=enabled``;
``make kind-test`` runs this file. Without Docker, kind or privileged containers every test
skips with the reason found by trying (see kindlib.py).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from kindlib import DEMO, IMAGE, MESH_NAMESPACE, Kind, eventually

pytestmark = [pytest.mark.e2e]

SERVER = f"http://server.{DEMO}.svc.cluster.local:8080/hello"


def _names(pod: dict[str, Any]) -> tuple[set[str], set[str]]:
    spec = pod["spec"]
    return {c["name"] for c in spec.get("initContainers", [])}, {
        c["name"] for c in spec["containers"]
    }


def test_injected_pods_come_up_with_both_containers_and_capture_in_place(kind: Kind) -> None:
    for app in ("server", "client"):
        pod = kind.pod(app)
        init, containers = _names(pod)
        assert "istio-init" in init
        assert "istio-proxy" in init | containers  # native sidecar (init) or classic
        statuses = {s["name"]: s for s in pod["status"].get("initContainerStatuses", [])}
        done = statuses["istio-init"]["state"]["terminated"]
        assert done["exitCode"] == 0 and done["reason"] == "Completed"
        ready = {s["name"]: s["ready"] for s in pod["status"]["containerStatuses"]}
        ready |= {
            s["name"]: s.get("ready", False)
            for s in statuses.values()
            if s["name"] == "istio-proxy"
        }
        assert all(ready.values()), ready
        # The init container says it installed the rules (and how many).
        log = kind.kubectl("logs", "-n", DEMO, pod["metadata"]["name"], "-c", "istio-init").stdout
        assert "capture rules installed" in log


def test_client_reaches_server_through_the_sidecars_with_its_mtls_identity(kind: Kind) -> None:
    out = kind.http_get("client", SERVER)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    headers = {k.lower(): v for k, v in seen["headers"].items()}
    # The server's sidecar terminated mTLS and tells the app who called: the client's
    # SPIFFE identity (ServiceAccount "client").
    assert f"spiffe://cluster.local/ns/{DEMO}/sa/client" in headers.get(
        "x-forwarded-client-cert", ""
    )


def test_strict_mtls_refuses_plaintext_from_outside_the_mesh(kind: Kind) -> None:
    policy = {
        "apiVersion": "security.istio.io/v1",
        "kind": "PeerAuthentication",
        "metadata": {"name": "strict", "namespace": DEMO},
        "spec": {"mtls": {"mode": "STRICT"}},
    }
    kind.kubectl("apply", "-f", "-", input=json.dumps(policy))
    try:
        eventually(
            lambda: kind.http_get("legacy-client", SERVER).returncode != 0,
            "STRICT to refuse the sidecar-less client",
            timeout=60,
        )
        meshed = kind.http_get("client", SERVER)
        assert meshed.returncode == 0, meshed.stderr
    finally:
        kind.kubectl("delete", "peerauthentication", "strict", "-n", DEMO, check=False)
    eventually(
        lambda: kind.http_get("legacy-client", SERVER).returncode == 0,
        "PERMISSIVE (the default) to accept plaintext again",
        timeout=60,
    )


def test_the_opt_out_label_keeps_a_pod_out_of_the_mesh(kind: Kind) -> None:
    init, containers = _names(kind.pod("legacy-client"))
    assert not {"istio-init", "istio-proxy"} & (init | containers)
    assert containers == {"client"}


def test_a_job_completes_with_its_sidecar(kind: Kind) -> None:
    name = f"job-{uuid.uuid4().hex[:6]}"
    code = f"import urllib.request as u; u.urlopen({SERVER!r}, timeout=10).read()"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": DEMO},
        "spec": {
            "backoffLimit": 2,
            "ttlSecondsAfterFinished": 60,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": "client",
                    "containers": [
                        {
                            "name": "job",
                            "image": IMAGE,
                            "command": ["/opt/remora/bin/python", "-c", code],
                        }
                    ],
                }
            },
        },
    }
    kind.kubectl("apply", "-f", "-", input=json.dumps(job))
    try:
        done = kind.kubectl(
            "wait", "-n", DEMO, f"job/{name}", "--for=condition=Complete", "--timeout=180s",
            timeout=200,
        )  # fmt: skip
        assert "condition met" in done.stdout
    finally:
        kind.kubectl("delete", "job", name, "-n", DEMO, "--wait=false", check=False)


def test_injection_survives_losing_an_injector_replica(kind: Kind) -> None:
    selector = "app.kubernetes.io/component=injector"
    pods = kind.get("pods", "-n", MESH_NAMESPACE, "-l", selector)["items"]
    assert len(pods) >= 2
    kind.kubectl("delete", "pod", "-n", MESH_NAMESPACE, pods[0]["metadata"]["name"], "--wait=false")
    created = []
    try:
        for i in range(5):
            name = f"probe-{uuid.uuid4().hex[:6]}-{i}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": name, "namespace": DEMO},
                "spec": {
                    "containers": [{"name": "app", "image": IMAGE, "command": ["sleep", "5"]}]
                },
            }
            kind.kubectl(
                "apply", "-f", "-", input=json.dumps(pod)
            )  # failurePolicy Fail: must answer
            created.append(name)
            init, containers = _names(kind.get("pod", name, "-n", DEMO))
            assert "istio-proxy" in init | containers
    finally:
        for name in created:
            kind.kubectl("delete", "pod", name, "-n", DEMO, "--wait=false", check=False)
    eventually(
        lambda: len(
            [p for p in kind.get("pods", "-n", MESH_NAMESPACE, "-l", selector)["items"]
             if all(s.get("ready") for s in p["status"].get("containerStatuses", []))]
        ) >= 2,
        "the injector Deployment to replace the lost replica",
    )  # fmt: skip
