"""A ServiceEntry's ``spec``, read and checked as istiod's validating webhook does."""

from __future__ import annotations

from controlplane.model import Protocol
from controlplane.networking import parts
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    IPNetwork,
    Labels,
    Location,
    Resolution,
    ServiceEntry,
    ServiceEntryPort,
    WorkloadEntry,
)

_ENDPOINT_FIELDS = ("address", "ports", "labels", "network", "locality", "weight", "serviceAccount")
_DNS = (Resolution.DNS, Resolution.DNS_ROUND_ROBIN)
UNIX_PREFIX = "unix://"


SPEC_FIELDS = (
    "hosts",
    "addresses",
    "ports",
    "location",
    "resolution",
    "endpoints",
    "workloadSelector",
    "exportTo",
    "subjectAltNames",
)
UNMODELLED_SPEC_FIELDS: tuple[str, ...] = ()


def service_entry_spec(
    ctx: Context, raw: object, name: str, namespace: str, created: str
) -> ServiceEntry:
    """The checked value of a ServiceEntry whose ``spec`` is ``raw``."""
    spec = Fields(ctx, "spec", raw, SPEC_FIELDS, UNMODELLED_SPEC_FIELDS)
    hosts = parts.hosts(spec)
    if "*" in hosts:
        spec.fail("hosts", "'*' is not allowed in a ServiceEntry: name the hosts")
    resolution = spec.enum("resolution", Resolution) or Resolution.NONE
    ports = _ports(spec)
    _check_hosts_and_ports(spec, resolution, hosts, ports)
    endpoints = tuple(
        _endpoint(e, resolution, ports) for e in spec.list_of("endpoints", _ENDPOINT_FIELDS)
    )
    selector = parts.workload_selector(spec, "labels")
    _check_endpoints(spec, resolution, hosts, endpoints, selector)
    return ServiceEntry(
        name=name,
        namespace=namespace,
        hosts=hosts,
        addresses=_addresses(spec, resolution),
        ports=ports,
        location=spec.enum("location", Location) or Location.MESH_EXTERNAL,
        resolution=resolution,
        endpoints=endpoints,
        workload_selector=selector,
        export_to=parts.export_to(spec, namespace, none_allowed=True),
        subject_alt_names=spec.strings("subjectAltNames"),
        created=created,
    )


def _addresses(spec: Fields, resolution: Resolution) -> tuple[IPNetwork, ...]:
    """IPs or CIDRs; a CIDR only where nothing is resolved (NONE, STATIC), as Istio says."""
    addresses = []
    for path, item in spec.items("addresses"):
        text = str(item)
        if "/" in text and resolution in _DNS:
            spec.ctx.fail(path, f"{text!r}: CIDR addresses need resolution NONE or STATIC")
        addresses.append(parts.subnet(spec.ctx, path, text))
    return tuple(addresses)


def _ports(spec: Fields) -> tuple[ServiceEntryPort, ...]:
    ports: list[ServiceEntryPort] = []
    for f in spec.list_of("ports", ("number", "protocol", "name", "targetPort")):
        number = f.port("number")
        if number is None:
            f.fail("number", "a port needs a number")
        name = parts.port_name(f, required=True)
        port = ServiceEntryPort(
            number=number,
            protocol=parts.protocol(f, name),
            name=name,
            target_port=f.port("targetPort"),
        )
        if any(p.number == port.number for p in ports):
            f.fail("number", f"port {port.number} is declared twice")
        if any(p.name == port.name for p in ports):
            f.fail("name", f"port name {port.name!r} is declared twice")
        ports.append(port)
    return tuple(ports)


def _check_hosts_and_ports(
    spec: Fields,
    resolution: Resolution,
    hosts: tuple[str, ...],
    ports: tuple[ServiceEntryPort, ...],
) -> None:
    """Several hosts on one opaque TCP port cannot be told apart (no Host header, no SNI)."""
    if resolution is Resolution.NONE or len(hosts) < 2:
        return
    for i, port in enumerate(ports):
        if not (port.protocol.is_http or port.protocol in (Protocol.HTTPS, Protocol.TLS)):
            spec.ctx.fail(
                f"{spec.at('ports')}[{i}]",
                f"{port.protocol} port {port.number} cannot tell {len(hosts)} hosts apart "
                "(only HTTP, HTTPS and TLS can): use one host or resolution NONE",
            )


def _endpoint(
    f: Fields, resolution: Resolution, ports: tuple[ServiceEntryPort, ...]
) -> WorkloadEntry:
    address = f.text("address")
    if not address:
        f.fail("address", "an endpoint needs an address")
    if address.startswith(UNIX_PREFIX):
        if f.has("ports"):
            f.fail("ports", "a unix:// endpoint has no ports")
        if len(ports) != 1:
            f.fail("address", "a unix:// endpoint needs a ServiceEntry with exactly one port")
    elif resolution is Resolution.STATIC and not parts.is_ip(address):
        f.fail("address", f"{address!r} is not an IP address (resolution STATIC)")
    elif not parts.is_ip(address) and parts.host_problem(address):
        f.fail("address", f"{address!r} is not an IP address or a DNS name")
    return WorkloadEntry(
        address=address,
        ports=_endpoint_ports(f, ports),
        labels=f.string_map("labels"),
        network=f.text("network"),
        locality=f.text("locality"),
        weight=f.integer("weight", 0),
        service_account=f.text("serviceAccount"),
    )


def _endpoint_ports(f: Fields, ports: tuple[ServiceEntryPort, ...]) -> tuple[tuple[str, int], ...]:
    """``ports``: service port name -> this endpoint's port number, sorted by name."""
    names = {p.name for p in ports}
    endpoint_ports = []
    for name, number in sorted(f.mapping("ports").items()):
        path = f"{f.at('ports')}.{name}"
        if name not in names:
            f.ctx.fail(path, f"the ServiceEntry declares no port named {name!r}")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            f.ctx.fail(path, f"{number!r} is not a port number (1-65535)")
        endpoint_ports.append((str(name), number))
    return tuple(endpoint_ports)


def _check_endpoints(
    spec: Fields,
    resolution: Resolution,
    hosts: tuple[str, ...],
    endpoints: tuple[WorkloadEntry, ...],
    selector: Labels | None,
) -> None:
    """Which endpoints each resolution needs, as Istio checks them."""
    if endpoints and selector is not None:
        spec.fail(
            "workloadSelector", "a ServiceEntry has endpoints or a workloadSelector, not both"
        )
    if resolution is Resolution.NONE and endpoints:
        spec.fail("endpoints", "resolution NONE forwards to the original address: no endpoints")
    if resolution is Resolution.STATIC and not endpoints and selector is None:
        spec.fail("endpoints", "resolution STATIC needs endpoints (or a workloadSelector)")
    if resolution in _DNS and not endpoints:
        for i, host in enumerate(hosts):
            if host.startswith("*"):
                spec.ctx.fail(
                    f"{spec.at('hosts')}[{i}]",
                    f"{host!r} cannot be resolved by DNS: give endpoints or resolution NONE",
                )
