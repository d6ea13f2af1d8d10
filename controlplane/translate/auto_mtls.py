"""Auto-mTLS, the client's side: which endpoints of a service take mTLS, and who they are.

A client upgrades to mTLS exactly for the endpoints that can take it: a pod with a sidecar
(:attr:`Workload.meshed`) whose ``PeerAuthentication`` mode for the endpoint's port is not
DISABLE. It verifies that the server is one of the service accounts of those pods. Both
come from the service's endpoints (what Envoy actually connects to), each resolved to its
pod by ``targetRef`` or, failing that, by IP. Endpoints without a known pod stay plaintext.
"""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.model import EndpointSlice, MeshSnapshot, MtlsMode, Service
from controlplane.translate.endpoints import endpoint_health
from controlplane.translate.peer_authentication import PolicyIndex
from controlplane.translate.tls import spiffe_id


@dataclass(frozen=True)
class ServiceMtls:
    """The mTLS view of one service's endpoints."""

    endpoints: frozenset[tuple[str, int]]  # (address, endpoint port) that accept mTLS
    peer_ids: tuple[str, ...]  # SPIFFE ids of the pods behind them, sorted
    # Service ports (by name) where every endpoint accepts mTLS, and there is one at least.
    all_mtls_ports: frozenset[str]


_PLAINTEXT = ServiceMtls(endpoints=frozenset(), peer_ids=(), all_mtls_ports=frozenset())


def service_mtls(
    snapshot: MeshSnapshot,
    service: Service,
    slices: tuple[EndpointSlice, ...],
    policies: PolicyIndex,
) -> ServiceMtls:
    if not snapshot.workloads:
        # No pod known, so no sidecar anywhere: every endpoint is plaintext (a full push
        # asks this of every service before the first cluster can leave).
        return _PLAINTEXT
    trust_domain = snapshot.mesh.trust_domain
    accepting: set[tuple[str, int]] = set()
    peers: set[str] = set()
    # Per service port name: has an endpoint, has one that is plaintext only.
    served: set[str] = set()
    plaintext: set[str] = set()
    # Every endpoint of every service is looked at on a full push: the per-slice facts
    # (whether it serves, whether it has a plaintext endpoint) are gathered once per slice,
    # and each identity is spelled once per service account.
    workload_of, for_labels = snapshot.workload_of, policies.for_labels
    namespace = service.namespace
    identities: dict[tuple[str, str], str] = {}
    for eps in slices:
        has_served = has_plaintext = False
        for endpoint in eps.endpoints:
            if endpoint_health(endpoint) is None:
                continue
            has_served = True
            workload = workload_of(namespace, endpoint)
            if workload is None or not workload.meshed:
                has_plaintext = True
                continue  # no sidecar there (or no pod known)
            modes = for_labels(workload.namespace, workload.labels)
            account = (workload.namespace, workload.service_account)
            peer = identities.get(account)
            if peer is None:
                peer = identities[account] = spiffe_id(trust_domain, *account)
            for name, number in eps.ports:
                if modes.for_port(number) is MtlsMode.DISABLE:
                    plaintext.add(name)
                    continue
                accepting.add((endpoint.address, number))
                peers.add(peer)
        if has_served:
            served.update(name for name, _ in eps.ports)
        if has_plaintext:
            plaintext.update(name for name, _ in eps.ports)
    return ServiceMtls(
        endpoints=frozenset(accepting),
        peer_ids=tuple(sorted(peers)),
        all_mtls_ports=frozenset(served - plaintext),
    )
