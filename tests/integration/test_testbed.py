"""The test bed is a real Kubernetes control plane: controllers act, webhooks are called,
dry-run works, and nothing is left behind when it stops."""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from meshlib import certs
from testbed.binaries import Binaries
from testbed.launcher import TestBed, running

pytestmark = pytest.mark.testbed


def _wait_for(predicate: Any, timeout: float = 30.0, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)


def test_deployment_gets_replicaset_and_pending_pods_from_real_controllers(
    testbed: TestBed, unique_name: str
) -> None:
    testbed.create_namespace(unique_name)
    with testbed.api_client() as api:
        apps, core = client.AppsV1Api(api), client.CoreV1Api(api)
        apps.create_namespaced_deployment(
            unique_name,
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 2,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]},
                    },
                },
            },
        )
        replicasets = _wait_for(lambda: apps.list_namespaced_replica_set(unique_name).items)
        assert replicasets[0].metadata.owner_references[0].kind == "Deployment"
        pods = _wait_for(
            lambda: (
                (items := core.list_namespaced_pod(unique_name).items) and len(items) == 2 and items
            )
        )
        for pod in pods:
            assert pod.metadata.owner_references[0].kind == "ReplicaSet"
        # The scheduler runs but there is no node (no kubelet): the Pods stay Pending and the
        # scheduler says why.
        time.sleep(1.0)
        for pod in core.list_namespaced_pod(unique_name).items:
            assert pod.status.phase == "Pending"
            assert pod.spec.node_name is None
        events = _wait_for(
            lambda: [
                e
                for e in core.list_namespaced_event(unique_name).items
                if e.reason == "FailedScheduling"
            ]
        )
        assert "no nodes available" in events[0].message


