"""``remora discovery`` with its CA on, as a real process against the test bed.

``--ca-port`` (plaintext) and ``--secure-xds-port`` (TLS, verified with the published
``istio-ca-root-cert``) both sign for a real token; ADS answers on the TLS port too; the CA's
metrics are on the control plane's /metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import grpc
import httpx
import pytest
from cryptography import x509
from envoy.config.core.v3 import base_pb2
from envoy.service.discovery.v3 import ads_pb2_grpc, discovery_pb2
from kubernetes import client

from controlplane.ca.discovery import read_mesh_trust_domain
from controlplane.ca.rootcert import CONFIGMAP_NAME, ROOT_KEY
from harness.polling import wait_for
from meshlib.ports import free_port
from sidecar.ca_client import GrpcCAProvider
from sidecar.identity import CertificateManager

pytestmark = pytest.mark.testbed

CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"


@pytest.fixture
def namespace(testbed: Any, unique_name: str) -> Iterator[str]:
    testbed.create_namespace(unique_name)
    yield unique_name
    client.CoreV1Api(testbed.api_client()).delete_namespace(unique_name)


async def ads_over_tls(port: int, root: bytes, namespace: str) -> Any:
    creds = grpc.ssl_channel_credentials(root_certificates=root)
    options = [("grpc.ssl_target_name_override", f"istiod.{namespace}.svc")]
    async with grpc.aio.secure_channel(f"127.0.0.1:{port}", creds, options) as channel:
        stub = ads_pb2_grpc.AggregatedDiscoveryServiceStub(channel)
        node = base_pb2.Node(id=f"sidecar~10.9.0.1~p.{namespace}~{namespace}.svc.cluster.local")
        request = discovery_pb2.DiscoveryRequest(node=node, type_url=CLUSTER)
        call = stub.StreamAggregatedResources(iter([request]), timeout=10)
        async for response in call:
            return response
    return None


@contextlib.contextmanager
def running_discovery(testbed: Any, namespace: str, *extra: str) -> Iterator[tuple[str, int, int]]:
    """``remora discovery`` with its CA on both ports; (monitoring URL, TLS port, plain port)
    once ready. Stopped on exit; it must exit cleanly."""
    monitoring, secure, plain = free_port(), free_port(), free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "remora", "discovery", "--kubeconfig", str(testbed.kubeconfig),
         "--mesh-namespace", namespace, "--listen-address", "127.0.0.1",
         "--xds-port", str(free_port()), "--monitoring-port", str(monitoring),
         "--secure-xds-port", str(secure), "--ca-port", str(plain), *extra],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{monitoring}"
    try:
        wait_for(
            lambda: process.poll() is None and httpx.get(f"{url}/ready").status_code == 200,
            timeout=30,
            what="discovery ready",
        )
        yield url, secure, plain
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=15)
    assert process.returncode == 0, stderr[-2000:]


def token_file(testbed: Any, namespace: str, directory: Path) -> Path:
    token = (
        client.CoreV1Api(testbed.api_client())
        .create_namespaced_service_account_token(
            "default",
            namespace,
            client.AuthenticationV1TokenRequest(
                spec=client.V1TokenRequestSpec(audiences=["istio-ca"], expiration_seconds=600)
            ),
        )
        .status.token
    )
    (directory / "istio-token").write_text(token)
    return directory / "istio-token"


def test_discovery_serves_the_ca(testbed: Any, namespace: str, tmp_path: Path) -> None:
    core = client.CoreV1Api(testbed.api_client())
    token = token_file(testbed, namespace, tmp_path)
    with running_discovery(testbed, namespace, "--workload-cert-ttl", "2h") as (url, secure, plain):
        # The self-signed root was kept in the mesh namespace and published to it.
        assert core.read_namespaced_secret("istio-ca-secret", namespace).data["root-cert.pem"]
        wait_for(
            lambda: bool(core.list_namespaced_config_map(namespace, field_selector=f"metadata.name={CONFIGMAP_NAME}").items),
            timeout=10,
            what="istio-ca-root-cert",
        )  # fmt: skip
        root = core.read_namespaced_config_map(CONFIGMAP_NAME, namespace).data[ROOT_KEY]
        (tmp_path / "root-cert.pem").write_text(root)
        spiffe = f"spiffe://cluster.local/ns/{namespace}/sa/default"

        async def body() -> None:
            for provider in (
                GrpcCAProvider(f"127.0.0.1:{plain}", token_path=token, root_cert_path=None),
                GrpcCAProvider(
                    f"127.0.0.1:{secure}",
                    token_path=token,
                    root_cert_path=tmp_path / "root-cert.pem",
                    server_name=f"istiod.{namespace}.svc",
                    ttl=0,  # ask for the CA's default
                ),
            ):
                cert = await CertificateManager(provider, spiffe).fetch_once()
                await provider.close()
                assert cert.root_pem.decode() == root
            lifetime = cert.not_after - cert.not_before
            assert (
                lifetime.total_seconds() == 2 * 3600 + 60
            )  # --workload-cert-ttl, back-dated 1 min
            response = await ads_over_tls(secure, root.encode(), namespace)
            assert response is not None and response.type_url == CLUSTER

        asyncio.run(body())
        metrics = httpx.get(f"{url}/metrics").text
        assert "remora_ca_certificates_issued_total 2.0" in metrics


def test_without_the_flag_the_mesh_configmap_names_the_trust_domain(
    testbed: Any, namespace: str, tmp_path: Path
) -> None:
    """As istiod: meshConfig.trustDomain decides; the CA signs in it and the listeners check it."""
    core = client.CoreV1Api(testbed.api_client())
    core.create_namespaced_config_map(
        namespace,
        {"metadata": {"name": "istio"}, "data": {"mesh": "trustDomain: corp.example\n"}},
    )
    token = token_file(testbed, namespace, tmp_path)
    with running_discovery(testbed, namespace) as (_url, _secure, plain):
        spiffe = f"spiffe://corp.example/ns/{namespace}/sa/default"

        async def body() -> None:
            provider = GrpcCAProvider(f"127.0.0.1:{plain}", token_path=token, root_cert_path=None)
            try:
                cert = await CertificateManager(provider, spiffe).fetch_once()
            finally:
                await provider.close()
            leaf = x509.load_pem_x509_certificate(cert.chain_pem)
            san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            assert san.get_values_for_type(x509.UniformResourceIdentifier) == [spiffe]

        asyncio.run(body())


def test_mesh_trust_domain_read_at_start(testbed: Any, namespace: str) -> None:
    api = testbed.api_client()
    assert read_mesh_trust_domain(api, namespace) == "cluster.local"  # no ConfigMap
    core = client.CoreV1Api(api)
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "istio"}, "data": {"mesh": "trustDomain: [oops\n"}}
    )
    with pytest.raises(click.ClickException, match="--trust-domain") as caught:
        read_mesh_trust_domain(api, namespace)
    assert "istio" in caught.value.message and "not YAML" in caught.value.message
    core.patch_namespaced_config_map(
        "istio", namespace, {"data": {"mesh": "trustDomain: td.example\n"}}
    )
    assert read_mesh_trust_domain(api, namespace) == "td.example"
