"""Which mutual TLS mode a workload's ports accept, from Istio's ``PeerAuthentication`` policies.

Istio's rules, applied to plain model values:

* three levels: the **mesh** (a selector-less policy in the root namespace), the
  **namespace** (a selector-less policy in the workload's namespace) and the **workload**
  (a policy of its namespace whose ``selector.matchLabels`` pick the pod);
* the more specific level wins, and a level whose mode is ``UNSET`` inherits its parent's;
  with no policy at all the mode is ``PERMISSIVE``;
* when several policies exist at one level, the oldest (creationTimestamp, then name) wins
  and the others are ignored;
* ``portLevelMtls`` of the workload policy overrides the mode of one workload (container)
  port; ``UNSET`` there inherits the workload's mode.

The answer serves both sides: the inbound listener of the workload's own sidecar, and every
client deciding whether to speak mTLS to it (auto-mTLS).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from controlplane.model import MtlsMode, PeerAuthentication

DEFAULT_MODE = MtlsMode.PERMISSIVE


@dataclass(frozen=True)
class WorkloadMtls:
    """The effective modes of one workload: ``mode`` for every port but the overridden ones."""

    mode: MtlsMode = DEFAULT_MODE
    port_modes: tuple[tuple[int, MtlsMode], ...] = ()

    def for_port(self, port: int) -> MtlsMode:
        for number, mode in self.port_modes:
            if number == port:
                return mode
        return self.mode

    @property
    def modes(self) -> frozenset[MtlsMode]:
        """Every mode some port of the workload may be in."""
        return frozenset((self.mode, *(mode for _, mode in self.port_modes)))


def _age(policy: PeerAuthentication) -> tuple[str, str]:
    return (policy.created, policy.name)


@dataclass(frozen=True)
class PolicyIndex:
    """The policies of a snapshot arranged for lookups: build once per policy change."""

    root_namespace: str
    # Per namespace: the selector-less policy that counts (the oldest), if any.
    namespace_policy: Mapping[str, PeerAuthentication]
    # Per namespace: the policies with a selector, oldest first.
    workload_policies: Mapping[str, tuple[PeerAuthentication, ...]]
    _namespace_modes: dict[str, WorkloadMtls] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _label_modes: dict[tuple[str, tuple[tuple[str, str], ...]], WorkloadMtls] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    @classmethod
    def build(cls, policies: Iterable[PeerAuthentication], root_namespace: str) -> PolicyIndex:
        namespace_policy: dict[str, PeerAuthentication] = {}
        workload_policies: dict[str, list[PeerAuthentication]] = {}
        for policy in sorted(policies, key=_age):
            if policy.selector is None:
                namespace_policy.setdefault(policy.namespace, policy)
            else:
                workload_policies.setdefault(policy.namespace, []).append(policy)
        return cls(
            root_namespace=root_namespace,
            namespace_policy=namespace_policy,
            workload_policies={ns: tuple(found) for ns, found in workload_policies.items()},
        )

    def workload_mtls(self, namespace: str, labels: Mapping[str, str]) -> WorkloadMtls:
        """The effective modes of a pod of ``namespace`` with ``labels``."""
        workload = next(
            (p for p in self.workload_policies.get(namespace, ()) if p.selects(labels)), None
        )
        if workload is None:
            # The common case, asked for every endpoint of every service: once per namespace.
            found = self._namespace_modes.get(namespace)
            if found is None:
                found = self._namespace_modes[namespace] = self._compose(namespace, None)
            return found
        return self._compose(namespace, workload)

    def for_labels(self, namespace: str, labels: tuple[tuple[str, str], ...]) -> WorkloadMtls:
        """:meth:`workload_mtls` remembered by label set: the pods of one ReplicaSet share it,
        and clients ask for every endpoint of every service."""
        key = (namespace, labels)
        found = self._label_modes.get(key)
        if found is None:
            found = self._label_modes[key] = self.workload_mtls(namespace, dict(labels))
        return found

    def _compose(self, namespace: str, workload: PeerAuthentication | None) -> WorkloadMtls:
        mode = DEFAULT_MODE
        for policy in (
            self.namespace_policy.get(self.root_namespace),
            self.namespace_policy.get(namespace),
            workload,
        ):
            if policy is not None and policy.mode is not MtlsMode.UNSET:
                mode = policy.mode
        if workload is None:
            return WorkloadMtls(mode)
        ports = tuple(
            (port, mode if port_mode is MtlsMode.UNSET else port_mode)
            for port, port_mode in workload.port_modes
        )
        return WorkloadMtls(mode, ports)