class _PatchingWebhook:
    """A minimal HTTPS admission webhook that adds a label and counts its calls."""

    def __init__(self, tmp: Path) -> None:
        self.ca = certs.new_ca("test-webhook-ca")
        pair = certs.issue(self.ca, "webhook", ip_addresses=("127.0.0.1",))
        (tmp / "tls.crt").write_bytes(pair.cert_pem)
        (tmp / "tls.key").write_bytes(pair.key_pem)
        self.calls: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.calls.append(review)
                patch = [
                    {"op": "add", "path": "/metadata/labels/mutated-by", "value": "test-webhook"}
                ]
                body = json.dumps(
                    {
                        "apiVersion": "admission.k8s.io/v1",
                        "kind": "AdmissionReview",
                        "response": {
                            "uid": review["request"]["uid"],
                            "allowed": True,
                            "patchType": "JSONPatch",
                            "patch": base64.b64encode(json.dumps(patch).encode()).decode(),
                        },
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(tmp / "tls.crt", tmp / "tls.key")
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def patching_webhook(tmp_path: Path) -> Iterator[_PatchingWebhook]:
    hook = _PatchingWebhook(tmp_path)
    yield hook
    hook.close()


def test_mutating_webhook_is_called_and_its_patch_applied_also_on_dry_run(
    testbed: TestBed, unique_name: str, patching_webhook: _PatchingWebhook
) -> None:
    testbed.create_namespace(unique_name, labels={"webhook-test": unique_name})
    config = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": unique_name},
        "webhooks": [
            {
                "name": f"label.{unique_name}.remora.test",
                "clientConfig": {
                    "url": f"https://127.0.0.1:{patching_webhook.port}/mutate",
                    "caBundle": base64.b64encode(patching_webhook.ca.cert_pem).decode(),
                },
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {"matchLabels": {"webhook-test": unique_name}},
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 5,
            }
        ],
    }
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", "labels": {"app": "demo"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }
    with testbed.api_client() as api:
        admission = client.AdmissionregistrationV1Api(api)
        core = client.CoreV1Api(api)
        admission.create_mutating_webhook_configuration(config)
        try:
            # The apiserver's webhook informer picks the configuration up asynchronously.
            def created_mutated() -> Any:
                try:
                    made = core.create_namespaced_pod(unique_name, pod, dry_run="All")
                except client.ApiException:
                    return None
                return made if (made.metadata.labels or {}).get("mutated-by") else None

            dry = _wait_for(created_mutated, timeout=20)
            assert dry.metadata.labels["mutated-by"] == "test-webhook"
            assert patching_webhook.calls[-1]["request"]["dryRun"] is True
            # Server-side dry-run stored nothing.
            assert core.list_namespaced_pod(unique_name).items == []

            stored = core.create_namespaced_pod(unique_name, pod)
            assert stored.metadata.labels == {"app": "demo", "mutated-by": "test-webhook"}
            fetched = core.read_namespaced_pod("app", unique_name)
            assert fetched.metadata.labels["mutated-by"] == "test-webhook"
            last = patching_webhook.calls[-1]["request"]
            assert last["dryRun"] is False
            assert last["namespace"] == unique_name
            assert last["object"]["metadata"]["name"] == "app"
        finally:
            admission.delete_mutating_webhook_configuration(unique_name)


def _port_open(url: str) -> bool:
    host, port = url.removeprefix("https://").rsplit(":", 1)
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


def test_two_test_beds_run_side_by_side_and_stop_without_leftovers(
    testbed: TestBed, testbed_binaries: Binaries
) -> None:
    with running(binaries=testbed_binaries, controllers=False) as second:
        assert second.server != testbed.server
        assert second.get("/readyz")[0] == 200
        assert testbed.get("/readyz")[0] == 200
        pids = second.pids()
        workdir = second.workdir
        server = second.server
        assert set(pids) == {"etcd", "kube-apiserver"}
    for pid in pids.values():
        assert not Path(f"/proc/{pid}").exists(), f"pid {pid} still running"
    assert not workdir.exists()
    assert not _port_open(server)


def test_a_failure_inside_the_block_still_tears_everything_down(
    testbed_binaries: Binaries,
) -> None:
    seen: dict[str, Any] = {}
    with (
        pytest.raises(RuntimeError, match="boom"),
        running(binaries=testbed_binaries, controllers=False) as bed,
    ):
        seen.update(pids=bed.pids(), workdir=bed.workdir)
        raise RuntimeError("boom")
    for pid in seen["pids"].values():
        assert not Path(f"/proc/{pid}").exists()
    assert not seen["workdir"].exists()


def test_cli_up_kubectl_down_as_a_new_user_would(unique_name: str) -> None:
    """``remora testbed up``, then kubectl by hand, then ``down`` leaves nothing running."""
    cache = tempfile.mkdtemp(prefix="remora-cache-")
    env = {**os.environ, "REMORA_CACHE": cache}
    # Binaries come from the real cache, the run state goes to a private one.
    env.setdefault("KUBEBUILDER_ASSETS", str(Binaries.locate().etcd.parent))
    remora = [sys.executable, "-m", "remora"]
    up = subprocess.run(
        [*remora, "testbed", "up", "--name", unique_name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    assert "kubectl --kubeconfig" in up.stderr
    try:
        exports = subprocess.run(
            [*remora, "testbed", "env", "--name", unique_name],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        kubeconfig = exports.split("KUBECONFIG=", 1)[1].split("\n", 1)[0].strip("'")
        kubectl = str(Binaries.locate().kubectl)
        got = subprocess.run(
            [kubectl, "--kubeconfig", kubeconfig, "get", "ns", "-o", "name"],
            capture_output=True,
            text=True,
            check=True,
        )
        assert "namespace/default" in got.stdout.split()
        assert "namespace/kube-system" in got.stdout.split()
        state = json.loads((Path(kubeconfig).parent / "state.json").read_text())
        pids = [c["pid"] for c in state["components"]]
        assert len(pids) == 4
    finally:
        down = subprocess.run(
            [*remora, "testbed", "down", "--name", unique_name],
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
    assert down.returncode == 0, down.stderr
    for pid in pids:
        assert (
            not Path(f"/proc/{pid}").exists()
            or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[:1]
        )
    assert not Path(kubeconfig).parent.exists()
    status = subprocess.run(
        [*remora, "testbed", "status", "--name", unique_name],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert status.returncode != 0
    assert "remora testbed up" in status.stderr
