"""Kubernetes objects as the API returns them, for the tests and benches that feed the store.

:func:`service_object` and :func:`endpoint_slice_object` build the Services and
EndpointSlices the control plane's sources read, as plain dicts in the API's shape, so that a
test writes only what its case is about. Each writes only what it is given: what it leaves
out, Kubernetes (and :mod:`controlplane.convert`) reads by its default.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypedDict, Unpack

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
"""The label that ties an EndpointSlice to its Service."""


class ServiceFields(TypedDict, total=False):
    """A Service's optional fields (:func:`service_object`)."""

    target_ports: Mapping[str, int] | None  # port name -> targetPort, for the ports it names
    selector: Mapping[str, str] | None
    external_name: str | None  # makes an ExternalName service
    with_api_version: bool  # adds apiVersion (files, the API server); the store needs none


class EndpointSliceFields(TypedDict, total=False):
    """An EndpointSlice's optional fields (:func:`endpoint_slice_object`)."""

    name: str | None  # the slice's name; the service's by default
    ready: bool | None  # every endpoint's condition; None writes none (read as ready)
    address_type: str | None  # None writes no addressType (read as IPv4)
    protocol: str | None  # every port's protocol
    zones: Mapping[str, str] | None  # address -> its endpoint's zone
    pods: Mapping[str, str] | None  # address -> the Pod its targetRef names
    with_api_version: bool


def service_object(
    name: str,
    namespace: str,
    cluster_ip: str | None,
    ports: Mapping[str, int],
    **fields: Unpack[ServiceFields],
) -> dict[str, Any]:
    """A Service as the API returns it: ``ports`` maps each port's name to its number.

    The builder writes only what it is given, so an object is exactly what the test asked
    for: ``cluster_ip`` ``None`` leaves ``clusterIP`` out (``"None"`` is headless);
    ``target_ports`` sets ``targetPort`` on the ports it names; ``external_name`` makes an
    ExternalName service; ``with_api_version`` adds ``apiVersion``, which files read by the
    file source and objects sent to the API server need and the store does not.
    """
    spec: dict[str, Any] = {}
    if cluster_ip is not None:
        spec["clusterIP"] = cluster_ip
    if (selector := fields.get("selector")) is not None:
        spec["selector"] = dict(selector)
    if (external_name := fields.get("external_name")) is not None:
        spec.update(type="ExternalName", externalName=external_name)
    targets = fields.get("target_ports") or {}
    spec["ports"] = [
        {
            "name": port_name,
            "port": port,
            **({"targetPort": targets[port_name]} if port_name in targets else {}),
        }
        for port_name, port in ports.items()
    ]
    return {
        **({"apiVersion": "v1"} if fields.get("with_api_version") else {}),
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def endpoint_slice_object(
    service: str,
    namespace: str,
    ports: Mapping[str, int],
    addresses: Sequence[str],
    **fields: Unpack[EndpointSliceFields],
) -> dict[str, Any]:
    """An EndpointSlice of ``service``: one endpoint per address, ``ports`` name -> number.

    Like :func:`service_object` it writes only what it is given, and what it leaves out
    Kubernetes (and :mod:`controlplane.convert`) reads by its default: ``name`` defaults to
    the service's name; ``ready`` ``None`` writes no ``conditions`` (read as ready, serving,
    not terminating); ``address_type`` ``None`` writes no ``addressType`` (read as IPv4);
    ``protocol`` sets every port's protocol. ``zones`` and ``pods`` map an address to its
    endpoint's ``zone`` and to the Pod its ``targetRef`` names. Endpoints in other states
    than ready or not are a case for a literal the test spells out.
    """
    ready, protocol = fields.get("ready"), fields.get("protocol")
    zone_of, pod_of = fields.get("zones") or {}, fields.get("pods") or {}

    def endpoint(address: str) -> dict[str, Any]:
        built: dict[str, Any] = {"addresses": [address]}
        if ready is not None:
            built["conditions"] = {"ready": ready}
        if address in zone_of:
            built["zone"] = zone_of[address]
        if address in pod_of:
            built["targetRef"] = {"kind": "Pod", "name": pod_of[address]}
        return built

    name, address_type = fields.get("name"), fields.get("address_type")
    return {
        **({"apiVersion": "discovery.k8s.io/v1"} if fields.get("with_api_version") else {}),
        "kind": "EndpointSlice",
        "metadata": {
            "name": service if name is None else name,
            "namespace": namespace,
            "labels": {SERVICE_NAME_LABEL: service},
        },
        **({"addressType": address_type} if address_type is not None else {}),
        "ports": [
            {
                "name": port_name,
                "port": port,
                **({"protocol": protocol} if protocol is not None else {}),
            }
            for port_name, port in ports.items()
        ],
        "endpoints": [endpoint(address) for address in addresses],
    }
