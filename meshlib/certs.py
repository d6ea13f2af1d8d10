"""Certificate helpers built on ``cryptography``: CAs, serving and client certificates, PEM I/O.

Used by the test bed (apiserver CA, client certificates), the webhook (self-signed serving
certificates), and the mesh CA and the agent's local signer (SPIFFE workload certificates,
one shape for both: :func:`workload_certificate`).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import TypedDict, Unpack

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its private key, both kept as PEM bytes."""

    cert_pem: bytes
    key_pem: bytes

    @property
    def cert(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert_pem)

    @property
    def key(self) -> PrivateKey:
        key = serialization.load_pem_private_key(self.key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
            raise TypeError(f"unsupported key type {type(key).__name__}")
        return key


def new_key(kind: str = "ec") -> PrivateKey:
    """A fresh private key: ECDSA P-256 (default, fast) or RSA 2048."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def key_to_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def new_ca(common_name: str, *, days: int = 3650, key_kind: str = "ec") -> KeyPair:
    """A self-signed CA certificate that may sign leaf certificates."""
    key = new_key(key_kind)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key))


class LeafOptions(TypedDict, total=False):
    """What :func:`issue` may put in a leaf besides its common name; each has a default.

    Keyword options, as in Istio's ``CertOptions``: the webhook, the test bed and the tests
    each set the few they need, and mypy checks every name and type at the call.
    """

    dns_names: tuple[str, ...]  # DNS SANs
    ip_addresses: tuple[str, ...]  # IP SANs
    uris: tuple[str, ...]  # URI SANs (SPIFFE IDs); with any, the SAN extension is critical
    organizations: tuple[str, ...]  # subject O=: Kubernetes' groups of a client certificate
    server: bool  # serverAuth usage (default True)
    client: bool  # clientAuth usage (default False)
    lifetime: dt.timedelta  # default 365 days
    key_kind: str  # "ec" (P-256, default) or "rsa"


def issue(ca: KeyPair, common_name: str, **options: Unpack[LeafOptions]) -> KeyPair:
    """A leaf certificate signed by ``ca`` with the given SANs and usages."""
    key = new_key(options.get("key_kind", "ec"))
    ca_cert = ca.cert
    now = _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(_leaf_subject(common_name, options.get("organizations", ())))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + options.get("lifetime", dt.timedelta(days=365)))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(isinstance(key, rsa.RSAPrivateKey)), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    usages = _extended_key_usages(
        server=options.get("server", True), client=options.get("client", False)
    )
    if usages:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usages), critical=False)
    uris = options.get("uris", ())
    sans = _subject_alt_names(options.get("dns_names", ()), options.get("ip_addresses", ()), uris)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=bool(uris))
    cert = builder.sign(ca.key, hashes.SHA256())
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_to_pem(key))


def _leaf_subject(common_name: str, organizations: tuple[str, ...]) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    if common_name:
        attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attrs)


def _extended_key_usages(*, server: bool, client: bool) -> list[x509.ObjectIdentifier]:
    return [
        usage
        for usage, wanted in (
            (ExtendedKeyUsageOID.SERVER_AUTH, server),
            (ExtendedKeyUsageOID.CLIENT_AUTH, client),
        )
        if wanted
    ]


def _subject_alt_names(
    dns_names: tuple[str, ...], ip_addresses: tuple[str, ...], uris: tuple[str, ...]
) -> list[x509.GeneralName]:
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    sans += [x509.UniformResourceIdentifier(u) for u in uris]
    return sans


def leaf_key_usage(key_encipherment: bool) -> x509.KeyUsage:
    """Key usage of a leaf (not a CA): signing, and key encipherment when asked."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def not_after(cert_pem: bytes) -> dt.datetime:
    """When a PEM certificate expires (timezone-aware, UTC)."""
    return x509.load_pem_x509_certificate(cert_pem).not_valid_after_utc


def workload_certificate(
    signer: x509.Certificate,
    signer_key: PrivateKey,
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey,
    spiffe_ids: list[str],
    *,
    not_before: dt.datetime,
    not_after: dt.datetime,
    serial: int | None = None,
) -> x509.Certificate:
    """A workload certificate as Istio issues them, signed by ``signer``.

    Empty subject, a critical URI SAN with the SPIFFE IDs only, digital signature + key
    encipherment, server and client auth, not a CA. Used by the mesh CA and by the agent's
    local signer, so both hand Envoy the same shape.
    """
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(signer.subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(leaf_key_usage(key_encipherment=True), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in spiffe_ids]),
            critical=True,
        )
        .sign(signer_key, hashes.SHA256())
    )
