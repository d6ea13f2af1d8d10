"""Istio's CA API (``istio.v1.auth.IstioCertificateService``) as protobuf messages, no codegen.

Both ends of the mesh CA need these messages: the CA in the control plane and the agent's
client. There is no published Python package with Istio's ``security/v1alpha1/ca.proto``,
so the two messages are declared here with ``descriptor_pb2`` and turned into real protobuf
classes by ``message_factory`` when this module is imported. The wire format is therefore
produced by protobuf itself (never hand-encoded), field numbers and types are exactly
Istio's, and there is no generated file to keep in sync nor a grpcio-tools build step
(``docs/ca.md`` has the reasons and the cost: about 2.5 ms once per process, 0.4 ms of it
building the classes and the rest importing ``descriptor_pb2``; ``grpc`` itself takes 67 ms).

Istio's definition, for reference (``istio/api security/v1alpha1/ca.proto``)::

    package istio.v1.auth;
    message IstioCertificateRequest {
      string csr = 1;                       // PEM
      int64 validity_duration = 3;          // seconds
      google.protobuf.Struct metadata = 4;  // optional, e.g. impersonation by a node agent
    }
    message IstioCertificateResponse {
      repeated string cert_chain = 1;       // PEM, leaf first, root last
    }
    service IstioCertificateService {
      rpc CreateCertificate(IstioCertificateRequest) returns (IstioCertificateResponse);
    }
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory, struct_pb2

PACKAGE = "istio.v1.auth"
SERVICE_NAME = f"{PACKAGE}.IstioCertificateService"
CREATE_CERTIFICATE = "CreateCertificate"
CREATE_CERTIFICATE_PATH = f"/{SERVICE_NAME}/{CREATE_CERTIFICATE}"
_FILE_NAME = "security/v1alpha1/ca.proto"

_F = descriptor_pb2.FieldDescriptorProto


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pb2.FileDescriptorProto(
        name=_FILE_NAME,
        package=PACKAGE,
        syntax="proto3",
        dependency=[struct_pb2.DESCRIPTOR.name],
    )
    request = fd.message_type.add(name="IstioCertificateRequest")
    request.field.add(name="csr", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    request.field.add(
        name="validity_duration", number=3, type=_F.TYPE_INT64, label=_F.LABEL_OPTIONAL
    )
    request.field.add(
        name="metadata",
        number=4,
        type=_F.TYPE_MESSAGE,
        type_name=".google.protobuf.Struct",
        label=_F.LABEL_OPTIONAL,
    )
    response = fd.message_type.add(name="IstioCertificateResponse")
    response.field.add(name="cert_chain", number=1, type=_F.TYPE_STRING, label=_F.LABEL_REPEATED)
    service = fd.service.add(name="IstioCertificateService")
    service.method.add(
        name=CREATE_CERTIFICATE,
        input_type=f".{PACKAGE}.IstioCertificateRequest",
        output_type=f".{PACKAGE}.IstioCertificateResponse",
    )
    return fd


def _register() -> tuple[Any, Any]:
    pool = descriptor_pool.Default()
    try:
        file_desc = pool.FindFileByName(_FILE_NAME)
    except KeyError:
        file_desc = pool.Add(_file_descriptor())
    request = message_factory.GetMessageClass(
        file_desc.message_types_by_name["IstioCertificateRequest"]
    )
    response = message_factory.GetMessageClass(
        file_desc.message_types_by_name["IstioCertificateResponse"]
    )
    return request, response


# Real protobuf message classes (typed as Any: they are built at run time).
IstioCertificateRequest, IstioCertificateResponse = _register()


def serialize(message: Any) -> bytes:
    """``SerializeToString`` for gRPC's serializer hooks."""
    data: bytes = message.SerializeToString()
    return data


def parse_request(data: bytes) -> Any:
    return IstioCertificateRequest.FromString(data)


def parse_response(data: bytes) -> Any:
    return IstioCertificateResponse.FromString(data)
