"""Kubernetes objects (plain JSON dicts, camelCase, as the API serves them) to model values.

Both config sources hand objects to these functions, so a Service read from a YAML file and
one watched from the API server become the same :class:`~controlplane.model.Service`. Bad
objects raise :class:`ObjectError` naming the object and the field; the sources log it and
skip that object, so one broken manifest never takes the mesh down.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import yaml

from controlplane.errors import ObjectError
from controlplane.model import (
    ContainerPort,
    Endpoint,
    EndpointSlice,
    MtlsMode,
    Namespace,
    PeerAuthentication,
    Service,
    ServiceKind,
    ServicePort,
    Workload,
    infer_protocol,
)
from controlplane.objectmeta import Object, creation_timestamp, namespace_and_name, object_ref
from meshlib.meshconfig import MeshConfig, parse_mesh_config
from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION, TLS_MODE_ISTIO, TLS_MODE_LABEL

log = logging.getLogger(__name__)

SERVICE_NAME_LABEL = "kubernetes.io/service-name"
TERMINAL_PHASES = frozenset({"Succeeded", "Failed"})
MESH_CONFIGMAP_NAME = "istio"
MESH_CONFIGMAP_KEY = "mesh"


def _labels(raw: Any) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (raw or {}).items()))


def service_from_object(obj: Object) -> Service:
    namespace, name = namespace_and_name(obj)
    spec = obj.get("spec") or {}
    kind_name = spec.get("type") or "ClusterIP"
    cluster_ips = tuple(
        ip for ip in (spec.get("clusterIPs") or [spec.get("clusterIP")]) if ip and ip != "None"
    )
    if kind_name == "ExternalName":
        kind = ServiceKind.EXTERNAL_NAME
        if not spec.get("externalName"):
            raise ObjectError(f"{object_ref(obj)}: spec.externalName is required for ExternalName")
    elif spec.get("clusterIP") == "None":
        kind = ServiceKind.HEADLESS
    else:
        kind = ServiceKind.CLUSTER_IP
    ports = []
    for i, raw in enumerate(spec.get("ports") or []):
        try:
            number = int(raw["port"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ObjectError(f"{object_ref(obj)}: spec.ports[{i}].port is not a number") from exc
        target = raw.get("targetPort")
        if isinstance(target, str) and target.isdigit():
            target = int(target)
        port_name = str(raw.get("name") or "")
        ports.append(
            ServicePort(
                name=port_name,
                port=number,
                protocol=infer_protocol(
                    port_name, raw.get("appProtocol"), raw.get("protocol") or "TCP"
                ),
                target_port=target,
            )
        )
    selector = spec.get("selector")
    return Service(
        name=name,
        namespace=namespace,
        kind=kind,
        ports=tuple(ports),
        cluster_ips=cluster_ips if kind is ServiceKind.CLUSTER_IP else (),
        selector=_labels(selector) if selector else None,
        external_name=spec.get("externalName") if kind is ServiceKind.EXTERNAL_NAME else None,
    )


def _condition(conditions: Mapping[str, Any], name: str, default: bool) -> bool:
    """EndpointSlice conditions: a missing (nil) condition takes its documented default."""
    value = conditions.get(name)
    return default if value is None else bool(value)


def endpoint_slice_from_object(obj: Object) -> EndpointSlice:
    namespace, name = namespace_and_name(obj)
    labels = (obj.get("metadata") or {}).get("labels") or {}
    service_name = labels.get(SERVICE_NAME_LABEL)
    if not service_name:
        raise ObjectError(f"{object_ref(obj)}: label {SERVICE_NAME_LABEL} is missing")
    if obj.get("addressType", "IPv4") not in ("IPv4", "IPv6"):
        # FQDN slices are deprecated and carry no IPs Envoy could connect to.
        raise ObjectError(
            f"{object_ref(obj)}: addressType {obj.get('addressType')} is not supported"
        )
    ports = tuple(
        (str(p.get("name") or ""), int(p["port"]))
        for p in (obj.get("ports") or [])
        if p.get("port")
    )
    endpoints = []
    for raw in obj.get("endpoints") or []:
        conditions = raw.get("conditions") or {}
        ready = _condition(conditions, "ready", True)
        target = raw.get("targetRef") or {}
        for address in raw.get("addresses") or []:
            endpoints.append(
                Endpoint(
                    address=str(address),
                    ready=ready,
                    serving=_condition(conditions, "serving", ready),
                    terminating=_condition(conditions, "terminating", False),
                    zone=raw.get("zone"),
                    node_name=raw.get("nodeName"),
                    pod_name=target.get("name") if target.get("kind") == "Pod" else None,
                )
            )
    return EndpointSlice(
        name=name,
        namespace=namespace,
        service_name=str(service_name),
        ports=ports,
        endpoints=tuple(endpoints),
    )


def is_meshed(labels: Mapping[str, Any], annotations: Mapping[str, Any]) -> bool:
    """Whether a pod has a sidecar that accepts mesh mTLS.

    The injector labels pods ``security.istio.io/tlsMode: istio``; a user may set that label
    to something else (``disabled``) to keep clients on plaintext, so the label decides when
    present. Without it, the injector's status annotation marks a sidecar.
    """
    mode = labels.get(TLS_MODE_LABEL)
    if mode is not None:
        return str(mode) == TLS_MODE_ISTIO
    return SIDECAR_STATUS_ANNOTATION in annotations


def workload_from_pod(obj: Object) -> Workload:
    namespace, name = namespace_and_name(obj)
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    ips = [p.get("ip") for p in status.get("podIPs") or []] or [status.get("podIP")]
    if status.get("phase") in TERMINAL_PHASES or spec.get("hostNetwork"):
        # A finished pod keeps its podIP while the address may already serve a new pod, and
        # a host-network pod's address is the node's, shared: neither names this workload.
        ips = []
    ports = [
        ContainerPort(
            name=str(p.get("name") or ""),
            port=int(p["containerPort"]),
            transport=p.get("protocol") or "TCP",
        )
        for container in spec.get("containers") or []
        for p in container.get("ports") or []
        if p.get("containerPort")
    ]
    return Workload(
        name=name,
        namespace=namespace,
        ips=tuple(str(ip) for ip in ips if ip),
        service_account=str(spec.get("serviceAccountName") or "default"),
        labels=_labels(meta.get("labels")),
        ports=tuple(ports),
        meshed=is_meshed(meta.get("labels") or {}, meta.get("annotations") or {}),
    )


def namespace_from_object(obj: Object) -> Namespace:
    meta = obj.get("metadata") or {}
    if not meta.get("name"):
        raise ObjectError(f"{object_ref(obj)}: metadata.name is missing")
    return Namespace(name=str(meta["name"]), labels=_labels(meta.get("labels")))


def _mtls_mode(obj: Object, raw: Any, where: str) -> MtlsMode:
    if raw is None:
        return MtlsMode.UNSET
    mode = (raw or {}).get("mode") if isinstance(raw, Mapping) else None
    if mode is None:
        return MtlsMode.UNSET
    try:
        return MtlsMode(str(mode).upper())
    except ValueError:
        choices = ", ".join(m.value for m in MtlsMode)
        raise ObjectError(
            f"{object_ref(obj)}: {where}.mode is {mode!r}; use one of {choices}"
        ) from None


def peer_authentication_from_object(obj: Object) -> PeerAuthentication:
    """An Istio ``PeerAuthentication`` (security.istio.io/v1 or v1beta1).

    ``portLevelMtls`` keys are workload ports (numbers); like Istio, they only make sense
    with a selector. A selector-less policy's port settings are dropped with a warning and
    its mode kept, as Istio does without its validating webhook: refusing the whole object
    would silently leave its namespace in the previous (weaker) mode.
    """
    namespace, name = namespace_and_name(obj)
    spec = obj.get("spec") or {}
    selector_spec = spec.get("selector") or {}
    match_labels = selector_spec.get("matchLabels") if isinstance(selector_spec, Mapping) else None
    selector = _labels(match_labels) if match_labels else None
    port_modes = []
    for key, raw in (spec.get("portLevelMtls") or {}).items():
        try:
            port = int(key)
        except (TypeError, ValueError):
            raise ObjectError(
                f"{object_ref(obj)}: spec.portLevelMtls key {key!r} is not a port number"
            ) from None
        if not 0 < port < 65536:
            raise ObjectError(f"{object_ref(obj)}: spec.portLevelMtls port {port} is out of range")
        port_modes.append((port, _mtls_mode(obj, raw, f"spec.portLevelMtls[{port}]")))
    if port_modes and selector is None:
        log.warning(
            "ignoring spec.portLevelMtls of a PeerAuthentication without a selector (port "
            "settings apply to selected workloads only); its mode still applies",
            extra={"object": object_ref(obj)},
        )
        port_modes = []
    return PeerAuthentication(
        name=name,
        namespace=namespace,
        mode=_mtls_mode(obj, spec.get("mtls"), "spec.mtls"),
        selector=selector,
        port_modes=tuple(sorted(port_modes)),
        created=creation_timestamp(obj),
    )


def mesh_config_from_configmap(obj: Object) -> MeshConfig:
    """Istio's mesh ConfigMap (``istio``, key ``mesh``) to a :class:`MeshConfig`."""
    text = (obj.get("data") or {}).get(MESH_CONFIGMAP_KEY) or ""
    try:
        raw = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise ObjectError(
            f"{object_ref(obj)}: data.{MESH_CONFIGMAP_KEY} is not YAML: {exc}"
        ) from exc
    try:
        return parse_mesh_config(raw)
    except ValueError as exc:
        raise ObjectError(f"{object_ref(obj)}: data.{MESH_CONFIGMAP_KEY}: {exc}") from exc
