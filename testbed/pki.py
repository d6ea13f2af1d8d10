"""Every key and certificate a loopback Kubernetes control plane needs, written to one directory.

Mirrors what envtest generates: one cluster CA that signs the apiserver's serving certificate
and the client certificates of the admin, the controller-manager and the scheduler (identity by
CN = user and O = groups, the apiserver's x509 authenticator), plus a service-account signing key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from meshlib import certs

# user -> groups; the bootstrap RBAC policy already binds these identities.
CLIENT_IDENTITIES: dict[str, tuple[str, ...]] = {
    "admin": ("system:masters",),
    "system:kube-controller-manager": (),
    "system:kube-scheduler": (),
}


@dataclass(frozen=True)
class Pki:
    directory: Path
    ca: certs.KeyPair

    @property
    def ca_file(self) -> Path:
        return self.directory / "ca.crt"

    @property
    def ca_key_file(self) -> Path:
        return self.directory / "ca.key"

    @property
    def serving_cert_file(self) -> Path:
        return self.directory / "apiserver.crt"

    @property
    def serving_key_file(self) -> Path:
        return self.directory / "apiserver.key"

    @property
    def sa_key_file(self) -> Path:
        return self.directory / "sa.key"

    @property
    def sa_pub_file(self) -> Path:
        return self.directory / "sa.pub"

    def client_files(self, user: str) -> tuple[Path, Path]:
        stem = user.replace(":", "-")
        return self.directory / f"{stem}.crt", self.directory / f"{stem}.key"


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def generate(directory: Path) -> Pki:
    """Create the CA, serving and client certificates and the service-account key pair."""
    from cryptography.hazmat.primitives import serialization

    directory.mkdir(parents=True, exist_ok=True)
    ca = certs.new_ca("remora-testbed-ca")
    pki = Pki(directory, ca)
    _write(pki.ca_file, ca.cert_pem)
    _write(pki.ca_key_file, ca.key_pem)
    serving = certs.issue(
        ca,
        "kube-apiserver",
        dns_names=(
            "localhost",
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        ),
        ip_addresses=("127.0.0.1", "::1"),
    )
    _write(pki.serving_cert_file, serving.cert_pem)
    _write(pki.serving_key_file, serving.key_pem)
    for user, groups in CLIENT_IDENTITIES.items():
        pair = certs.issue(ca, user, organizations=groups, server=False, client=True)
        cert_file, key_file = pki.client_files(user)
        _write(cert_file, pair.cert_pem)
        _write(key_file, pair.key_pem)
    sa_key = certs.new_key("ec")
    _write(pki.sa_key_file, certs.key_to_pem(sa_key))
    _write(
        pki.sa_pub_file,
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return pki
