"""Mesh mTLS transport sockets: the workload certificate and the mesh root, both over SDS.

Envoy never sees a key or a certificate in xDS: every TLS context names two secrets that
the sidecar agent serves over SDS on the static cluster ``sds-grpc`` (docs/sidecar.md):
``default`` (the workload's SPIFFE certificate and key) and ``ROOTCA`` (the mesh root it
validates peers against). The config source has the same shape as the agent's own
(``sidecar.bootstrap.sds_config_source``); the roles do not import each other, so the
contract is restated here.

Identities are SPIFFE URIs ``spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>``:
a client checks that the server is one of the service accounts behind the service it
called; a server accepts any identity of its trust domain (who may call what is
authorization's job, not authentication's).
"""

from __future__ import annotations

from collections.abc import Iterable

from envoy.config.core.v3 import base_pb2, config_source_pb2, grpc_service_pb2
from envoy.extensions.transport_sockets.raw_buffer.v3 import raw_buffer_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, secret_pb2, tls_pb2
from envoy.type.matcher.v3 import string_pb2

from controlplane.translate.common import duration, packed
from meshlib.spiffe import WorkloadIdentity

SDS_CLUSTER = "sds-grpc"
WORKLOAD_SECRET = "default"
ROOT_SECRET = "ROOTCA"
TLS_SOCKET = "envoy.transport_sockets.tls"
RAW_BUFFER_SOCKET = "envoy.transport_sockets.raw_buffer"
# Istio's endpoint metadata for auto-mTLS: endpoints with a sidecar carry tlsMode=istio.
TRANSPORT_SOCKET_MATCH = "envoy.transport_socket_match"
TLS_MODE_KEY = "tlsMode"
TLS_MODE_ISTIO = "istio"
HTTP_ALPN = ("h2", "http/1.1")
# Istio's mesh ALPN tokens: a client sidecar offers them ahead of the real protocol, so a
# PERMISSIVE server can tell mesh mTLS (terminate it) from the application's own TLS
# (pass it through untouched). Offered in this order, like Istio's sidecars.
MESH_ALPN_TCP = ("istio-peer-exchange", "istio")
MESH_ALPN_HTTP11 = ("istio-http/1.1", "istio", "http/1.1")
MESH_ALPN_H2 = ("istio-h2", "istio", "h2")
MESH_ALPN_TOKENS = ("istio-peer-exchange", "istio", "istio-http/1.0", "istio-http/1.1", "istio-h2")


def spiffe_id(trust_domain: str, namespace: str, service_account: str) -> str:
    """The peer identity to verify: meshlib.spiffe's form, the one the mesh CA signs."""
    return WorkloadIdentity(namespace, service_account).spiffe_id(trust_domain)


def upstream_sni(port: int, fqdn: str, subset: str = "") -> str:
    """Istio's SNI for mesh mTLS (``outbound_.<port>_.<subset>_.<fqdn>``, so
    ``outbound_.<port>_._.<fqdn>`` without a subset): names the destination port (and
    subset)."""
    return f"outbound_.{port}_.{subset}_.{fqdn}"


def sds_config_source() -> config_source_pb2.ConfigSource:
    """Secrets come from the agent's SDS server; wait for them (no fetch timeout)."""
    return config_source_pb2.ConfigSource(
        api_config_source=config_source_pb2.ApiConfigSource(
            api_type=config_source_pb2.ApiConfigSource.GRPC,
            transport_api_version=config_source_pb2.ApiVersion.V3,
            set_node_on_first_message_only=True,
            grpc_services=[
                grpc_service_pb2.GrpcService(
                    envoy_grpc=grpc_service_pb2.GrpcService.EnvoyGrpc(cluster_name=SDS_CLUSTER)
                )
            ],
        ),
        initial_fetch_timeout=duration(0),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def _secret(name: str) -> secret_pb2.SdsSecretConfig:
    return secret_pb2.SdsSecretConfig(name=name, sds_config=sds_config_source())


def _uri_san(matcher: string_pb2.StringMatcher) -> common_pb2.SubjectAltNameMatcher:
    return common_pb2.SubjectAltNameMatcher(
        san_type=common_pb2.SubjectAltNameMatcher.URI, matcher=matcher
    )


def _common(
    sans: Iterable[common_pb2.SubjectAltNameMatcher], alpn: Iterable[str] = ()
) -> tls_pb2.CommonTlsContext:
    return tls_pb2.CommonTlsContext(
        tls_certificate_sds_secret_configs=[_secret(WORKLOAD_SECRET)],
        combined_validation_context=tls_pb2.CommonTlsContext.CombinedCertificateValidationContext(
            default_validation_context=common_pb2.CertificateValidationContext(
                match_typed_subject_alt_names=list(sans)
            ),
            validation_context_sds_secret_config=_secret(ROOT_SECRET),
        ),
        alpn_protocols=list(alpn),
    )


# Every client context is this one plus an SNI and SAN matchers: copying a prebuilt message
# is several times cheaper than building the SDS sources again for each of 1,000 clusters.
_UPSTREAM_TEMPLATE = tls_pb2.UpstreamTlsContext(common_tls_context=_common(()))


def upstream_mtls(
    sni: str, peer_ids: Iterable[str], alpn: Iterable[str] = MESH_ALPN_TCP
) -> base_pb2.TransportSocket:
    """Client side: present the workload certificate, accept only ``peer_ids``.

    ``alpn`` must end with the protocol the cluster really speaks (``http/1.1`` or ``h2``,
    nothing for TCP): the server's HTTP codec follows the negotiated protocol, and offering
    ``h2`` from an HTTP/1.1 cluster gets 503s.
    """
    context = tls_pb2.UpstreamTlsContext()
    context.CopyFrom(_UPSTREAM_TEMPLATE)
    context.sni = sni
    context.common_tls_context.alpn_protocols.extend(alpn)
    sans = context.common_tls_context.combined_validation_context.default_validation_context
    for peer in sorted(set(peer_ids)):
        san = sans.match_typed_subject_alt_names.add()
        san.san_type = common_pb2.SubjectAltNameMatcher.URI
        san.matcher.exact = peer
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))


def downstream_mtls(trust_domain: str, http: bool) -> base_pb2.TransportSocket:
    """Server side: require a client certificate of the mesh (any identity of the trust domain)."""
    context = tls_pb2.DownstreamTlsContext(
        require_client_certificate={"value": True},
        common_tls_context=_common(
            [_uri_san(string_pb2.StringMatcher(prefix=f"spiffe://{trust_domain}/"))],
            HTTP_ALPN if http else (),
        ),
    )
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))


def plaintext() -> base_pb2.TransportSocket:
    return base_pb2.TransportSocket(
        name=RAW_BUFFER_SOCKET, typed_config=packed(raw_buffer_pb2.RawBuffer())
    )
