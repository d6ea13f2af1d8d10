"""The mutable side of the model: applies source events and hands out immutable snapshots.

Sources call :meth:`MeshStore.upsert`, :meth:`MeshStore.delete` and, after a (re-)list,
:meth:`MeshStore.replace`, which swaps a whole kind in one step so that a re-list after
``410 Gone`` never exposes a half-updated view. Each object is converted once, when its
event arrives; a snapshot is made only when asked for, and shares with the previous one
the frozen map of every kind (and index) that has not changed since, so an endpoint change
copies the slices and their indexes, not the ten thousand pods.

An object that cannot be used is skipped, and reported to :attr:`MeshStore.status`
(:mod:`controlplane.config_status`), which logs it once and counts it, as it does the valid
networking objects Remora does not honour yet.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from controlplane import convert
from controlplane.config_status import NETWORKING_KINDS, ConfigStatus
from controlplane.model import EndpointSlice, MeshSnapshot, Service, Workload
from controlplane.networking import parse as networking
from controlplane.networking.model import Sidecar
from meshlib.meshconfig import MeshConfig

log = logging.getLogger(__name__)


class Kind(enum.StrEnum):
    """The Kubernetes kinds the model is built from."""

    SERVICE = "Service"
    ENDPOINT_SLICE = "EndpointSlice"
    POD = "Pod"
    NAMESPACE = "Namespace"
    MESH_CONFIG = "ConfigMap"
    PEER_AUTHENTICATION = "PeerAuthentication"
    VIRTUAL_SERVICE = "VirtualService"
    DESTINATION_RULE = "DestinationRule"
    SERVICE_ENTRY = "ServiceEntry"
    SIDECAR = "Sidecar"

    @property
    def is_networking(self) -> bool:
        """Istio's traffic kinds (networking.istio.io), read but not all honoured yet."""
        return self.value in NETWORKING_KINDS


_CONVERTERS: dict[Kind, Callable[[convert.Object], Any]] = {
    Kind.SERVICE: convert.service_from_object,
    Kind.ENDPOINT_SLICE: convert.endpoint_slice_from_object,
    Kind.POD: convert.workload_from_pod,
    Kind.NAMESPACE: convert.namespace_from_object,
    Kind.MESH_CONFIG: convert.mesh_config_from_configmap,
    Kind.PEER_AUTHENTICATION: convert.peer_authentication_from_object,
    Kind.VIRTUAL_SERVICE: networking.virtual_service_from_object,
    Kind.DESTINATION_RULE: networking.destination_rule_from_object,
    Kind.SERVICE_ENTRY: networking.service_entry_from_object,
    Kind.SIDECAR: networking.sidecar_from_object,
}

Key = tuple[str, str]


def _by_namespace(services: Mapping[Key, Service]) -> dict[str, tuple[Service, ...]]:
    grouped: dict[str, list[Service]] = {}
    for key in sorted(services):
        grouped.setdefault(key[0], []).append(services[key])
    return {namespace: tuple(found) for namespace, found in grouped.items()}


def _by_selector_label(
    services: Mapping[Key, Service],
) -> dict[tuple[str, str, str], tuple[Service, ...]]:
    index: dict[tuple[str, str, str], list[Service]] = {}
    for key in sorted(services):
        service = services[key]
        if service.selector:
            label, value = service.selector[0]
            index.setdefault((service.namespace, label, value), []).append(service)
    return {label: tuple(found) for label, found in index.items()}


def _shadowed_sidecars(sidecars: Mapping[Key, Sidecar]) -> dict[Key, Sidecar]:
    """Each Sidecar without a workloadSelector that an older one of its namespace shadows,
    with that older one: a namespace has one default Sidecar, and like istiod the store
    keeps the oldest (by creation time, then name)."""
    defaults: dict[str, Sidecar] = {}
    shadowed: dict[Key, Sidecar] = {}
    for key in sorted(sidecars, key=lambda k: (sidecars[k].created, k[1])):
        sidecar = sidecars[key]
        if sidecar.workload_selector is None:
            default = defaults.setdefault(sidecar.namespace, sidecar)
            if default is not sidecar:
                shadowed[key] = default
    return shadowed


def object_key(kind: Kind, obj: convert.Object) -> Key:
    meta = obj.get("metadata") or {}
    namespace = "" if kind is Kind.NAMESPACE else str(meta.get("namespace") or "default")
    return (namespace, str(meta.get("name") or ""))


