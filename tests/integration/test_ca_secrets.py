"""Where the CA comes from in a cluster: the user's ``cacerts``, else a kept self-signed root."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from controlplane.ca.authority import CAMaterial
from controlplane.ca.secrets import SELF_SIGNED_SECRET, load_or_create

pytestmark = pytest.mark.testbed


@pytest.fixture
def namespace(testbed: Any, unique_name: str) -> Iterator[str]:
    testbed.create_namespace(unique_name)
    yield unique_name
    client.CoreV1Api(testbed.api_client()).delete_namespace(unique_name)


def test_self_signed_root_is_created_once_and_kept(testbed: Any, namespace: str) -> None:
    first, source = load_or_create(testbed.api_client(), namespace, "example.org")
    assert source == f"{namespace}/{SELF_SIGNED_SECRET}"
    again, _ = load_or_create(testbed.api_client(), namespace, "example.org")
    assert again.root == first.root  # a restart keeps the root: issued certificates stay valid
    secret = client.CoreV1Api(testbed.api_client()).read_namespaced_secret(
        SELF_SIGNED_SECRET, namespace
    )
    assert secret.type == "istio.io/ca-root"
    assert set(secret.data) == {"ca-cert.pem", "ca-key.pem", "root-cert.pem", "cert-chain.pem"}


def test_users_cacerts_wins(testbed: Any, namespace: str) -> None:
    own = CAMaterial.self_signed("corp.example")
    data = {k: base64.b64encode(v).decode() for k, v in own.to_files().items()}
    core = client.CoreV1Api(testbed.api_client())
    core.create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="cacerts"), data=data)
    )
    material, source = load_or_create(testbed.api_client(), namespace)
    assert source == f"{namespace}/cacerts"
    assert material.root == own.root
    with pytest.raises(client.ApiException) as info:
        core.read_namespaced_secret(SELF_SIGNED_SECRET, namespace)
    assert info.value.status == 404


def test_broken_cacerts_is_explained(testbed: Any, namespace: str) -> None:
    data = {"ca-cert.pem": base64.b64encode(b"junk").decode()}
    client.CoreV1Api(testbed.api_client()).create_namespaced_secret(
        namespace, client.V1Secret(metadata=client.V1ObjectMeta(name="cacerts"), data=data)
    )
    with pytest.raises(ValueError, match=rf"Secret {namespace}/cacerts has no ca-key.pem"):
        load_or_create(testbed.api_client(), namespace)
