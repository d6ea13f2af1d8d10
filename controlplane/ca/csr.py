"""Pure checks of a certificate request: which identity it asks for and whether it may.

The caller is already authenticated (a service account, from its token). A CSR may only ask
for that service account's SPIFFE ID in our trust domain; its signature must verify (the
caller holds the private key). Nothing else from the CSR is trusted: the subject, other
SANs and extensions are ignored when signing, only the public key is used.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from controlplane.errors import Refusal
from meshlib.spiffe import InvalidSpiffeId, WorkloadIdentity, parse_spiffe_id

MIN_RSA_BITS = 2048


@dataclass(frozen=True)
class ApprovedRequest:
    identity: WorkloadIdentity
    public_key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey


def _bad(reason: str, message: str) -> Refusal:
    return Refusal(reason, "INVALID_ARGUMENT", message)


def approve_csr(csr_pem: str, caller: WorkloadIdentity, trust_domain: str) -> ApprovedRequest:
    """The identity and key to sign for ``caller``; raises :class:`Refusal` otherwise."""
    try:
        csr = x509.load_pem_x509_csr(csr_pem.encode())
    except ValueError as exc:
        raise _bad(
            "malformed_csr", f"the csr field is not a PEM certificate request: {exc}"
        ) from exc
    if not csr.is_signature_valid:
        raise _bad("bad_csr_signature", "the certificate request's signature does not verify")
    key = csr.public_key()
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise _bad(
                "weak_key", f"RSA keys must have at least {MIN_RSA_BITS} bits, not {key.key_size}"
            )
    elif not isinstance(key, ec.EllipticCurvePublicKey):
        raise _bad(
            "unsupported_key", f"unsupported key type {type(key).__name__}: use EC P-256 or RSA"
        )
    try:
        sans = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = list(sans.get_values_for_type(x509.UniformResourceIdentifier))
    except x509.ExtensionNotFound:
        uris = []
    spiffe = [u for u in uris if u.startswith("spiffe://")]
    if len(spiffe) != 1:
        raise _bad(
            "no_spiffe_id",
            f"the certificate request must name exactly one SPIFFE ID (URI SAN), found {spiffe or 'none'}",
        )
    try:
        domain, wanted = parse_spiffe_id(spiffe[0])
    except InvalidSpiffeId as exc:
        raise _bad("no_spiffe_id", str(exc)) from exc
    if domain != trust_domain or wanted != caller:
        raise Refusal(
            "identity_mismatch",
            "PERMISSION_DENIED",
            f"the certificate request asks for {spiffe[0]} but the caller's token is for "
            f"{caller.spiffe_id(trust_domain)}: a workload may only get its own identity",
        )
    return ApprovedRequest(identity=wanted, public_key=key)
