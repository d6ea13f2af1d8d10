"""Small protobuf builders every translator uses."""

from __future__ import annotations

import ipaddress

from envoy.config.core.v3 import address_pb2, config_source_pb2
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message


def packed(message: Message) -> any_pb2.Any:
    out = any_pb2.Any()
    out.Pack(message)
    return out


def duration(seconds: float) -> duration_pb2.Duration:
    out = duration_pb2.Duration()
    out.FromNanoseconds(int(seconds * 1e9))
    return out


def socket_address(ip: str, port: int) -> address_pb2.Address:
    return address_pb2.Address(
        socket_address=address_pb2.SocketAddress(address=ip, port_value=port)
    )


def ads() -> config_source_pb2.ConfigSource:
    """Fetch the referenced resource over the same aggregated (ADS) stream."""
    return config_source_pb2.ConfigSource(
        ads=config_source_pb2.AggregatedConfigSource(),
        resource_api_version=config_source_pb2.ApiVersion.V3,
    )


def host_cidr(ip: str) -> address_pb2.CidrRange:
    """The /32 (or /128) range of a single address, for filter chain matching."""
    parsed = ipaddress.ip_address(ip)
    return address_pb2.CidrRange(
        address_prefix=str(parsed), prefix_len={"value": parsed.max_prefixlen}
    )
