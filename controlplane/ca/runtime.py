"""The running mesh CA: material, the gRPC server(s) and root publication, started together.

This is the one object ``remora discovery`` needs to hold (see ``docs/ca.md`` for the
wiring): :meth:`MeshCA.start` loads the CA, serves ``CreateCertificate`` on its own port
(TLS with a serving certificate from the mesh CA itself, like istiod's 15012, and/or
plaintext for local runs), and starts the ``istio-ca-root-cert`` publisher when there is a cluster.
Other gRPC services (ADS) can share the TLS port through ``extra_services``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from kubernetes import client

from controlplane.ca.authn import DEFAULT_AUDIENCE, Authenticator, TokenReviewAuthenticator
from controlplane.ca.authority import CA_CERT, CA_KEY, CAMaterial, issue_serving
from controlplane.ca.rootcert import RootCertPublisher
from controlplane.ca.secrets import load_or_create
from controlplane.ca.service import CAMetrics, CAOptions, CertificateService

log = logging.getLogger(__name__)

DEFAULT_SECURE_PORT = 15012


def serving_names(namespace: str, domain_suffix: str, revision: str = "") -> tuple[str, ...]:
    """The DNS names sidecars use for the control plane (``CA_ADDR`` and the xDS address)."""
    service = f"istiod-{revision}" if revision else "istiod"
    names = [f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.{domain_suffix}"]
    if revision:
        names.append(f"istiod.{namespace}.svc")  # Istio's default-revision alias
    return (*names, "localhost")


@dataclass
class MeshCAConfig:
    secure_address: str | None = f"0.0.0.0:{DEFAULT_SECURE_PORT}"  # TLS, serving cert from the CA
    plain_address: str | None = None  # plaintext, for local runs
    ca_dir: Path | None = None  # Istio cacerts files; else the cluster's Secrets
    namespace: str = "istio-system"  # where cacerts / istio-ca-secret live
    options: CAOptions = field(default_factory=CAOptions)
    audiences: Sequence[str] = (DEFAULT_AUDIENCE,)
    serving_dns_names: tuple[str, ...] = ()  # default: serving_names(namespace, domain_suffix)
    domain_suffix: str = "cluster.local"
    publish_root: bool = True


async def _bind(server: grpc.aio.Server, address: str, add: Callable[[str], int]) -> int:
    try:
        port = add(address)
    except RuntimeError:  # grpc raises when it cannot bind
        port = 0
    if port == 0:
        await server.stop(None)  # an unstarted aio server still needs stopping
        raise OSError(f"cannot listen for the CA on {address}: is the port in use?")
    return port


def has_ca_files(directory: Path) -> bool:
    """Whether ``directory`` holds any CA file (a partial set is then an error, not absent)."""
    return any((directory / name).exists() for name in (CA_CERT, CA_KEY))


class MeshCA:
    """The CA of a running control plane; ``await start()``, later ``await stop()``."""

    def __init__(
        self,
        config: MeshCAConfig,
        api: client.ApiClient | None,
        *,
        authenticator: Authenticator | None = None,
        metrics: CAMetrics | None = None,
    ) -> None:
        if api is None and authenticator is None:
            raise ValueError("the CA needs a cluster (to review tokens) or an authenticator")
        self.config = config
        self._api = api
        self._authenticator = authenticator
        self.metrics = metrics or CAMetrics()
        self.material: CAMaterial | None = None
        self.source = ""
        self.secure_port = 0
        self.plain_port = 0
        self._server: grpc.aio.Server | None = None
        self._publisher: RootCertPublisher | None = None

    def load(self) -> CAMaterial:
        """The CA material: ``ca_dir``, else the cluster's ``cacerts``/``istio-ca-secret``.

        An empty ``ca_dir`` counts as absent: the chart mounts the optional ``cacerts``
        Secret there, and without it istiod (and we) keep a self-signed root in a Secret.
        """
        if self.config.ca_dir is not None and has_ca_files(self.config.ca_dir):
            self.material, self.source = (
                CAMaterial.from_directory(self.config.ca_dir),
                str(self.config.ca_dir),
            )
        elif self._api is not None:
            self.material, self.source = load_or_create(
                self._api, self.config.namespace, self.config.options.trust_domain
            )
        else:
            # Local runs without a cluster: a root that lives as long as the process.
            self.material = CAMaterial.self_signed(self.config.options.trust_domain)
            self.source = "self-signed (in memory)"
        return self.material

    async def start(self, extra_services: Callable[[grpc.aio.Server], None] | None = None) -> None:
        material = self.material or self.load()
        authenticator = self._authenticator or TokenReviewAuthenticator(
            self._api, self.config.audiences
        )
        service = CertificateService(
            material, authenticator, options=self.config.options, metrics=self.metrics
        )
        if not (self.config.secure_address or self.config.plain_address):
            raise ValueError("the CA needs a secure or a plain address to listen on")
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        service.add_to(server)
        if extra_services is not None:
            extra_services(server)
        if self.config.secure_address:
            names = self.config.serving_dns_names or serving_names(
                self.config.namespace, self.config.domain_suffix
            )
            pair, _ = issue_serving(material, names, ttl=dt.timedelta(days=365))
            creds = grpc.ssl_server_credentials([(pair.key_pem, pair.cert_pem)])
            self.secure_port = await _bind(
                server, self.config.secure_address, lambda a: server.add_secure_port(a, creds)
            )
        if self.config.plain_address:
            self.plain_port = await _bind(
                server, self.config.plain_address, server.add_insecure_port
            )
        await server.start()
        self._server = server
        if self.config.publish_root and self._api is not None:
            self._publisher = RootCertPublisher(self._api, material.root_pem)
            self._publisher.start()
        log.info(
            "mesh CA serving",
            extra={
                "secure_port": self.secure_port or None,
                "plain_port": self.plain_port or None,
                "ca_source": self.source,
                "trust_domain": self.config.options.trust_domain,
            },
        )

    async def stop(self, grace: float = 1.0) -> None:
        if self._publisher is not None:
            self._publisher.stop(timeout=0.1)
        if self._server is not None:
            await self._server.stop(grace)
