"""What the control plane would send one pod's proxy, computed offline from a directory of YAML.

``remora proxy-config POD.NS all --config-dir DIR``: no cluster and no running proxy. The
directory holds what a cluster would (Namespaces, Services, EndpointSlices, Pods, Istio's
kinds, the mesh ConfigMap), read exactly as ``remora discovery --config-dir`` reads it, and the
pod's proxy is identified as its sidecar would identify itself (its address, namespace, service
account and labels). So a change to a VirtualService can be checked in CI, as Envoy JSON,
before it reaches the mesh.
"""

from __future__ import annotations

from pathlib import Path

from controlplane.errors import ControlPlaneError
from controlplane.model import MeshSnapshot, Workload
from controlplane.proxy import ProxyIdentity
from controlplane.resources import ProxyResources
from controlplane.sources.files import load_into, read_directory
from controlplane.store import MeshStore
from controlplane.translate.generate import translate


class PreviewError(ControlPlaneError):
    """The directory does not hold what a preview for this pod needs; the message says what."""


def preview(directory: Path, pod_ref: str, domain_suffix: str = "cluster.local") -> ProxyResources:
    """The resources the control plane would send the proxy of ``pod_ref`` (``pod.namespace``)."""
    store = MeshStore(domain_suffix=domain_suffix)
    load_into(store, read_directory(directory))
    snapshot = store.snapshot()
    return translate(snapshot, proxy_of(snapshot, pod_ref, directory, domain_suffix))


def proxy_of(
    snapshot: MeshSnapshot, pod_ref: str, directory: Path, domain_suffix: str
) -> ProxyIdentity:
    """The identity the pod's sidecar would present (node id and metadata, as the agent sends)."""
    name, _, namespace = pod_ref.partition(".")
    namespace = namespace or "default"
    workload: Workload | None = snapshot.workloads.get((namespace, name))
    if workload is None:
        known = sorted(f"{w.name}.{w.namespace}" for w in snapshot.workloads.values())
        raise PreviewError(
            f"no Pod {namespace}/{name} in {directory} (Pods there: {', '.join(known) or 'none'}); "
            "add its YAML, with status.podIP, to preview its proxy"
        )
    if not workload.ips:
        raise PreviewError(
            f"Pod {namespace}/{name} in {directory} has no address: set status.podIP (and "
            "status.podIPs) in its YAML; a proxy is known to the control plane by its address"
        )
    return ProxyIdentity(
        node_id=f"sidecar~{workload.ips[0]}~{name}.{namespace}~{namespace}.svc.{domain_suffix}",
        pod_name=name,
        namespace=namespace,
        ips=workload.ips,
        service_account=workload.service_account,
        labels=workload.labels,
    )
