"""Prove that capture works: connect through the installed rules to a short-lived listener.

Rules that are present can still fail to capture (another backend's NAT table wins the
hook, a kernel without the owner match, a CNI that rewrote the chains), and a pod whose
traffic silently bypasses the sidecar is the worst failure a mesh has. So, like Istio's
``istio-validation``, we open a real connection and check where it lands:

* as an application (any uid but the proxy's): connect to an outbound address and expect
  the connection on the outbound capture port (15001), with ``SO_ORIGINAL_DST`` equal to the
  address we dialled;
* as the proxy uid (Istio's CNI validation container runs as 1337): connect to
  127.0.0.6 (or ::6) over loopback and expect it on the inbound capture port (15006).

The SYN never leaves the pod when capture works: it is redirected inside the OUTPUT hook.
"""

# Annotations are evaluated eagerly (no ``from __future__ import annotations``): NamedTuple
# compiles every *string* annotation into a ForwardRef, ~0.1 ms per field on each pod start.

import errno
import ipaddress
import socket
import struct
import time
from typing import NamedTuple

from initcontainer.config import CaptureConfig
from initcontainer.errors import CaptureError, ConfigError, ValidationFailed
from initcontainer.log import getLogger
from meshlib.hostport import host_port

log = getLogger("initcontainer.probe")

SO_ORIGINAL_DST = 80  # linux/netfilter_ipv4.h; IP6T_SO_ORIGINAL_DST has the same value
# Documentation addresses (RFC 5737 / RFC 3849): never anyone's real server.
DEFAULT_PROBE_ADDRESS = {4: "192.0.2.1", 6: "2001:db8::1"}


class ProbeTarget(NamedTuple):
    """Where the probe dials and where a captured connection must show up."""

    dial: tuple[str, int]
    listen_port: int
    version: int


def original_destination(conn: socket.socket) -> tuple[str, int]:
    """The pre-NAT destination of a REDIRECTed connection (what Envoy reads)."""
    if conn.family == socket.AF_INET:
        raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
        port, packed = struct.unpack_from("!2xH4s", raw)
        return socket.inet_ntop(socket.AF_INET, packed), port
    raw = conn.getsockopt(socket.IPPROTO_IPV6, SO_ORIGINAL_DST, 28)
    port, packed = struct.unpack_from("!2xH4x16s", raw)
    return socket.inet_ntop(socket.AF_INET6, packed), port


def plan_probes(
    config: CaptureConfig, probe_port: int, uid: int, probe_address: str | None = None
) -> list[ProbeTarget]:
    """One probe per family the config captures, chosen for the uid we run as."""
    versions = [4, 6] if config.ipv6 else [4]
    if str(uid) in config.proxy_uids:
        passthrough = {4: "127.0.0.6", 6: "::6"}
        return [
            ProbeTarget((passthrough[v], probe_port), config.inbound_capture_port, v)
            for v in versions
        ]
    if probe_port in config.outbound_ports_exclude:
        raise CaptureError(
            f"the probe port {probe_port} is excluded from capture (-o)",
            "pick another --iptables-probe-port",
        )
    targets = []
    for version in versions:
        address = _outbound_probe_address(config, version, probe_address)
        if address is not None:
            targets.append(ProbeTarget((address, probe_port), config.proxy_port, version))
    if not targets:
        raise CaptureError(
            "nothing to validate: outbound capture (-i) covers no address to probe",
            "pass --probe-address with an address inside -i, or skip validation",
        )
    return targets


def _outbound_probe_address(
    config: CaptureConfig, version: int, explicit: str | None
) -> str | None:
    if explicit is not None:
        try:
            address = ipaddress.ip_address(explicit)
        except ValueError:
            raise ConfigError(f"--probe-address: {explicit!r} is not an IP address") from None
        return explicit if address.version == version else None
    excluded = config.outbound_cidrs_exclude.for_family(version)
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address]
    if config.outbound_cidrs.everything:
        candidates = [ipaddress.ip_address(DEFAULT_PROBE_ADDRESS[version])]
    else:
        candidates = [
            next(iter(n.hosts()), n.network_address)  # type: ignore[misc]
            for n in config.outbound_cidrs.for_family(version)
        ]
    for candidate in candidates:
        if not candidate.is_loopback and not any(candidate in n for n in excluded):
            return str(candidate)
    return None


def run_probe(target: ProbeTarget, timeout: float) -> None:
    """Dial ``target`` and require the connection to arrive, captured, on our listener."""
    family = socket.AF_INET if target.version == 4 else socket.AF_INET6
    listen_host = "0.0.0.0" if target.version == 4 else "::"
    deadline = time.monotonic() + timeout
    with socket.socket(family, socket.SOCK_STREAM) as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((listen_host, target.listen_port))
        except OSError as error:
            raise CaptureError(
                f"cannot listen on port {target.listen_port} for the probe: {error.strerror}",
                "validation must run before Envoy starts (in the init container)",
            ) from None
        listener.listen(4)
        with socket.socket(family, socket.SOCK_STREAM) as client:
            client.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                client.connect(target.dial)
            except OSError as error:
                if error.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                    raise ValidationFailed(
                        f"cannot probe: this pod has no route to {target.dial[0]} "
                        "(routing happens before capture)",
                        "pass --probe-address with an address the pod routes to (inside -i)",
                    ) from None
                raise ValidationFailed(
                    f"probe connection to {host_port(*target.dial)} was not captured "
                    f"({error.strerror or error})",
                    "the rules are not redirecting traffic: check for a second iptables "
                    "backend holding rules (iptables-legacy-save / iptables-nft-save) and for "
                    "a route to the probe address (--probe-address)",
                ) from None
            listener.settimeout(max(0.1, deadline - time.monotonic()))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                raise ValidationFailed(
                    f"probe connection to {host_port(*target.dial)} connected somewhere else: it "
                    f"never reached port {target.listen_port}",
                    "traffic bypasses the sidecar: inspect the nat table with iptables-save",
                ) from None
            with conn:
                seen = original_destination(conn)
    if (ipaddress.ip_address(seen[0]), seen[1]) != (
        ipaddress.ip_address(target.dial[0]),
        target.dial[1],
    ):
        raise ValidationFailed(
            f"a connection reached port {target.listen_port}, but its original destination "
            f"was {host_port(*seen)}, not the probe's {host_port(*target.dial)}",
            "another process is connecting to the capture port; retry",
        )
    log.info(
        "capture validated",
        extra={"dialled": host_port(*target.dial), "arrived_on": target.listen_port},
    )
