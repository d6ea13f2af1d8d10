"""``istio-ca-root-cert`` is published to new namespaces and repaired, on the real apiserver."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client

from controlplane.ca.authority import CAMaterial
from controlplane.ca.rootcert import CONFIGMAP_NAME, ROOT_KEY, RootCertPublisher

pytestmark = pytest.mark.testbed


def wait_for(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def publisher(testbed: Any) -> Iterator[RootCertPublisher]:
    root = CAMaterial.self_signed().root_pem
    pub = RootCertPublisher(testbed.api_client(), root, watch_timeout_s=2)
    pub.start()
    yield pub
    pub.stop(timeout=3)


def root_in(core: client.CoreV1Api, namespace: str) -> str | None:
    try:
        cm = core.read_namespaced_config_map(CONFIGMAP_NAME, namespace)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise
    data: dict[str, str] = cm.data or {}
    return data.get(ROOT_KEY)


def test_published_to_new_namespaces_and_repaired(
    testbed: Any, publisher: RootCertPublisher
) -> None:
    core = client.CoreV1Api(testbed.api_client())
    names = [f"t-{uuid.uuid4().hex[:8]}" for _ in range(2)]
    try:
        for name in names:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
        for name in names:
            wait_for(f"the root in {name}", lambda n=name: root_in(core, n) == publisher.root_pem)  # type: ignore[misc]
        cm = core.read_namespaced_config_map(CONFIGMAP_NAME, names[0])
        assert cm.metadata.labels == {"istio.io/config": "true"}

        # Edited: put back.
        core.patch_namespaced_config_map(
            CONFIGMAP_NAME, names[0], {"data": {ROOT_KEY: "tampered", "extra": "x"}}
        )
        wait_for("the edit repaired", lambda: root_in(core, names[0]) == publisher.root_pem)
        assert set(core.read_namespaced_config_map(CONFIGMAP_NAME, names[0]).data) == {ROOT_KEY}

        # Deleted: re-created.
        core.delete_namespaced_config_map(CONFIGMAP_NAME, names[1])
        wait_for("the deletion repaired", lambda: root_in(core, names[1]) == publisher.root_pem)
    finally:
        for name in names:
            core.delete_namespace(name)


def test_existing_namespaces_get_it_on_start_and_system_ones_do_not(testbed: Any) -> None:
    core = client.CoreV1Api(testbed.api_client())
    name = f"t-{uuid.uuid4().hex[:8]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    root = CAMaterial.self_signed().root_pem
    pub = RootCertPublisher(testbed.api_client(), root, watch_timeout_s=2)
    try:
        pub.start()
        wait_for("the root in a namespace that existed before", lambda: root_in(core, name) == root)
        assert pub.ensure(name) is False  # already right: nothing written
        assert root_in(core, "kube-system") != root
    finally:
        pub.stop(timeout=3)
        core.delete_namespace(name)


def test_missing_permissions_are_logged_with_what_to_grant(
    testbed: Any, unique_name: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A control plane without RBAC for ConfigMaps says so, and backs off instead of spinning."""
    core = client.CoreV1Api(testbed.api_client())
    testbed.create_namespace(unique_name)
    try:
        token = core.create_namespaced_service_account_token(
            "default",
            unique_name,
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec()),
        ).status.token
        ca_file = tmp_path / "ca.pem"
        ca_file.write_bytes(testbed.ca_pem)
        config = client.Configuration()
        config.host = testbed.server
        config.ssl_ca_cert = str(ca_file)
        config.api_key = {"authorization": f"Bearer {token}"}
        pub = RootCertPublisher(client.ApiClient(config), "root", watch_timeout_s=2)
        caplog.set_level("WARNING", logger="controlplane.ca.rootcert")
        pub.start()
        wait_for(
            "the permission hint",
            lambda: any(
                "needs get/list/watch/update on configmaps" in r.getMessage()
                for r in caplog.records
            ),
        )
        time.sleep(1.5)
        pub.stop(timeout=0.1)
        # two watches, backing off 1 s then 2 s: a handful of attempts, not a spin
        assert (
            2 <= sum("root certificate watch failed" in r.getMessage() for r in caplog.records) <= 6
        )
        assert pub.repairs == 0
    finally:
        core.delete_namespace(unique_name)
