"""The volumes the injector adds to a pod and where the proxy mounts them: named once here.

The pod's volume list, the proxy's ``volumeMounts`` and un-injection (which removes the volumes
of an earlier injection whose status it cannot read) all take their names from
:data:`PROXY_VOLUMES`. The two lists keep the order of Istio's sidecar template, which differ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from injector.config import InjectorConfig


@dataclass(frozen=True)
class InjectedVolume:
    """A volume of the injected pod and where the proxy mounts it."""

    name: str
    mount_path: str


WORKLOAD_SOCKET = InjectedVolume("workload-socket", "/var/run/secrets/workload-spiffe-uds")
CREDENTIAL_SOCKET = InjectedVolume("credential-socket", "/var/run/secrets/credential-uds")
WORKLOAD_CERTS = InjectedVolume("workload-certs", "/var/run/secrets/workload-spiffe-credentials")
ISTIOD_CA_CERT = InjectedVolume("istiod-ca-cert", "/var/run/secrets/istio")
ISTIO_DATA = InjectedVolume("istio-data", "/var/lib/istio/data")
ISTIO_ENVOY = InjectedVolume("istio-envoy", "/etc/istio/proxy")
ISTIO_TOKEN = InjectedVolume("istio-token", "/var/run/secrets/tokens")
ISTIO_PODINFO = InjectedVolume("istio-podinfo", "/etc/istio/pod")

PROXY_VOLUMES = (
    WORKLOAD_SOCKET,
    CREDENTIAL_SOCKET,
    WORKLOAD_CERTS,
    ISTIOD_CA_CERT,
    ISTIO_DATA,
    ISTIO_ENVOY,
    ISTIO_TOKEN,
    ISTIO_PODINFO,
)
"""Every injected volume, in the order of the proxy's ``volumeMounts`` in Istio's template."""

TOKEN_LIFETIME_SECONDS = 43200  # the projected service account token for the CA: 12 hours


def proxy_volume_mounts() -> list[dict[str, Any]]:
    """The proxy container's mounts of the injected volumes."""
    return [{"mountPath": volume.mount_path, "name": volume.name} for volume in PROXY_VOLUMES]


def pod_volumes(config: InjectorConfig) -> list[dict[str, Any]]:
    """The injected volumes as pod ``volumes`` entries, in the order of Istio's template."""
    token = {
        "audience": config.token_audience,
        "expirationSeconds": TOKEN_LIFETIME_SECONDS,
        "path": "istio-token",
    }
    pod_info = [
        {"fieldRef": {"fieldPath": "metadata.labels"}, "path": "labels"},
        {"fieldRef": {"fieldPath": "metadata.annotations"}, "path": "annotations"},
    ]
    return [
        {"name": WORKLOAD_SOCKET.name, "emptyDir": {}},
        {"name": CREDENTIAL_SOCKET.name, "emptyDir": {}},
        {"name": WORKLOAD_CERTS.name, "emptyDir": {}},
        {"name": ISTIO_ENVOY.name, "emptyDir": {"medium": "Memory"}},
        {"name": ISTIO_DATA.name, "emptyDir": {}},
        {"name": ISTIO_PODINFO.name, "downwardAPI": {"items": pod_info}},
        {"name": ISTIO_TOKEN.name, "projected": {"sources": [{"serviceAccountToken": token}]}},
        {"name": ISTIOD_CA_CERT.name, "configMap": {"name": config.root_cert_config_map}},
    ]
