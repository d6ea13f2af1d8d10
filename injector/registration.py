"""Registering the webhook with an API server the way Istio's chart does, for local runs.

``remora demo`` and the end-to-end suites run the webhook outside the cluster, so they register
it by URL (``clientConfig.url`` + ``caBundle``) instead of by Service; the selectors are the
ones Istio ships. In a cluster the Helm chart renders this object instead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from meshlib.pod_markers import SIDECAR_STATUS_ANNOTATION

PROBE_POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "webhook-probe"},
    "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]},
}


def webhook_configuration(
    name: str,
    url: str,
    ca_bundle: str,
    namespace_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A MutatingWebhookConfiguration calling ``url``, with Istio's namespace and object selectors.

    ``namespace_labels`` are required on the namespace besides ``istio-injection=enabled``
    (a test narrows the webhook to its own namespaces this way).
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            {
                "name": "namespace.sidecar-injector.remora.io",
                "clientConfig": {"url": url, "caBundle": ca_bundle},
                "rules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["CREATE"],
                        "resources": ["pods"],
                    }
                ],
                "namespaceSelector": {
                    "matchLabels": {"istio-injection": "enabled", **(namespace_labels or {})}
                },
                "objectSelector": {
                    "matchExpressions": [
                        {"key": "sidecar.istio.io/inject", "operator": "NotIn", "values": ["false"]}
                    ]
                },
                "sideEffects": "None",
                "admissionReviewVersions": ["v1"],
                "failurePolicy": "Fail",
                "timeoutSeconds": 10,
                "reinvocationPolicy": "Never",
            }
        ],
    }


def wait_until_injecting(core: Any, namespace: str, timeout: float = 30.0) -> None:
    """Block until the API server calls the webhook for ``namespace``.

    The API server loads webhook configurations asynchronously, so dry-run a Pod (nothing is
    stored) until one comes back injected. ``core`` is a ``kubernetes.client.CoreV1Api``.
    """
    deadline = time.monotonic() + timeout
    while True:
        made = core.create_namespaced_pod(namespace, PROBE_POD, dry_run="All")
        if (made.metadata.annotations or {}).get(SIDECAR_STATUS_ANNOTATION):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"the API server never called the injection webhook for namespace {namespace} "
                f"within {timeout:.0f}s; is the webhook reachable from the API server?"
            )
        time.sleep(0.2)
