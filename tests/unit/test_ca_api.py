"""The CA messages are Istio's on the wire, and the agent client's handling of answers."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from google.protobuf import struct_pb2

from meshlib import ca_api
from sidecar.ca_client import GrpcCAProvider, split_chain
from sidecar.identity import CertificateError


def test_request_wire_format_matches_istio_field_numbers() -> None:
    request = ca_api.IstioCertificateRequest(csr="PEM", validity_duration=86400)
    # field 1 (string, tag 0x0a) "PEM"; field 3 (varint, tag 0x18) 86400
    assert request.SerializeToString() == b"\x0a\x03PEM\x18\x80\xa3\x05"
    request.metadata.CopyFrom(struct_pb2.Struct(fields={"k": struct_pb2.Value(string_value="v")}))
    again = ca_api.parse_request(request.SerializeToString())
    assert again.metadata.fields["k"].string_value == "v"
    assert (
        ca_api.IstioCertificateRequest.DESCRIPTOR.full_name
        == "istio.v1.auth.IstioCertificateRequest"
    )


def test_response_wire_format() -> None:
    response = ca_api.IstioCertificateResponse(cert_chain=["a", "b"])
    assert response.SerializeToString() == b"\x0a\x01a\x0a\x01b"
    assert list(ca_api.parse_response(b"\x0a\x01a\x0a\x01b").cert_chain) == ["a", "b"]
    assert (
        ca_api.CREATE_CERTIFICATE_PATH == "/istio.v1.auth.IstioCertificateService/CreateCertificate"
    )


def test_split_chain() -> None:
    assert split_chain(["L", "I\n", "R"]) == (b"L\nI\n", b"R\n")
    for bad in ([], ["only-a-leaf"]):
        with pytest.raises(CertificateError):
            split_chain(bad)


def test_client_says_which_file_is_missing(tmp_path: Path) -> None:
    provider = GrpcCAProvider("127.0.0.1:1", token_path=tmp_path / "none", root_cert_path=None)
    with pytest.raises(CertificateError, match=r"cannot read the service-account token .*none"):
        asyncio.run(provider.sign(b"csr"))
    (tmp_path / "tok").write_text("t")
    provider = GrpcCAProvider(
        "127.0.0.1:1", token_path=tmp_path / "tok", root_cert_path=tmp_path / "missing.pem"
    )
    with pytest.raises(CertificateError, match="istio-ca-root-cert ConfigMap mounted"):
        asyncio.run(provider.sign(b"csr"))
