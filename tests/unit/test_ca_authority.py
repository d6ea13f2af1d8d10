"""CA material in Istio's ``cacerts`` layout, and the contents of a workload certificate.

The certificate's contents are compared with ``tests/golden/ca/workload_cert.txt`` (a
human-readable dump); regenerate with ``REMORA_UPDATE_GOLDEN=1`` after reviewing the diff.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from controlplane.ca.authority import (
    CA_CERT,
    CA_KEY,
    CERT_CHAIN,
    ROOT_CERT,
    CAMaterial,
    CAMaterialError,
    issue_serving,
    sign_workload,
)
from controlplane.ca.service import CAOptions, requested_ttl
from harness.golden import assert_golden
from meshlib.certs import KeyPair, issue, new_ca
from meshlib.spiffe import WorkloadIdentity

GOLDEN = Path(__file__).parents[1] / "golden" / "ca"
NOW = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


def intermediate_ca(root: KeyPair) -> KeyPair:
    """A CA signed by ``root`` (meshlib.certs.issue makes leaves; build the CA by hand)."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "intermediate")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(root.cert.subject)
        .public_key(key.public_key())
        .serial_number(7)
        .not_valid_before(NOW - dt.timedelta(days=1))
        .not_valid_after(NOW + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(root.key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return KeyPair(cert.public_bytes(serialization.Encoding.PEM), key_pem)


def describe(cert: x509.Certificate) -> str:
    lines = [
        f"version: {cert.version.name}",
        f"subject: {cert.subject.rfc4514_string() or '(empty)'}",
        f"issuer: {cert.issuer.rfc4514_string()}",
        f"serial: {cert.serial_number}",
        f"not_before: {cert.not_valid_before_utc.isoformat()}",
        f"not_after: {cert.not_valid_after_utc.isoformat()}",
        f"key: {type(cert.public_key()).__name__.lstrip('_')}",
        "extensions:",
    ]
    for ext in sorted(cert.extensions, key=lambda e: e.oid.dotted_string):
        value = ext.value
        if isinstance(value, x509.AuthorityKeyIdentifier):
            shown = "key_identifier=<issuer key hash>"
        else:
            shown = repr(value).replace("<", "").replace(">", "")
        lines.append(f"  - {ext.oid._name} critical={ext.critical}: {shown}")
    return "\n".join(lines) + "\n"


def test_workload_certificate_contents_golden() -> None:
    material = CAMaterial.from_directory(GOLDEN / "root")
    key = ec.generate_private_key(ec.SECP256R1())
    chain = sign_workload(
        material,
        key.public_key(),
        WorkloadIdentity("shop", "cart"),
        trust_domain="cluster.local",
        ttl=dt.timedelta(hours=24),
        now=NOW,
        serial=0x1234,
    )
    assert len(chain) == 2 and chain[-1] == material.root_pem
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    leaf.verify_directly_issued_by(material.root)
    assert leaf.public_key().public_numbers() == key.public_key().public_numbers()  # type: ignore[union-attr]
    got = describe(leaf)
    assert_golden(GOLDEN / "workload_cert.txt", got, "the workload certificate")


def test_user_ca_with_intermediate_chains_to_root(tmp_path: Path) -> None:
    root = new_ca("root")
    inter = intermediate_ca(root)
    (tmp_path / CA_CERT).write_bytes(inter.cert_pem)
    (tmp_path / CA_KEY).write_bytes(inter.key_pem)
    (tmp_path / ROOT_CERT).write_bytes(root.cert_pem)
    (tmp_path / CERT_CHAIN).write_bytes(inter.cert_pem + root.cert_pem)
    material = CAMaterial.from_directory(tmp_path)
    assert material.chain == (inter.cert,) and material.root == root.cert
    chain = sign_workload(
        material,
        ec.generate_private_key(ec.SECP256R1()).public_key(),
        WorkloadIdentity("a", "b"),
        trust_domain="td",
        ttl=dt.timedelta(hours=1),
        now=NOW,
    )
    certs = [x509.load_pem_x509_certificate(c.encode()) for c in chain]
    assert [c.subject.rfc4514_string() for c in certs] == ["", "CN=intermediate", "CN=root"]
    certs[0].verify_directly_issued_by(certs[1])
    certs[1].verify_directly_issued_by(certs[2])
    # Without cert-chain.pem the intermediate is still sent.
    (tmp_path / CERT_CHAIN).unlink()
    assert CAMaterial.from_directory(tmp_path).chain == (inter.cert,)


def test_round_trip_through_files() -> None:
    material = CAMaterial.self_signed("example.org")
    again = CAMaterial.from_files(material.to_files())
    assert again.root == material.root and again.signer == material.signer and again.chain == ()


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ({}, "has no ca-cert.pem or ca-key.pem"),
        ({CA_CERT: b"junk", CA_KEY: b"junk"}, "no readable PEM certificate"),
        ("other-key", "is not the key of ca-cert.pem"),
        ("other-root", "is not signed by"),
    ],
)
def test_bad_material_is_explained(files: dict[str, bytes] | str, words: str) -> None:
    good = new_ca("mesh")
    other = new_ca("other")
    if files == "other-key":
        files = {CA_CERT: good.cert_pem, CA_KEY: other.key_pem}
    elif files == "other-root":
        files = {CA_CERT: good.cert_pem, CA_KEY: good.key_pem, ROOT_CERT: other.cert_pem}
    assert isinstance(files, dict)
    with pytest.raises(CAMaterialError, match=words):
        CAMaterial.from_files(files, source="cacerts")


