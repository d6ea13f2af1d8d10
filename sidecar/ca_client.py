"""The agent's client of the mesh CA: a :class:`~sidecar.identity.CertificateProvider` over gRPC.

It speaks Istio's ``IstioCertificateService/CreateCertificate`` (so it works against Remora's
control plane and, in shape, istiod): the CSR goes out with the pod's projected
service-account token as ``authorization: Bearer <token>``. The token file is read again on
every call because the kubelet rotates it. The channel is TLS verified against the mesh root
(the ``istio-ca-root-cert`` ConfigMap mounted at ``/var/run/secrets/istio/root-cert.pem``,
read again before every request so a root rotation is followed), or plaintext for local runs.
"""

from __future__ import annotations

import logging
from pathlib import Path

import grpc

from meshlib import ca_api
from sidecar.errors import CARefused, CertificateError
from sidecar.identity import DEFAULT_WORKLOAD_TTL

log = logging.getLogger(__name__)

DEFAULT_TOKEN_PATH = Path("/var/run/secrets/tokens/istio-token")
DEFAULT_ROOT_CERT_PATH = Path("/var/run/secrets/istio/root-cert.pem")


def split_chain(chain: list[str]) -> tuple[bytes, bytes]:
    """Istio's ``cert_chain`` (leaf first, root last) → (leaf + intermediates, root)."""
    if not chain:
        raise CertificateError("the mesh CA returned an empty certificate chain")
    if len(chain) == 1:
        raise CertificateError("the mesh CA returned no root after the workload certificate")
    return "".join(_ends_with_newline(c) for c in chain[:-1]).encode(), _ends_with_newline(
        chain[-1]
    ).encode()


def _ends_with_newline(pem: str) -> str:
    return pem if pem.endswith("\n") else pem + "\n"


class GrpcCAProvider:
    """Asks the mesh CA at ``address`` (``host:port``) to sign the agent's CSRs."""

    def __init__(
        self,
        address: str,
        *,
        token_path: Path = DEFAULT_TOKEN_PATH,
        root_cert_path: Path | None = DEFAULT_ROOT_CERT_PATH,
        server_name: str | None = None,
        ttl: float = DEFAULT_WORKLOAD_TTL.total_seconds(),
        timeout_s: float = 10.0,
    ) -> None:
        """``root_cert_path=None`` means plaintext (local runs only).

        ``server_name`` overrides the name checked in the CA's certificate (e.g.
        ``istiod.istio-system.svc`` when ``address`` is an IP).
        """
        self.address = address
        self.token_path = token_path
        self.root_cert_path = root_cert_path
        self._server_name = server_name
        self._ttl = int(ttl)
        self._timeout = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._channel_root: bytes | None = None  # the root the channel verifies the CA with

    def _read_root(self) -> bytes:
        assert self.root_cert_path is not None
        try:
            return self.root_cert_path.read_bytes()
        except OSError as exc:
            raise CertificateError(
                f"cannot read the mesh root {self.root_cert_path} to verify the CA: {exc} "
                "(is the istio-ca-root-cert ConfigMap mounted?)"
            ) from exc

    async def _open(self) -> grpc.aio.Channel:
        """The channel to the CA, rebuilt when the mesh root file no longer holds the root
        it was built with.

        The root is rotated by updating the istio-ca-root-cert ConfigMap; the kubelet swaps
        the mounted file and the CA's serving certificate moves to the new root. A channel
        that kept the old root would fail every renewal's TLS handshake until the workload
        certificate expired. The file is small and renewals are rare, so it is simply read
        again before every request.
        """
        if self.root_cert_path is None:
            if self._channel is None:
                self._channel = grpc.aio.insecure_channel(self.address)
            return self._channel
        root = self._read_root()
        if self._channel is not None and root != self._channel_root:
            log.info(
                "the mesh root changed; reconnecting to the CA with the new one",
                extra={"root_cert": str(self.root_cert_path), "ca": self.address},
            )
            await self._drop_channel()
        if self._channel is None:
            options = (
                [("grpc.ssl_target_name_override", self._server_name)] if self._server_name else []
            )
            self._channel = grpc.aio.secure_channel(
                self.address, grpc.ssl_channel_credentials(root_certificates=root), options
            )
            self._channel_root = root
        return self._channel

    async def _drop_channel(self) -> None:
        channel, self._channel, self._channel_root = self._channel, None, None
        if channel is not None:
            await channel.close()

    def _token(self) -> str:
        try:
            token = self.token_path.read_text().strip()
        except OSError as exc:
            raise CertificateError(
                f"cannot read the service-account token {self.token_path}: {exc} (the injected "
                "pod mounts a projected token with audience istio-ca there)"
            ) from exc
        if not token:
            raise CertificateError(f"the service-account token file {self.token_path} is empty")
        return token

    async def sign(self, csr_pem: bytes) -> tuple[bytes, bytes]:
        metadata = (("authorization", f"Bearer {self._token()}"),)
        call = (await self._open()).unary_unary(
            ca_api.CREATE_CERTIFICATE_PATH,
            request_serializer=ca_api.serialize,
            response_deserializer=ca_api.parse_response,
        )
        request = ca_api.IstioCertificateRequest(csr=csr_pem.decode(), validity_duration=self._ttl)
        try:
            response = await call(request, metadata=metadata, timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                # Unreachable or a failed TLS handshake: start the next attempt on a fresh
                # channel (and root) instead of one waiting out its reconnect backoff.
                await self._drop_channel()
            raise CARefused(self.address, exc.code(), exc.details() or "") from exc
        return split_chain(list(response.cert_chain))

    async def close(self) -> None:
        await self._drop_channel()
