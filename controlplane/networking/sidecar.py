"""A Sidecar's ``spec``, read and checked as istiod's validating webhook does.

"At most one Sidecar without a workloadSelector per namespace" is a rule across objects:
the store applies it (oldest wins, as in Istio), not this module.
"""

from __future__ import annotations

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
from controlplane.networking.service_entry import UNIX_PREFIX

_EGRESS_NAMESPACES = (".", "*", "~")


SPEC_FIELDS = ("workloadSelector", "egress", "outboundTrafficPolicy")
# Accepted, not honoured yet (Remora's inbound side is its own): listed by unsupported().
UNMODELLED_SPEC_FIELDS = ("ingress", "inboundConnectionPool")


def sidecar_spec(ctx: Context, raw: object, name: str, namespace: str, created: str) -> Sidecar:
    """The checked value of a Sidecar whose ``spec`` is ``raw``."""
    spec = Fields(ctx, "spec", raw, SPEC_FIELDS, UNMODELLED_SPEC_FIELDS)
    if not spec.raw:
        ctx.fail("spec", "a Sidecar needs egress, ingress or outboundTrafficPolicy")
    egress = tuple(
        _egress(e) for e in spec.list_of("egress", ("port", "bind", "captureMode", "hosts"))
    )
    _check_listeners(spec, egress)
    return Sidecar(
        name=name,
        namespace=namespace,
        egress=egress,
        workload_selector=parts.workload_selector(spec, "labels"),
        outbound_traffic_policy=_outbound_mode(spec),
        created=created,
    )


def _check_listeners(spec: Fields, egress: tuple[EgressListener, ...]) -> None:
    """One port-less (catch-all) listener at most, last; IP-bound ports and sockets unique."""
    seen: set[tuple[str, int]] = set()
    for i, listener in enumerate(egress):
        path = f"{spec.at('egress')}[{i}]"
        if listener.port is None:
            if i != len(egress) - 1:
                spec.ctx.fail(
                    f"{path}.port",
                    "only the last egress listener may leave the port unset (it catches the rest)",
                )
            continue
        unix = listener.bind.startswith(UNIX_PREFIX)
        key = (listener.bind, 0) if unix else ("", listener.port.number)
        if key in seen:
            what = f"socket {listener.bind}" if unix else f"port {listener.port.number}"
            spec.ctx.fail(f"{path}.port", f"{what} already has an egress listener")
        seen.add(key)


def _egress(f: Fields) -> EgressListener:
    hosts = tuple(_egress_host(f.ctx, path, item) for path, item in f.items("hosts"))
    if not hosts:
        f.fail("hosts", "an egress listener needs at least one host (namespace/dnsName)")
    bind = f.text("bind")
    capture = f.enum("captureMode", CaptureMode) or CaptureMode.DEFAULT
    port = f.fields("port", ("number", "protocol", "name"), unmodelled=("targetPort",))
    if bind.startswith(UNIX_PREFIX):
        if capture is CaptureMode.IPTABLES:
            f.fail("captureMode", "a unix:// listener cannot capture with IPTABLES")
    elif bind and not parts.is_ip(bind):
        f.fail("bind", f"{bind!r} is not an IP address or unix:// path")
    return EgressListener(
        hosts=hosts,
        port=None if port is None else _port(port, unix=bind.startswith(UNIX_PREFIX)),
        bind=bind,
        capture_mode=capture,
    )


def _port(f: Fields, *, unix: bool) -> SidecarPort:
    """A listener port; number 0 only for a unix:// bind. Name and protocol are optional."""
    number = f.integer("number", 0, 65535) or 0
    if number == 0 and not unix:
        f.fail("number", "a port needs a number 1-65535 (0 only with a unix:// bind)")
    name = parts.port_name(f, required=False)
    return SidecarPort(number=number, protocol=parts.protocol(f, name), name=name)


def _egress_host(ctx: Context, path: str, item: object) -> EgressHost:
    """``namespace/dnsName``: the namespace a name, ``.``, ``*`` or ``~``; the name a host."""
    if not isinstance(item, str):
        ctx.fail(path, "must be a string namespace/dnsName")
    namespace, slash, dns_name = item.partition("/")
    if not slash or not namespace or not dns_name:
        ctx.fail(path, f"{item!r} is not namespace/dnsName (e.g. ./* or istio-system/*)")
    if namespace not in _EGRESS_NAMESPACES and not parts.is_dns1123_label(namespace):
        ctx.fail(path, f"{namespace!r} is not '.', '*', '~' or a namespace name")
    if dns_name != "*":
        problem = parts.host_problem(dns_name)
        if problem:
            ctx.fail(path, problem)
        if "." not in dns_name:  # a short name resolves differently in every namespace
            ctx.fail(
                path,
                f"{dns_name!r} is a short name: write the FQDN, e.g. {dns_name}.<ns>.svc.cluster.local",
            )
    return EgressHost(namespace=namespace, dns_name=dns_name)


def _outbound_mode(spec: Fields) -> OutboundTrafficMode | None:
    policy = spec.fields("outboundTrafficPolicy", ("mode",), unmodelled=("egressProxy",))
    if policy is None:
        return None
    mode = policy.enum("mode", OutboundTrafficMode) or OutboundTrafficMode.REGISTRY_ONLY
    if policy.has("egressProxy") and mode is not OutboundTrafficMode.ALLOW_ANY:
        policy.fail("egressProxy", "an egress proxy needs mode ALLOW_ANY")
    return mode
