"""The CA's key material and the signing of workload certificates.

The material uses the file names of Istio's ``cacerts`` Secret, so a user's own CA works
unchanged, from a Secret or a directory:

* ``ca-cert.pem`` / ``ca-key.pem`` — the certificate that signs workloads and its key;
* ``root-cert.pem`` — the mesh root (defaults to ``ca-cert.pem`` for a self-signed root);
* ``cert-chain.pem`` — ``ca-cert.pem`` followed by any intermediates up to the root
  (optional; defaults to ``ca-cert.pem`` alone when it is not the root).

Signing takes an identity that has already been authorised (see :mod:`.csr`) and puts only
that identity's SPIFFE URI in the certificate: nothing else from the CSR but its public key.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from controlplane.errors import CAMaterialError
from meshlib import certs
from meshlib.certs import KeyPair, key_to_pem, leaf_key_usage, new_ca
from meshlib.spiffe import WorkloadIdentity

CA_CERT = "ca-cert.pem"
CA_KEY = "ca-key.pem"
ROOT_CERT = "root-cert.pem"
CERT_CHAIN = "cert-chain.pem"

DEFAULT_TRUST_DOMAIN = "cluster.local"
DEFAULT_WORKLOAD_TTL = dt.timedelta(hours=24)
DEFAULT_MAX_WORKLOAD_TTL = dt.timedelta(days=90)  # Istio's default MAX_WORKLOAD_CERT_TTL
BACKDATE = dt.timedelta(minutes=1)  # absorbs clock skew between CA and workloads
SELF_SIGNED_ORG = "cluster.local"  # Istio's self-signed root: O=<trust domain>


def _pem_certs(data: bytes, what: str) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise CAMaterialError(f"{what} holds no readable PEM certificate: {exc}") from exc


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class CAMaterial:
    """The checked CA: signing certificate and key, the chain above it, and the root."""

    signer: x509.Certificate
    key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    chain: tuple[x509.Certificate, ...]  # the signer's chain up to (excluding) the root
    root: x509.Certificate

    @property
    def root_pem(self) -> str:
        return _pem(self.root)

    @classmethod
    def from_files(cls, files: Mapping[str, bytes], *, source: str = "the CA") -> CAMaterial:
        """From Istio's ``cacerts`` file names (a Secret's data or a directory's files)."""
        missing = [n for n in (CA_CERT, CA_KEY) if not files.get(n)]
        if missing:
            raise CAMaterialError(
                f"{source} has no {' or '.join(missing)}: it needs at least the CA certificate "
                f"and key ({CA_CERT}, {CA_KEY}; optionally {ROOT_CERT}, {CERT_CHAIN}), "
                "as in Istio's 'cacerts' Secret"
            )
        signer = _pem_certs(files[CA_CERT], f"{source}/{CA_CERT}")[0]
        try:
            key = serialization.load_pem_private_key(files[CA_KEY], password=None)
        except (ValueError, TypeError) as exc:
            raise CAMaterialError(
                f"{source}/{CA_KEY} is not an unencrypted PEM key: {exc}"
            ) from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise CAMaterialError(f"{source}/{CA_KEY}: unsupported key type {type(key).__name__}")
        try:
            is_ca = signer.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
        except x509.ExtensionNotFound:
            is_ca = False
        if not is_ca:
            raise CAMaterialError(
                f"{source}/{CA_CERT} is not a CA certificate (no BasicConstraints CA:TRUE)"
            )
        if key.public_key().public_numbers() != signer.public_key().public_numbers():  # type: ignore[union-attr]
            raise CAMaterialError(f"{source}/{CA_KEY} is not the key of {CA_CERT}")
        root_data = files.get(ROOT_CERT) or files[CA_CERT]
        root = _pem_certs(root_data, f"{source}/{ROOT_CERT}")[0]
        chain_data = files.get(CERT_CHAIN)
        if chain_data:
            chain = [c for c in _pem_certs(chain_data, f"{source}/{CERT_CHAIN}") if c != root]
            if not chain and signer != root:
                chain = [signer]
        else:
            chain = [] if signer == root else [signer]
        material = cls(signer=signer, key=key, chain=tuple(chain), root=root)
        material.verify_chain(source)
        return material

    @classmethod
    def from_directory(cls, directory: Path) -> CAMaterial:
        if not directory.is_dir():
            raise CAMaterialError(
                f"{directory} is not a directory of CA files ({CA_CERT}, {CA_KEY}, ...)"
            )
        files = {
            name: (directory / name).read_bytes()
            for name in (CA_CERT, CA_KEY, ROOT_CERT, CERT_CHAIN)
            if (directory / name).is_file()
        }
        return cls.from_files(files, source=str(directory))

    @classmethod
    def self_signed(
        cls, trust_domain: str = DEFAULT_TRUST_DOMAIN, *, days: int = 3650
    ) -> CAMaterial:
        """A fresh self-signed root (EC P-256), like istiod's ``istio-ca-secret``."""
        pair = new_ca(trust_domain, days=days)
        return cls.from_files({CA_CERT: pair.cert_pem, CA_KEY: pair.key_pem}, source="self-signed")

    def to_files(self) -> dict[str, bytes]:
        """Istio's ``cacerts`` file names → PEM bytes (for a Secret or a directory)."""
        key_pem = key_to_pem(self.key)
        return {
            CA_CERT: _pem(self.signer).encode(),
            CA_KEY: key_pem,
            ROOT_CERT: self.root_pem.encode(),
            CERT_CHAIN: "".join(_pem(c) for c in self.chain).encode(),
        }

    def verify_chain(self, source: str = "the CA") -> None:
        """Each certificate of signer → chain → root is signed by the next one."""
        path = [*self.chain] if self.chain else [self.signer]
        if path[0] != self.signer:
            raise CAMaterialError(f"{source}: {CERT_CHAIN} does not start with {CA_CERT}")
        for child, parent in zip(path, [*path[1:], self.root], strict=True):
            try:
                child.verify_directly_issued_by(parent)
            except (ValueError, TypeError, InvalidSignature) as exc:
                raise CAMaterialError(
                    f"{source}: {child.subject.rfc4514_string() or 'a certificate'} is not "
                    f"signed by {parent.subject.rfc4514_string() or 'the next one'} "
                    f"({ROOT_CERT}/{CERT_CHAIN} do not belong to {CA_CERT}): {exc}"
                ) from exc