class MeshStore:
    """Current model state, fed by sources; ``on_change`` fires after each effective change.

    ``trust_domain``, when given, is the mesh's trust domain whatever the mesh ConfigMap says:
    it is the one the control plane's CA signs (``remora discovery --trust-domain``), and the
    listeners must accept exactly the identities that CA hands out.

    Not thread-safe: call it from the event loop (the Kubernetes source hops threads first).
    """

    def __init__(
        self,
        on_change: Callable[[Kind], None] | None = None,
        domain_suffix: str = "cluster.local",
        trust_domain: str | None = None,
    ) -> None:
        self._objects: dict[Kind, dict[Key, Any]] = {kind: {} for kind in Kind}
        self._on_change = on_change
        self._domain_suffix = domain_suffix
        self._trust_domain = trust_domain
        # The effective mesh config, kept per source object: an unchanged ConfigMap must give
        # the very same object to every snapshot (translation reuses work by identity).
        self._mesh_source: MeshConfig | None = None
        self._mesh: MeshConfig = self._effective_mesh(MeshConfig())
        self._generation = 0
        self._revisions: dict[str, int] = {kind.value: 0 for kind in Kind}
        self._snapshot: MeshSnapshot | None = None
        # Endpoint address -> slices listing it, and -> their services (kept incrementally).
        self._address_slices: dict[str, set[Key]] = {}
        self._address_services: dict[str, frozenset[Key]] = {}
        # Service -> its slices in name order; a service's tuple is replaced only when one of
        # its slices changes.
        self._service_slices: dict[Key, tuple[EndpointSlice, ...]] = {}
        self._service_slice_keys: dict[Key, set[Key]] = {}
        # Service -> generation at which a pod behind it last changed (MeshSnapshot.pod_changes).
        self._pod_changes: dict[Key, int] = {}
        # Pod IP -> the pods claiming it, and -> the first of them by key
        # (MeshSnapshot.workloads_by_ip), kept incrementally.
        self._ip_pods: dict[str, set[Key]] = {}
        self._pod_by_ip: dict[str, Workload] = {}
        # Read-only copies handed to snapshots, per kind or index, with the revision they
        # copy: reused while that revision stands (see _kept).
        self._copies: dict[str, tuple[int, MappingProxyType[Any, Any]]] = {}
        # What is refused or not honoured, for the log (once) and the metrics.
        self.status = ConfigStatus()
        # Sidecars are judged with the others of their namespace (_settle_sidecars): their
        # source objects, and those left out of snapshots for shadowing an older default.
        self._sidecar_objects: dict[Key, convert.Object] = {}
        self._shadowed_sidecars: frozenset[Key] = frozenset()

    def set_listener(self, on_change: Callable[[Kind], None]) -> None:
        self._on_change = on_change

    def upsert(self, kind: Kind, obj: convert.Object) -> bool:
        """Add or update one object; returns whether the model changed. Bad objects are skipped.

        A networking object refused now also takes its previous version out of the model:
        the user sees it refused, and half of their new routing must not run on the old.
        """
        key = object_key(kind, obj)
        value = self._convert(kind, key, obj)
        if value is None:
            if kind.is_networking and self._objects[kind].pop(key, None) is not None:
                self._changed(kind)
                return True
            return False
        old = self._objects[kind].get(key)
        if old == value:
            return False
        self._objects[kind][key] = value
        if kind is Kind.ENDPOINT_SLICE:
            self._index_slice(key, old, value)
        self._changed(kind, pods=[(old, value)] if kind is Kind.POD else ())
        return True

    def delete(self, kind: Kind, namespace: str, name: str) -> bool:
        key = ("" if kind is Kind.NAMESPACE else namespace, name)
        self.status.forget(kind.value, key)
        old = self._objects[kind].pop(key, None)
        if old is None:
            return False
        if kind is Kind.ENDPOINT_SLICE:
            self._index_slice(key, old, None)
        self._changed(kind, pods=[(old, None)] if kind is Kind.POD else ())
        return True

    def replace(self, kind: Kind, objs: Iterable[convert.Object]) -> bool:
        """Make ``objs`` the complete set of ``kind`` (after a list): one change, or none."""
        current = self._objects[kind]
        fresh: dict[Key, Any] = {}
        listed: set[Key] = set()
        for obj in objs:
            key = object_key(kind, obj)
            listed.add(key)
            value = self._convert(kind, key, obj)
            if value is not None:
                old = current.get(key)
                # Keep the old object when equal: translation reuses work by identity.
                fresh[key] = old if old == value else value
        self.status.keep_only(kind.value, listed)
        if fresh.keys() == current.keys() and all(fresh[k] is current[k] for k in fresh):
            return False
        self._objects[kind] = fresh
        changed_pods = (
            [(old, fresh.get(k)) for k, old in current.items() if fresh.get(k) is not old]
            + [(None, new) for k, new in fresh.items() if k not in current]
            if kind is Kind.POD
            else []
        )
        if kind is Kind.ENDPOINT_SLICE:
            before = self._service_slices
            self._address_slices, self._address_services = {}, {}
            self._service_slices, self._service_slice_keys = {}, {}
            for key, value in fresh.items():
                self._index_slice(key, None, value)
            # A re-list changes few services: keep the others' tuples identical (reuse).
            for service, slices in self._service_slices.items():
                old_slices = before.get(service)
                if (
                    old_slices is not None
                    and len(old_slices) == len(slices)
                    and all(a is b for a, b in zip(old_slices, slices, strict=True))
                ):
                    self._service_slices[service] = old_slices
        self._changed(kind, pods=changed_pods)
        return True

    def snapshot(self) -> MeshSnapshot:
        """The current state as an immutable snapshot (the same object until the next change)."""
        if self._snapshot is None:
            self._snapshot = self._assemble()
        return self._snapshot

    def _assemble(self) -> MeshSnapshot:
        configs = list(self._objects[Kind.MESH_CONFIG].values())
        source = configs[0] if configs else None
        if source is not self._mesh_source:
            self._mesh_source = source
            self._mesh = self._effective_mesh(source or MeshConfig())
        services = self._kept(Kind.SERVICE, "services", lambda: self._objects[Kind.SERVICE])
        workloads = self._kept(Kind.POD, "pods", lambda: self._objects[Kind.POD])
        slices, pods = Kind.ENDPOINT_SLICE, Kind.POD
        return MeshSnapshot(
            mesh=self._mesh,
            services=services,
            endpoint_slices=self._kept(slices, "slices", lambda: self._objects[slices]),
            workloads=workloads,
            namespaces=self._kept(
                Kind.NAMESPACE,
                "namespaces",  # cluster-scoped: by name alone
                lambda: {name: ns for (_, name), ns in self._objects[Kind.NAMESPACE].items()},
            ),
            peer_authentications=self._kept(
                Kind.PEER_AUTHENTICATION,
                "policies",
                lambda: self._objects[Kind.PEER_AUTHENTICATION],
            ),
            virtual_services=self._kept_kind(Kind.VIRTUAL_SERVICE),
            destination_rules=self._kept_kind(Kind.DESTINATION_RULE),
            service_entries=self._kept_kind(Kind.SERVICE_ENTRY),
            sidecars=self._kept(
                Kind.SIDECAR,
                "sidecars",
                lambda: {
                    key: sidecar
                    for key, sidecar in self._objects[Kind.SIDECAR].items()
                    if key not in self._shadowed_sidecars
                },
            ),
            domain_suffix=self._domain_suffix,
            generation=self._generation,
            revisions=MappingProxyType(dict(self._revisions)),
            endpoints_by_service=self._kept(slices, "slice index", lambda: self._service_slices),
            services_by_endpoint_address=self._kept(
                slices, "address index", lambda: self._address_services
            ),
            services_by_namespace=self._kept(
                Kind.SERVICE, "namespace index", lambda: _by_namespace(services)
            ),
            services_by_selector_label=self._kept(
                Kind.SERVICE, "selector index", lambda: _by_selector_label(services)
            ),
            workloads_by_ip=self._kept(pods, "IP index", lambda: self._pod_by_ip),
            pod_changes=self._kept(pods, "pod changes", lambda: self._pod_changes),
        )

    def _kept(
        self, kind: Kind, name: str, current: Callable[[], Mapping[Any, Any]]
    ) -> MappingProxyType[Any, Any]:
        """A read-only copy of ``current()``, or the very copy made for the previous snapshot
        while ``kind`` has not changed since (``name`` tells the copies of a kind apart).

        Every map a snapshot holds is made here: an unchanged kind costs nothing, and hands
        translation the same objects it built from last time.
        """
        revision = self._revisions[kind.value]
        kept = self._copies.get(name)
        if kept is not None and kept[0] == revision:
            return kept[1]
        copy = MappingProxyType(dict(current()))
        self._copies[name] = (revision, copy)
        return copy

    def _kept_kind(self, kind: Kind) -> MappingProxyType[Key, Any]:
        """The objects of ``kind`` by (namespace, name), shared while ``kind`` is unchanged."""
        return self._kept(kind, kind.value, lambda: self._objects[kind])

    def _effective_mesh(self, mesh: MeshConfig) -> MeshConfig:
        if self._trust_domain is None or mesh.trust_domain == self._trust_domain:
            return mesh
        if mesh.trust_domain != MeshConfig().trust_domain:
            log.warning(
                "the mesh config's trustDomain is overridden by --trust-domain",
                extra={"mesh_config": mesh.trust_domain, "trust_domain": self._trust_domain},
            )
        return dataclasses.replace(mesh, trust_domain=self._trust_domain)

    def _index_slice(self, key: Key, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        slices = self._objects[Kind.ENDPOINT_SLICE]
        if old is not None:
            self._service_slice_keys.get((old.namespace, old.service_name), set()).discard(key)
        if new is not None:
            self._service_slice_keys.setdefault((new.namespace, new.service_name), set()).add(key)
        for service in {(e.namespace, e.service_name) for e in (old, new) if e is not None}:
            keys = self._service_slice_keys.get(service)
            if keys:
                self._service_slices[service] = tuple(slices[k] for k in sorted(keys))
            else:
                self._service_slice_keys.pop(service, None)
                self._service_slices.pop(service, None)
        touched: set[str] = set()
        for endpoint in old.endpoints if old is not None else ():
            self._address_slices.get(endpoint.address, set()).discard(key)
            touched.add(endpoint.address)
        for endpoint in new.endpoints if new is not None else ():
            self._address_slices.setdefault(endpoint.address, set()).add(key)
            touched.add(endpoint.address)
        for address in touched:
            keys = self._address_slices.get(address)
            if keys:
                self._address_services[address] = frozenset(
                    (k[0], slices[k].service_name) for k in keys
                )
            else:
                self._address_slices.pop(address, None)
                self._address_services.pop(address, None)

    def _index_pod(self, old: Workload | None, new: Workload | None) -> None:
        """Keep ``workloads_by_ip`` for a changed pod: the first pod by key claiming an IP."""
        touched: set[str] = set()
        if old is not None:
            for ip in old.ips:
                self._ip_pods.get(ip, set()).discard(old.key)
                touched.add(ip)
        if new is not None:
            for ip in new.ips:
                self._ip_pods.setdefault(ip, set()).add(new.key)
                touched.add(ip)
        pods = self._objects[Kind.POD]
        for ip in touched:
            claims = self._ip_pods.get(ip)
            if claims:
                self._pod_by_ip[ip] = pods[min(claims)]
            else:
                self._ip_pods.pop(ip, None)
                self._pod_by_ip.pop(ip, None)

    def _stamp_pod_change(self, old: Workload | None, new: Workload | None) -> None:
        """Note, at this generation, the services a changed pod is behind: those whose
        endpoints carry one of its addresses, before or after the change."""
        for workload in (old, new):
            for ip in workload.ips if workload is not None else ():
                for service in self._address_services.get(ip, ()):
                    self._pod_changes[service] = self._generation

    def counts(self) -> dict[str, int]:
        return {kind.value: len(objs) for kind, objs in self._objects.items()}

    def _convert(self, kind: Kind, key: Key, obj: convert.Object) -> Any:
        """The model value of ``obj``, or None (refused: said once, counted) if unusable."""
        try:
            value = _CONVERTERS[kind](obj)
        except (convert.ObjectError, KeyError, TypeError, ValueError) as exc:
            self.status.refused(kind.value, key, obj, str(exc))
            return None
        if kind is Kind.SIDECAR:
            self._sidecar_objects[key] = obj  # reported by _settle_sidecars, with its peers
        else:
            self.status.accepted(kind.value, key, obj, value)
        return value

    def _settle_sidecars(self) -> None:
        """Apply "one Sidecar without a workloadSelector per namespace" after a Sidecar
        change: the newer defaults are refused (said once, counted) and left out of snapshots
        until the older one goes."""
        sidecars = self._objects[Kind.SIDECAR]
        self._sidecar_objects = {k: o for k, o in self._sidecar_objects.items() if k in sidecars}
        shadowed = _shadowed_sidecars(sidecars)
        for key, sidecar in sidecars.items():
            obj = self._sidecar_objects[key]
            default = shadowed.get(key)
            if default is None:
                self.status.accepted(Kind.SIDECAR.value, key, obj, sidecar)
            else:
                self.status.refused(
                    Kind.SIDECAR.value,
                    key,
                    obj,
                    f"Sidecar {key[0]}/{key[1]}: spec.workloadSelector: unset, and the older "
                    f"Sidecar {default.namespace}/{default.name} already has none: a namespace "
                    "has one default Sidecar, the oldest (as in Istio); give this one a "
                    "workloadSelector or delete one of them",
                )
        self._shadowed_sidecars = frozenset(shadowed)

    def _changed(
        self, kind: Kind, pods: Iterable[tuple[Workload | None, Workload | None]] = ()
    ) -> None:
        """Record a change of ``kind`` (with the pods that changed, old and new), then tell
        the listener: everything a snapshot reads is in place before anyone can take one."""
        self._generation += 1
        self._revisions[kind.value] = self._generation
        if kind is Kind.SIDECAR:
            self._settle_sidecars()
        for old, new in pods:
            self._index_pod(old, new)
            self._stamp_pod_change(old, new)
        self._snapshot = None
        if self._on_change is not None:
            self._on_change(kind)
