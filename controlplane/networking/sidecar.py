"""A Sidecar's ``spec``, read and checked as istiod's validating webhook does.

"At most one Sidecar without a workloadSelector per namespace" is a rule across objects:
the store applies it (oldest wins, as in Istio), not this module.
"""

from __future__ import annotations

import ipaddress

from controlplane.networking import parts
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    CaptureMode,
    EgressHost,
    EgressListener,
    OutboundTrafficMode,
    Sidecar,
    SidecarPort,
)

_EGRESS_NAMESPACES = (".", "*", "~")


def sidecar_spec(ctx: Context, spec: Fields, name: str, namespace: str, created: str) -> Sidecar:
    if not spec.raw:
        ctx.fail("spec", "a Sidecar needs egress, ingress or outboundTrafficPolicy")
    egress = tuple(
        _egress(e) for e in spec.list_of("egress", ("port", "bind", "captureMode", "hosts"))
    )
    for i, listener in enumerate(egress[:-1]):
        if listener.port is None:
            ctx.fail(
                f"{spec.at('egress')}[{i}].port",
                "only the last egress listener may leave the port unset (it catches every port)",
            )
    policy = spec.fields("outboundTrafficPolicy", ("mode",), unmodelled=("egressProxy",))
    return Sidecar(
        name=name,
        namespace=namespace,
        egress=egress,
        workload_selector=parts.workload_selector(spec),
        outbound_traffic_policy=None
        if policy is None
        else policy.enum("mode", OutboundTrafficMode),
        created=created,
    )


def _egress(f: Fields) -> EgressListener:
    hosts = tuple(_egress_host(f.ctx, path, item) for path, item in f.items("hosts"))
    if not hosts:
        f.fail("hosts", "an egress listener needs at least one host (namespace/dnsName)")
    bind = f.text("bind")
    if bind and not bind.startswith("unix://"):
        try:
            ipaddress.ip_address(bind)
        except ValueError:
            f.fail("bind", f"{bind!r} is not an IP address or unix:// path")
    port = f.fields("port", ("number", "protocol", "name"), unmodelled=("targetPort",))
    return EgressListener(
        hosts=hosts,
        port=None if port is None else _port(port),
        bind=bind,
        capture_mode=f.enum("captureMode", CaptureMode) or CaptureMode.DEFAULT,
    )


def _port(f: Fields) -> SidecarPort:
    number = f.port("number")
    if number is None:
        f.fail("number", "a port needs a number")
    return SidecarPort(number=number, protocol=parts.protocol(f), name=parts.port_name(f))


def _egress_host(ctx: Context, path: str, item: object) -> EgressHost:
    """``namespace/dnsName``: the namespace a name, ``.``, ``*`` or ``~``; the name a host."""
    if not isinstance(item, str):
        ctx.fail(path, "must be a string namespace/dnsName")
    namespace, slash, dns_name = item.partition("/")
    if not slash or not namespace or not dns_name:
        ctx.fail(path, f"{item!r} is not namespace/dnsName (e.g. ./* or istio-system/*)")
    if namespace not in _EGRESS_NAMESPACES and parts.host_problem(namespace) is not None:
        ctx.fail(path, f"{namespace!r} is not '.', '*', '~' or a namespace name")
    if dns_name != "*":
        problem = parts.host_problem(dns_name)
        if problem:
            ctx.fail(path, problem)
    return EgressHost(namespace=namespace, dns_name=dns_name)