def sign_workload(
    material: CAMaterial,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    identity: WorkloadIdentity,
    *,
    trust_domain: str,
    ttl: dt.timedelta,
    now: dt.datetime,
    serial: int | None = None,
) -> list[str]:
    """A workload certificate for ``identity``; returns the chain, leaf first, root last.

    Like Istio's workload certificates: empty subject, a critical URI SAN with the SPIFFE
    ID only, digital signature + key encipherment, server and client auth, not a CA.
    """
    leaf = certs.workload_certificate(
        material.signer,
        material.key,
        public_key,
        [identity.spiffe_id(trust_domain)],
        not_before=now - BACKDATE,
        not_after=now + ttl,
        serial=serial,
    )
    return [_pem(leaf), *(_pem(c) for c in material.chain), material.root_pem]


def issue_serving(
    material: CAMaterial,
    dns_names: tuple[str, ...],
    *,
    ttl: dt.timedelta = DEFAULT_WORKLOAD_TTL,
) -> tuple[KeyPair, bytes]:
    """A serving certificate for the control plane itself (``istiod.<ns>.svc`` ...).

    Returns the key pair (certificate = the full chain without the root) and the root PEM.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "remora")]))
        .issuer_name(material.signer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + ttl)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(key_encipherment=True), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName(d) for d in dns_names]), critical=False
        )
        .sign(material.key, hashes.SHA256())
    )
    chain = _pem(cert) + "".join(_pem(c) for c in material.chain)
    return KeyPair(chain.encode(), key_to_pem(key)), material.root_pem.encode()