def test_serving_certificate_for_the_control_plane() -> None:
    material = CAMaterial.self_signed()
    pair, root = issue_serving(
        material, ("istiod.istio-system.svc", "istiod-remora.istio-system.svc")
    )
    cert = pair.cert
    cert.verify_directly_issued_by(material.root)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        "istiod.istio-system.svc",
        "istiod-remora.istio-system.svc",
    ]
    assert root.decode() == material.root_pem


def test_requested_lifetime() -> None:
    options = CAOptions(default_ttl=dt.timedelta(hours=24), max_ttl=dt.timedelta(hours=48))
    assert requested_ttl(0, options) == dt.timedelta(hours=24)
    assert requested_ttl(-5, options) == dt.timedelta(hours=24)
    assert requested_ttl(3600, options) == dt.timedelta(hours=1)
    assert requested_ttl(10**9, options) == dt.timedelta(hours=48)
    # int64 on the wire: far beyond what timedelta holds, still just "the maximum"
    assert requested_ttl(2**63 - 1, options) == dt.timedelta(hours=48)


def test_leaf_from_meshlib_is_not_a_ca() -> None:
    """A leaf certificate handed in as ca-cert.pem is refused before it signs anything."""
    root = new_ca("root")
    leaf = issue(root, "not-a-ca")
    with pytest.raises(CAMaterialError, match="not a CA certificate"):
        CAMaterial.from_files({CA_CERT: leaf.cert_pem, CA_KEY: leaf.key_pem}, source="cacerts")


def test_empty_ca_dir_means_no_plugged_in_ca(tmp_path: Path) -> None:
    """The chart mounts the optional cacerts Secret: an empty mount falls back, a partial one fails."""
    from controlplane.ca.runtime import MeshCA, MeshCAConfig, has_ca_files

    class Nobody:
        async def authenticate(self, token: str) -> WorkloadIdentity:
            raise AssertionError("not called")

    assert not has_ca_files(tmp_path)
    ca = MeshCA(MeshCAConfig(ca_dir=tmp_path), None, authenticator=Nobody())
    material = ca.load()
    assert material.signer == material.root and ca.source == "self-signed (in memory)"
    (tmp_path / CA_CERT).write_bytes(new_ca("x").cert_pem)
    with pytest.raises(CAMaterialError, match=r"has no ca-key\.pem"):
        ca.load()


def test_nothing_but_the_key_is_taken_from_the_csr() -> None:
    """A CSR asking for extra names, a subject and CA powers gets none of them."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.x509.oid import NameOID

    from controlplane.ca.csr import approve_csr

    key = ec.generate_private_key(ec.SECP256R1())
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/cart"),
                    x509.DNSName("kubernetes.default.svc"),
                    x509.IPAddress(ipaddress.ip_address("10.0.0.1")),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
        .public_bytes(serialization.Encoding.PEM)
        .decode()
    )
    material = CAMaterial.self_signed()
    approved = approve_csr(csr, WorkloadIdentity("shop", "cart"), "cluster.local")
    chain = sign_workload(
        material,
        approved.public_key,
        approved.identity,
        trust_domain="cluster.local",
        ttl=dt.timedelta(hours=1),
        now=NOW,
    )
    leaf = x509.load_pem_x509_certificate(chain[0].encode())
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert list(sans) == [x509.UniformResourceIdentifier("spiffe://cluster.local/ns/shop/sa/cart")]
    assert leaf.subject == x509.Name([])
    assert leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
