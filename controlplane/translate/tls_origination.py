"""TLS origination: a DestinationRule's ``tls`` in ``SIMPLE`` or ``MUTUAL`` mode.

The proxy opens TLS itself to a server outside mesh mTLS, verifying the server against
``caCertificates`` (a file in the proxy's container; without one, the system's trust
bundle, as Istio verifies by default) and the ``subjectAltNames``, and in ``MUTUAL`` mode
presenting ``clientCertificate``/``privateKey``. Envoy reads the files when it takes the
cluster, so a path missing in the proxy's container makes Envoy refuse that cluster update
(Istio's agent serves such files over SDS instead, and only that cluster waits).

So Remora honours origination that names no file but the system bundle the sidecar image
installs: ``SIMPLE`` verified against that bundle (or not at all, ``insecureSkipVerify``).
Settings naming other files (``caCertificates``, ``clientCertificate``, ``privateKey``, so
every ``MUTUAL``) or a ``credentialName`` (a Kubernetes Secret over SDS) are not translated
until SDS serves them: :func:`translatable` says so, the caller keeps such a cluster as it
was, and :mod:`controlplane.networking.unsupported` lists the field. :func:`originate_tls`
itself can write any of them.
"""

from __future__ import annotations

import ipaddress

from envoy.config.cluster.v3.cluster_pb2 import Cluster
from envoy.config.core.v3 import base_pb2
from envoy.extensions.transport_sockets.tls.v3 import common_pb2, tls_pb2

from controlplane.model import Protocol
from controlplane.networking.model import ClientTLSSettings, TLSMode
from controlplane.networking.unsupported import SYSTEM_TRUST_BUNDLE, tls_not_honoured
from controlplane.translate.common import packed
from controlplane.translate.tls import TLS_SOCKET
from controlplane.translate.traffic_policy import http_options, set_http_options

_ORIGINATING = (TLSMode.SIMPLE, TLSMode.MUTUAL)


def translatable(settings: ClientTLSSettings | None) -> bool:
    """Whether ``settings`` ask for TLS origination that Remora translates: no
    ``credentialName`` and no file the proxy's container may lack (see the module
    docstring)."""
    return settings is not None and settings.mode in _ORIGINATING and not tls_not_honoured(settings)


def _san_type(name: str) -> int:
    if "://" in name:
        return int(common_pb2.SubjectAltNameMatcher.URI)
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return int(common_pb2.SubjectAltNameMatcher.DNS)
    return int(common_pb2.SubjectAltNameMatcher.IP_ADDRESS)


def _validation(settings: ClientTLSSettings) -> common_pb2.CertificateValidationContext:
    validation = common_pb2.CertificateValidationContext()
    validation.trusted_ca.filename = settings.ca_certificates or SYSTEM_TRUST_BUNDLE
    for name in settings.subject_alt_names:
        san = validation.match_typed_subject_alt_names.add()
        san.san_type = _san_type(name)
        san.matcher.exact = name
    return validation


def originate_tls(cluster: Cluster, settings: ClientTLSSettings, protocol: Protocol) -> None:
    """Make ``cluster`` (of a port speaking ``protocol``) originate TLS per ``settings``
    (which :func:`translatable` accepts).

    Without an ``sni``, an HTTP cluster sends each request's host as SNI, and without SANs
    either verifies the certificate against that host (Istio's auto SNI and auto SAN
    validation).
    """
    cluster.ClearField("transport_socket_matches")
    cluster.transport_socket.CopyFrom(_socket(settings, protocol.is_http2))
    if not protocol.is_http or settings.sni:
        return
    options = http_options(cluster, protocol)
    upstream = options.upstream_http_protocol_options
    upstream.auto_sni = True
    if not settings.subject_alt_names and not settings.insecure_skip_verify:
        upstream.auto_san_validation = True
    set_http_options(cluster, options)


def _socket(settings: ClientTLSSettings, http2: bool) -> base_pb2.TransportSocket:
    context = tls_pb2.UpstreamTlsContext(sni=settings.sni)
    common = context.common_tls_context
    if not settings.insecure_skip_verify:
        common.validation_context.CopyFrom(_validation(settings))
    if settings.mode is TLSMode.MUTUAL:
        certificate = common.tls_certificates.add()
        certificate.certificate_chain.filename = settings.client_certificate
        certificate.private_key.filename = settings.private_key
    if http2:
        common.alpn_protocols.append("h2")
    return base_pb2.TransportSocket(name=TLS_SOCKET, typed_config=packed(context))
