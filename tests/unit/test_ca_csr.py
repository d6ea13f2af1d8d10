"""Which identity a CSR gets, and every way a CSR is refused (pure, no server)."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from controlplane.ca.csr import Refusal, approve_csr
from meshlib.spiffe import WorkloadIdentity

TD = "cluster.local"
CALLER = WorkloadIdentity("shop", "cart")
OWN = "spiffe://cluster.local/ns/shop/sa/cart"


def csr(
    *names: x509.GeneralName, key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | None = None
) -> str:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "admin")])
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(names)), critical=True)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()


def refusal(pem: str, caller: WorkloadIdentity = CALLER) -> Refusal:
    with pytest.raises(Refusal) as info:
        approve_csr(pem, caller, TD)
    return info.value


def test_own_identity_is_approved_with_the_csr_key() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    approved = approve_csr(csr(x509.UniformResourceIdentifier(OWN), key=key), CALLER, TD)
    assert approved.identity == CALLER
    assert approved.public_key.public_numbers() == key.public_key().public_numbers()


def test_other_sans_are_ignored_not_trusted() -> None:
    """A DNS name next to the SPIFFE ID is no reason to refuse, and is not signed (see authority)."""
    pem = csr(x509.UniformResourceIdentifier(OWN), x509.DNSName("kubernetes.default.svc"))
    assert approve_csr(pem, CALLER, TD).identity == CALLER


@pytest.mark.parametrize(
    ("uri", "caller"),
    [
        ("spiffe://cluster.local/ns/shop/sa/admin", CALLER),
        ("spiffe://cluster.local/ns/kube-system/sa/cart", CALLER),
        ("spiffe://other.domain/ns/shop/sa/cart", CALLER),
        (OWN, WorkloadIdentity("shop", "payments")),
    ],
)
def test_another_identity_is_denied(uri: str, caller: WorkloadIdentity) -> None:
    r = refusal(csr(x509.UniformResourceIdentifier(uri)), caller)
    assert (r.code, r.reason) == ("PERMISSION_DENIED", "identity_mismatch")
    assert uri in r.message and caller.spiffe_id(TD) in r.message


@pytest.mark.parametrize(
    ("pem", "reason", "words"),
    [
        ("not a csr", "malformed_csr", "not a PEM certificate request"),
        (csr(), "no_spiffe_id", "exactly one SPIFFE ID"),
        (csr(x509.DNSName("cart.shop.svc")), "no_spiffe_id", "exactly one SPIFFE ID"),
        (
            csr(x509.UniformResourceIdentifier(OWN), x509.UniformResourceIdentifier(OWN + "2")),
            "no_spiffe_id",
            "exactly one SPIFFE ID",
        ),
        (
            csr(x509.UniformResourceIdentifier("spiffe://cluster.local/cart")),
            "no_spiffe_id",
            "/ns/<namespace>/sa/",
        ),
    ],
)
def test_malformed_requests_are_invalid(pem: str, reason: str, words: str) -> None:
    r = refusal(pem)
    assert (r.code, r.reason) == ("INVALID_ARGUMENT", reason)
    assert words in r.message


def test_tampered_csr_signature_is_refused() -> None:
    good = x509.load_pem_x509_csr(csr(x509.UniformResourceIdentifier(OWN)).encode())
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    der[-3] ^= 0xFF  # inside the signature
    pem = x509.load_der_x509_csr(bytes(der)).public_bytes(serialization.Encoding.PEM).decode()
    assert refusal(pem).reason == "bad_csr_signature"


def test_weak_rsa_key_is_refused() -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    r = refusal(csr(x509.UniformResourceIdentifier(OWN), key=key))
    assert r.reason == "weak_key" and "2048" in r.message
