"""A ServiceEntry's ``spec``, read and checked as istiod's validating webhook does."""

from __future__ import annotations

import ipaddress

from controlplane.networking import parts
from controlplane.networking.fields import Context, Fields
from controlplane.networking.model import (
    Location,
    Resolution,
    ServiceEntry,
    ServiceEntryPort,
    WorkloadEntry,
)

_ENDPOINT_FIELDS = ("address", "ports", "labels", "network", "locality", "weight", "serviceAccount")


def service_entry_spec(
    ctx: Context, spec: Fields, name: str, namespace: str, created: str
) -> ServiceEntry:
    hosts = parts.hosts(spec)
    if "*" in hosts:
        spec.fail("hosts", "'*' is not allowed in a ServiceEntry: name the hosts")
    resolution = spec.enum("resolution", Resolution) or Resolution.NONE
    addresses = parts.subnets(spec, "addresses")
    if resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        for i, address in enumerate(addresses):
            if address.num_addresses > 1:
                ctx.fail(
                    f"{spec.at('addresses')}[{i}]",
                    f"{address} is a range: resolution {resolution} takes single addresses only",
                )
    ports = _ports(spec)
    endpoints = tuple(
        _endpoint(e, resolution, ports) for e in spec.list_of("endpoints", _ENDPOINT_FIELDS)
    )
    selector = parts.workload_selector(spec)
    _check_endpoints(spec, resolution, hosts, endpoints, selector)
    return ServiceEntry(
        name=name,
        namespace=namespace,
        hosts=hosts,
        addresses=addresses,
        ports=ports,
        location=spec.enum("location", Location) or Location.MESH_EXTERNAL,
        resolution=resolution,
        endpoints=endpoints,
        workload_selector=selector,
        export_to=parts.export_to(spec),
        subject_alt_names=spec.strings("subjectAltNames"),
        created=created,
    )


def _ports(spec: Fields) -> tuple[ServiceEntryPort, ...]:
    ports: list[ServiceEntryPort] = []
    for f in spec.list_of("ports", ("number", "protocol", "name", "targetPort")):
        number = f.port("number")
        if number is None:
            f.fail("number", "a port needs a number")
        port = ServiceEntryPort(
            number=number,
            protocol=parts.protocol(f),
            name=parts.port_name(f),
            target_port=f.port("targetPort"),
        )
        if any(p.number == port.number for p in ports):
            f.fail("number", f"port {port.number} is declared twice")
        if any(p.name == port.name for p in ports):
            f.fail("name", f"port name {port.name!r} is declared twice")
        ports.append(port)
    return tuple(ports)


def _endpoint(
    f: Fields, resolution: Resolution, ports: tuple[ServiceEntryPort, ...]
) -> WorkloadEntry:
    address = f.text("address")
    if not address and resolution is not Resolution.NONE:
        f.fail("address", "an endpoint needs an address")
    if resolution is Resolution.STATIC and not address.startswith("unix://"):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            f.fail("address", f"{address!r} is not an IP address (resolution STATIC)")
    elif address and resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN):
        problem = parts.host_problem(address)
        if problem and not _is_ip(address):
            f.fail("address", problem)
    names = {p.name for p in ports}
    endpoint_ports = []
    for port_key, number in sorted(f.mapping("ports").items()):
        path = f"{f.at('ports')}.{port_key}"
        if port_key not in names:
            f.ctx.fail(path, f"the ServiceEntry declares no port named {port_key!r}")
        if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 65535:
            f.ctx.fail(path, f"{number!r} is not a port number (1-65535)")
        endpoint_ports.append((str(port_key), number))
    return WorkloadEntry(
        address=address,
        ports=tuple(endpoint_ports),
        labels=f.string_map("labels"),
        network=f.text("network"),
        locality=f.text("locality"),
        weight=f.integer("weight", 0),
        service_account=f.text("serviceAccount"),
    )


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _check_endpoints(
    spec: Fields,
    resolution: Resolution,
    hosts: tuple[str, ...],
    endpoints: tuple[WorkloadEntry, ...],
    selector: object,
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
    if resolution in (Resolution.DNS, Resolution.DNS_ROUND_ROBIN) and not endpoints:
        for i, host in enumerate(hosts):
            if host.startswith("*"):
                spec.ctx.fail(
                    f"{spec.at('hosts')}[{i}]",
                    f"{host!r} cannot be resolved by DNS: give endpoints or resolution NONE",
                )
