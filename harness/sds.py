"""Workload certificates for the harness's Envoys, over SDS like the sidecar agent's.

Every TLS context the control plane generates names the secrets ``default`` (the
workload's SPIFFE certificate) and ``ROOTCA`` (the mesh root) on the static cluster
``sds-grpc`` (see :mod:`controlplane.translate.tls`); a sidecar's agent serves them over a
unix socket. The harness's Envoys get the same from :class:`HarnessSds`: one mesh CA per
test process and a leaf per identity, ``spiffe://cluster.local/ns/<NAMESPACE>/sa/<SERVICE_ACCOUNT>``
from the node metadata. Secrets are sent once per stream and never rotated; for rotation,
the sidecar's own SDS server is the one to test.
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2
from envoy.service.discovery.v3 import discovery_pb2
from envoy.service.secret.v3 import sds_pb2_grpc
from google.protobuf import any_pb2, json_format

from controlplane.translate.tls import ROOT_SECRET, SDS_CLUSTER, WORKLOAD_SECRET, spiffe_id
from meshlib.certs import KeyPair, issue, new_ca

SECRET_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def _secret(name: str, root: KeyPair, leaf: KeyPair) -> secret_pb2.Secret:
    if name == ROOT_SECRET:
        return secret_pb2.Secret(
            name=name,
            validation_context=common_pb2.CertificateValidationContext(
                trusted_ca={"inline_bytes": root.cert_pem}
            ),
        )
    return secret_pb2.Secret(
        name=name,
        tls_certificate=common_pb2.TlsCertificate(
            certificate_chain={"inline_bytes": leaf.cert_pem},
            private_key={"inline_bytes": leaf.key_pem},
        ),
    )


class _Servicer(sds_pb2_grpc.SecretDiscoveryServiceServicer):
    def __init__(self, owner: HarnessSds) -> None:
        self._owner = owner

    async def StreamSecrets(
        self, request_iterator: AsyncIterator[discovery_pb2.DiscoveryRequest], context: Any
    ) -> AsyncIterator[discovery_pb2.DiscoveryResponse]:
        node: dict[str, Any] = {}
        sent: list[str] | None = None
        async for request in request_iterator:
            if request.HasField("node"):
                node = json_format.MessageToDict(request.node.metadata)
            names = sorted(n for n in request.resource_names if n in (WORKLOAD_SECRET, ROOT_SECRET))
            if names == sent:
                continue  # an ACK (or a NACK) of what we sent: nothing new to say
            sent = names
            leaf = self._owner.leaf(
                str(node.get("NAMESPACE", "default")), str(node.get("SERVICE_ACCOUNT", "default"))
            )
            resources = []
            for name in names:
                packed = any_pb2.Any()
                packed.Pack(_secret(name, self._owner.root, leaf))
                resources.append(packed)
            yield discovery_pb2.DiscoveryResponse(
                version_info="1", resources=resources, type_url=SECRET_TYPE, nonce=uuid.uuid4().hex
            )


class HarnessSds:
    """A mesh CA and an SDS server on a unix socket, for every harness Envoy of this process.

    The server is asynchronous on its own event loop thread: each Envoy holds a stream per
    secret open for its whole life, which would pin a thread each in a synchronous server
    (fifty Envoys in the scale benchmark).
    """

    def __init__(self, trust_domain: str = "cluster.local") -> None:
        self.trust_domain = trust_domain
        self.root = new_ca("remora-test-mesh-root")
        self._leaves: dict[tuple[str, str], KeyPair] = {}
        self._lock = threading.Lock()
        self._dir = tempfile.TemporaryDirectory(prefix="remora-sds-")
        self.socket_path = Path(self._dir.name) / "sds.sock"
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="harness-sds", daemon=True).start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=30)

    async def _start(self) -> None:
        self._server = grpc.aio.server()
        sds_pb2_grpc.add_SecretDiscoveryServiceServicer_to_server(_Servicer(self), self._server)
        self._server.add_insecure_port(f"unix:{self.socket_path}")
        await self._server.start()

    def leaf(self, namespace: str, service_account: str) -> KeyPair:
        with self._lock:
            key = (namespace, service_account)
            if key not in self._leaves:
                self._leaves[key] = issue(
                    self.root,
                    "",
                    uris=(spiffe_id(self.trust_domain, namespace, service_account),),
                    server=True,
                    client=True,
                )
            return self._leaves[key]

    def cluster(self) -> dict[str, Any]:
        """A static ``sds-grpc`` cluster to this server (HTTP/2 over the unix socket), for a
        test that writes its Envoy's ``static_resources`` itself; the sidecar bootstrap of a
        :class:`harness.envoy.EnvoyProcess` has its own, pointing at the same socket."""
        return {
            "name": SDS_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}},
                }
            },
            "load_assignment": {
                "cluster_name": SDS_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {"endpoint": {"address": {"pipe": {"path": str(self.socket_path)}}}}
                        ]
                    }
                ],
            },
        }


_shared: list[HarnessSds] = []
_shared_lock = threading.Lock()


def shared_sds() -> HarnessSds:
    """The process-wide harness SDS server, started on first use (lives until exit)."""
    with _shared_lock:
        if not _shared:
            _shared.append(HarnessSds())
        return _shared[0]
