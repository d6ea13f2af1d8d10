"""Envoy's node identity from the pod's environment, the way Istio's pilot-agent builds it.

The control plane recognises a proxy by what is written here (see ``docs/sidecar.md`` and
``controlplane/proxy.py``):

* node id ``sidecar~<first instance IP>~<pod>.<namespace>~<namespace>.svc.<cluster domain>``;
* node metadata: every ``ISTIO_META_<KEY>`` variable as ``<KEY>`` (a string), every
  ``ISTIO_METAJSON_<KEY>`` variable as ``<KEY>`` (parsed JSON), then the keys the agent owns:
  ``NAME``, ``NAMESPACE``, ``INSTANCE_IPS``, ``SERVICE_ACCOUNT``, ``LABELS``, ``PROXY_CONFIG``...
  The agent's keys win over the environment, so a pod cannot claim another pod's name.

Everything here is pure: environment in, plain data out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sidecar.errors import NodeMetadataError

META_PREFIX = "ISTIO_META_"
METAJSON_PREFIX = "ISTIO_METAJSON_"


def node_id(
    *, instance_ip: str, pod_name: str, namespace: str, cluster_domain: str = "cluster.local"
) -> str:
    """Istio's sidecar node id: ``sidecar~10.1.2.3~web-7d4.default~default.svc.cluster.local``."""
    return f"sidecar~{instance_ip}~{pod_name}.{namespace}~{namespace}.svc.{cluster_domain}"


def metadata_from_env(env: Mapping[str, str]) -> dict[str, Any]:
    """The node metadata the pod's environment asks for (``ISTIO_META_*``, ``ISTIO_METAJSON_*``)."""
    meta: dict[str, Any] = {}
    for name in sorted(env):
        if name.startswith(METAJSON_PREFIX):
            key = name[len(METAJSON_PREFIX) :]
            try:
                meta[key] = json.loads(env[name])
            except json.JSONDecodeError as exc:
                raise NodeMetadataError(
                    f"{name} is not valid JSON ({exc.msg} at character {exc.pos}); "
                    f"use {META_PREFIX}{key} for a plain string"
                ) from exc
    for name in sorted(env):
        if name.startswith(META_PREFIX) and name[len(META_PREFIX) :]:
            meta[name[len(META_PREFIX) :]] = env[name]
    return meta


def parse_downward_api_map(text: str) -> dict[str, str]:
    """Parse a Kubernetes downward-API ``labels``/``annotations`` file.

    Each line is ``key="value"`` with the value quoted like a Go string (``\\n``, ``\\"``...).
    Lines that do not follow the format are skipped: the file is written by the kubelet,
    and a half-written line must not stop the proxy from starting.
    """
    result: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, quoted = line.partition("=")
        if not sep or not key or len(quoted) < 2 or quoted[0] != '"' or quoted[-1] != '"':
            continue
        try:
            value = json.loads(quoted)
        except json.JSONDecodeError:
            continue
        if isinstance(value, str):
            result[key] = value
    return result


def service_cluster(labels: Mapping[str, str], workload_name: str, namespace: str) -> str:
    """Envoy's ``node.cluster``: ``<canonical service name>.<namespace>``, as Istio names it."""
    name = (
        labels.get("service.istio.io/canonical-name")
        or labels.get("app.kubernetes.io/name")
        or labels.get("app")
        or workload_name
        or "istio-proxy"
    )
    return f"{name}.{namespace}"
