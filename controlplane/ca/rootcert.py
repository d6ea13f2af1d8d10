"""Publishing the mesh root to every namespace as the ``istio-ca-root-cert`` ConfigMap.

Injected pods mount it (``/var/run/secrets/istio/root-cert.pem``) to verify the control
plane and their peers. A namespace watch creates it in new namespaces; a watch on the
ConfigMaps of that name repairs any that is edited or deleted. Deciding is pure
(:func:`desired_configmap`, :func:`needs_repair`); the watches are thin threads.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Any

from kubernetes import client, watch

log = logging.getLogger(__name__)

CONFIGMAP_NAME = "istio-ca-root-cert"
ROOT_KEY = "root-cert.pem"
LABELS = {"istio.io/config": "true"}
# Istio's inject.IgnoredNamespaces: no meshed workload runs there.
DEFAULT_SKIPPED_NAMESPACES = frozenset({"kube-system", "kube-public", "kube-node-lease"})


def desired_configmap(namespace: str, root_pem: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIGMAP_NAME, "namespace": namespace, "labels": dict(LABELS)},
        "data": {ROOT_KEY: root_pem},
    }


def needs_repair(data: dict[str, str] | None, root_pem: str) -> bool:
    """True unless the ConfigMap's data is exactly ``{root-cert.pem: <our root>}``."""
    return (data or {}) != {ROOT_KEY: root_pem}


class RootCertPublisher:
    """Keeps ``istio-ca-root-cert`` right in every namespace (except ``skipped``)."""

    def __init__(
        self,
        api: client.ApiClient,
        root_pem: str,
        *,
        skipped: Iterable[str] = DEFAULT_SKIPPED_NAMESPACES,
        watch_timeout_s: int = 30,
        on_repair: Callable[[str], None] | None = None,
    ) -> None:
        self._core = client.CoreV1Api(api)
        self.root_pem = root_pem
        self.skipped = frozenset(skipped)
        self._watch_timeout = watch_timeout_s
        self._on_repair = on_repair
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.repairs = 0

    def ensure(self, namespace: str) -> bool:
        """Create or fix the ConfigMap in ``namespace``; True if something was written."""
        if namespace in self.skipped:
            return False
        try:
            current = self._core.read_namespaced_config_map(CONFIGMAP_NAME, namespace)
        except client.ApiException as exc:
            if exc.status != 404:
                raise
            current = None
        body = desired_configmap(namespace, self.root_pem)
        try:
            if current is None:
                self._core.create_namespaced_config_map(namespace, body)
            elif needs_repair(current.data, self.root_pem):
                body["metadata"]["resourceVersion"] = current.metadata.resource_version
                self._core.replace_namespaced_config_map(CONFIGMAP_NAME, namespace, body)
            else:
                return False
        except client.ApiException as exc:
            # 409: someone wrote in between (the watch brings us back); 403/404: the
            # namespace is terminating or gone. Neither is worth more than a log line.
            if exc.status in (403, 404, 409):
                log.info(
                    "root certificate not written",
                    extra={"namespace": namespace, "status": exc.status},
                )
                return False
            raise
        self.repairs += 1
        log.info("root certificate published", extra={"namespace": namespace})
        if self._on_repair:
            self._on_repair(namespace)
        return True

    def _safe_ensure(self, namespace: str) -> None:
        if self._stop.is_set():
            return  # a stopped publisher (maybe of an old root) must not write any more
        try:
            self.ensure(namespace)
        except Exception:
            log.exception("publishing the root certificate failed", extra={"namespace": namespace})

    def _watch(
        self, list_fn: Callable[..., Any], on_event: Callable[[str, Any], None], **kw: Any
    ) -> None:
        resource_version = ""
        failures = 0
        while not self._stop.is_set():
            try:
                if not resource_version:
                    listing = list_fn(**kw)
                    for item in listing.items:
                        on_event("ADDED", item)
                    resource_version = listing.metadata.resource_version
                    failures = 0
                for event in watch.Watch().stream(
                    list_fn,
                    resource_version=resource_version,
                    timeout_seconds=self._watch_timeout,
                    **kw,
                ):
                    obj = event["object"]
                    resource_version = obj.metadata.resource_version
                    on_event(event["type"], obj)
                    if self._stop.is_set():
                        return
            except client.ApiException as exc:
                if exc.status == 410:  # resource version too old: list again
                    resource_version = ""
                    continue
                failures += 1
                self._retry_later(exc, failures)
            except Exception as exc:  # connection reset, apiserver restart, ...
                resource_version = ""
                failures += 1
                self._retry_later(exc, failures)

    def _retry_later(self, exc: Exception, failures: int) -> None:
        """Back off (1 s doubling to 30 s): a missing permission must not flood the log."""
        delay = min(30.0, 2.0 ** (failures - 1))
        hint = (
            " (the control plane needs get/list/watch/update on configmaps named "
            f"{CONFIGMAP_NAME} and create on configmaps)"
            if isinstance(exc, client.ApiException) and exc.status == 403
            else ""
        )
        log.warning(
            "root certificate watch failed; retrying" + hint,
            extra={"error": str(exc), "retry_in_s": delay},
        )
        self._stop.wait(delay)

    def _on_namespace(self, kind: str, ns: Any) -> None:
        if kind in ("ADDED", "MODIFIED") and ns.status.phase != "Terminating":
            self._safe_ensure(ns.metadata.name)

    def _on_configmap(self, kind: str, cm: Any) -> None:
        if kind == "DELETED" or needs_repair(cm.data, self.root_pem):
            self._safe_ensure(cm.metadata.namespace)

    def start(self) -> None:
        """Start the two watches (daemon threads); the initial listings publish everywhere."""
        targets: list[tuple[Callable[..., Any], Callable[[str, Any], None], dict[str, Any]]] = [
            (self._core.list_namespace, self._on_namespace, {}),
            (
                self._core.list_config_map_for_all_namespaces,
                self._on_configmap,
                {"field_selector": f"metadata.name={CONFIGMAP_NAME}"},
            ),
        ]
        for list_fn, handler, kw in targets:
            thread = threading.Thread(
                target=self._watch,
                args=(list_fn, handler),
                kwargs=kw,
                daemon=True,
                name=f"root-cert-{handler.__name__}",
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 1.0) -> None:
        """Ask the watches to stop; they end at their next event or watch timeout."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
