"""The gRPC edge of the mesh CA: Istio's ``IstioCertificateService/CreateCertificate``.

A request is: authenticate the bearer token (who), approve the CSR for that identity only
(what), sign with the requested lifetime capped by the maximum (how long). Every refusal is
a gRPC status with a message saying what was wrong and is counted by reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram

from controlplane.ca.authn import Authenticator, bearer_token
from controlplane.ca.authority import (
    DEFAULT_MAX_WORKLOAD_TTL,
    DEFAULT_TRUST_DOMAIN,
    DEFAULT_WORKLOAD_TTL,
    CAMaterial,
    sign_workload,
)
from controlplane.ca.csr import Refusal, approve_csr
from meshlib import ca_api

log = logging.getLogger(__name__)

SIGN_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1)


class CAMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.issued = Counter(
            "remora_ca_certificates_issued_total", "Workload certificates signed.", registry=r
        )
        self.refused = Counter(
            "remora_ca_requests_refused_total",
            "Certificate requests refused, by reason (token_expired, wrong_audience, "
            "identity_mismatch, ...).",
            ["reason"],
            registry=r,
        )
        self.request_seconds = Histogram(
            "remora_ca_request_seconds",
            "CreateCertificate from arrival to answer, token review included.",
            buckets=SIGN_BUCKETS,
            registry=r,
        )
        self.signing_seconds = Histogram(
            "remora_ca_signing_seconds",
            "Checking the CSR and signing the certificate (no token review).",
            buckets=SIGN_BUCKETS,
            registry=r,
        )


@dataclass(frozen=True)
class CAOptions:
    trust_domain: str = DEFAULT_TRUST_DOMAIN
    default_ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL
    max_ttl: dt.timedelta = DEFAULT_MAX_WORKLOAD_TTL


def requested_ttl(validity_seconds: int, options: CAOptions) -> dt.timedelta:
    """The lifetime to sign: the request's (if > 0) or the default, capped at the maximum.

    The request's seconds are capped *before* they become a timedelta: the wire field is an
    int64, and anything above ~8.6e13 s would overflow timedelta (an UNKNOWN status to the
    caller instead of a certificate with the maximum lifetime).
    """
    if validity_seconds <= 0:
        return min(options.default_ttl, options.max_ttl)
    return dt.timedelta(seconds=min(validity_seconds, options.max_ttl.total_seconds()))


class CertificateService:
    """Handles CreateCertificate; add it to a ``grpc.aio`` server with :meth:`add_to`."""

    def __init__(
        self,
        material: CAMaterial,
        authenticator: Authenticator,
        *,
        options: CAOptions | None = None,
        metrics: CAMetrics | None = None,
        clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC),
    ) -> None:
        self.material = material
        self.authenticator = authenticator
        self.options = options or CAOptions()
        self.metrics = metrics or CAMetrics()
        self._clock = clock

    def add_to(self, server: grpc.aio.Server) -> None:
        handler = grpc.method_handlers_generic_handler(
            ca_api.SERVICE_NAME,
            {
                ca_api.CREATE_CERTIFICATE: grpc.unary_unary_rpc_method_handler(
                    self.create_certificate,
                    request_deserializer=ca_api.parse_request,
                    response_serializer=ca_api.serialize,
                )
            },
        )
        server.add_generic_rpc_handlers((handler,))

    async def issue(self, token: str, csr_pem: str, validity_seconds: int) -> list[str]:
        """The certificate chain for this token's identity; raises :class:`Refusal`."""
        caller = await self.authenticator.authenticate(token)
        started = time.perf_counter()
        approved = approve_csr(csr_pem, caller, self.options.trust_domain)
        chain = sign_workload(
            self.material,
            approved.public_key,
            approved.identity,
            trust_domain=self.options.trust_domain,
            ttl=requested_ttl(validity_seconds, self.options),
            now=self._clock(),
        )
        self.metrics.signing_seconds.observe(time.perf_counter() - started)
        return chain

    async def create_certificate(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        peer = context.peer()
        try:
            token = bearer_token(context.invocation_metadata() or ())
            chain = await self.issue(token, request.csr, request.validity_duration)
        except Refusal as refusal:
            self.metrics.refused.labels(refusal.reason).inc()
            log.warning(
                "certificate request refused",
                extra={"peer": peer, "reason": refusal.reason, "error": refusal.message},
            )
            await context.abort(getattr(grpc.StatusCode, refusal.code), refusal.message)
            raise AssertionError("unreachable: abort raises") from None
        finally:
            self.metrics.request_seconds.observe(time.perf_counter() - started)
        self.metrics.issued.inc()
        log.info("workload certificate issued", extra={"peer": peer})
        return ca_api.IstioCertificateResponse(cert_chain=chain)
