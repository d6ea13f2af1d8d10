"""Which workload owns a pod, named as Istio names it in telemetry (its ``DeploymentMeta``)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_CRONJOB_JOB = re.compile(r"^(.+)-\d{8,}$")


@dataclass(frozen=True)
class Workload:
    """The object that owns the pod: names the workload in telemetry."""

    kind: str
    api_version: str
    name: str

    def owner_uri(self, namespace: str) -> str:
        """``ISTIO_META_OWNER``: the workload as a Kubernetes API path."""
        return (
            f"kubernetes://apis/{self.api_version}/namespaces/{namespace}/"
            f"{self.kind.lower()}s/{self.name}"
        )


def workload_of(pod: Mapping[str, Any]) -> Workload:
    """The workload that owns a pod, from its controller reference (Istio's heuristics): a
    ReplicaSet named ``<deployment>-<pod-template-hash>`` stands for its Deployment, a Job
    named ``<cronjob>-<scheduled time>`` for its CronJob; a pod of no controller is its own."""
    metadata = pod.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for ref in metadata.get("ownerReferences") or ():
        if not isinstance(ref, dict) or not ref.get("controller"):
            continue
        kind, name = str(ref.get("kind", "")), str(ref.get("name", ""))
        api_version = str(ref.get("apiVersion", "v1"))
        template_hash = labels.get("pod-template-hash")
        if kind == "ReplicaSet" and template_hash and name.endswith("-" + template_hash):
            return Workload("Deployment", "apps/v1", name[: -len(template_hash) - 1])
        if kind == "Job" and (match := _CRONJOB_JOB.match(name)):
            return Workload("CronJob", "batch/v1", match.group(1))
        return Workload(kind, api_version, name)
    name = metadata.get("name") or str(metadata.get("generateName") or "").rstrip("-")
    return Workload("Pod", "v1", name)
