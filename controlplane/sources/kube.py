"""The Kubernetes source: list-then-watch each kind the model needs, into a :class:`MeshStore`.

One thread per kind (the official client is synchronous) lists, hands the complete list to
the store in one :meth:`MeshStore.replace` (so a re-list is applied atomically), then
watches from the list's ``resourceVersion``. When the watch ends it resumes from the last
version seen; on ``410 Gone`` (that version was compacted away) it re-lists; on any
other error it backs off (jittered, 0.5 s doubling to 30 s, reset after 30 healthy
seconds) and re-lists. Every store
update hops onto the event loop, so the store stays single-threaded.

Istio's kinds are custom resources whose CRDs may be missing: a 404 means "none of them"
(looked for again every 30 s). The networking kinds are listed as ``v1``, else ``v1beta1``,
else ``v1alpha3``, whichever the API server serves first (Istio up to 1.21 has no ``v1``).

The source reports "synced" once every kind has been listed once: before that the control
plane serves nothing, rather than a mesh with services but no endpoints yet.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from kubernetes import client, watch
from kubernetes.client.rest import ApiException

from controlplane.convert import MESH_CONFIGMAP_NAME
from controlplane.metrics import ControlPlaneMetrics
from controlplane.networking.parse import GROUP
from controlplane.store import Kind, MeshStore

log = logging.getLogger(__name__)

WATCH_SECONDS = 300
BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
HEALTHY_AFTER = 30.0  # a watch that ran this long resets the back-off


NETWORKING_VERSIONS = ("v1", "v1beta1", "v1alpha3")
"""The versions of networking.istio.io to try, newest first: Istio up to 1.21 serves only
v1beta1 and v1alpha3 (same schema), and a cluster may have either CRDs installed."""

_NETWORKING_PLURALS = {
    Kind.VIRTUAL_SERVICE: "virtualservices",
    Kind.DESTINATION_RULE: "destinationrules",
    Kind.SERVICE_ENTRY: "serviceentries",
    Kind.SIDECAR: "sidecars",
}


@dataclass(frozen=True)
class _Resource:
    kind: Kind
    list_call: Callable[..., Any]
    kwargs: dict[str, Any]
    # A CRD that may not be installed (Istio's CRDs): 404 means "none", not an error.
    optional: bool = False
    # Custom resources: the versions to try in order when the API server answers 404
    # (``kwargs`` holds the first).
    fallback_versions: tuple[str, ...] = ()

    def candidates(self) -> list[dict[str, Any]]:
        """The list-call arguments to try, preferred version first."""
        return [self.kwargs] + [{**self.kwargs, "version": v} for v in self.fallback_versions]


class KubeSource:
    """Keeps a :class:`MeshStore` in step with the API server. Call :meth:`start` on the loop."""

    def __init__(
        self,
        api: client.ApiClient,
        store: MeshStore,
        metrics: ControlPlaneMetrics | None = None,
        mesh_namespace: str = "istio-system",
        on_synced: Callable[[], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.on_synced = on_synced
        core, discovery = client.CoreV1Api(api), client.DiscoveryV1Api(api)
        custom = client.CustomObjectsApi(api)
        self._resources = [
            _Resource(
                Kind.MESH_CONFIG,
                core.list_namespaced_config_map,
                {
                    "namespace": mesh_namespace,
                    "field_selector": f"metadata.name={MESH_CONFIGMAP_NAME}",
                },
            ),
            _Resource(Kind.NAMESPACE, core.list_namespace, {}),
            _Resource(Kind.SERVICE, core.list_service_for_all_namespaces, {}),
            _Resource(Kind.ENDPOINT_SLICE, discovery.list_endpoint_slice_for_all_namespaces, {}),
            _Resource(Kind.POD, core.list_pod_for_all_namespaces, {}),
            _Resource(
                Kind.PEER_AUTHENTICATION,
                custom.list_cluster_custom_object,
                {"group": "security.istio.io", "version": "v1", "plural": "peerauthentications"},
                optional=True,
            ),
            *(
                _Resource(
                    kind,
                    custom.list_cluster_custom_object,
                    {"group": GROUP, "version": NETWORKING_VERSIONS[0], "plural": plural},
                    optional=True,
                    fallback_versions=NETWORKING_VERSIONS[1:],
                )
                for kind, plural in _NETWORKING_PLURALS.items()
            ),
        ]
        # The list-call arguments that worked last, per kind: the watch uses the same version.
        self._served: dict[Kind, dict[str, Any]] = {}
        self._listed: set[Kind] = set()
        self._absent: set[Kind] = set()  # optional kinds the API server does not serve
        self._stopping = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []

    @property
    def synced(self) -> bool:
        return len(self._listed) == len(self._resources)

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for resource in self._resources:
            thread = threading.Thread(
                target=self._run, args=(resource,), name=f"watch-{resource.kind}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Ask the watch threads to finish (they are daemons: a blocked read does not hold exit)."""
        self._stopping.set()

    # --- on the event loop -------------------------------------------------------------

    def _on_loop(self, fn: Callable[[], None]) -> None:
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(fn)

    def _replace(self, kind: Kind, items: list[dict[str, Any]]) -> None:
        self.store.replace(kind, items)
        if kind not in self._listed:
            self._listed.add(kind)
            log.info("listed", extra={"kind": kind.value, "objects": len(items)})
            if self.synced and self.on_synced is not None:
                self.on_synced()

    def _event(self, kind: Kind, event_type: str, obj: dict[str, Any]) -> None:
        if self.metrics is not None:
            self.metrics.watch_events.labels(kind.value, event_type).inc()
        if event_type in ("ADDED", "MODIFIED"):
            self.store.upsert(kind, obj)
        elif event_type == "DELETED":
            meta = obj.get("metadata") or {}
            self.store.delete(kind, str(meta.get("namespace") or "default"), str(meta.get("name")))

    # --- in the watch thread -----------------------------------------------------------

    def _restart(self, kind: Kind, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.watch_restarts.labels(kind.value, reason).inc()

    def _run(self, resource: _Resource) -> None:
        backoff = BACKOFF_START
        while not self._stopping.is_set():
            listed_at = None
            try:
                version = self._list(resource)
                listed_at = time.monotonic()
                while not self._stopping.is_set():
                    version = self._watch(resource, version)
            except ApiException as exc:
                if exc.status == 404 and resource.optional:
                    # The CRD is not installed: the mesh has no such objects. Look again
                    # later, in case someone installs it (said once, not every 30 s).
                    if resource.kind not in self._absent:
                        self._absent.add(resource.kind)
                        log.info(
                            "kind not served (CRD not installed?), treating as empty",
                            extra={"kind": resource.kind.value, "retry_every": BACKOFF_MAX},
                        )
                    self._on_loop(partial(self._replace, resource.kind, []))
                    self._stopping.wait(BACKOFF_MAX)
                    continue
                if exc.status == 410:
                    log.info(
                        "watch expired (410 Gone), re-listing", extra={"kind": resource.kind.value}
                    )
                    self._restart(resource.kind, "gone")
                    continue
                self._restart(resource.kind, f"http_{exc.status}")
                hint = (
                    " (does the control plane's account have list/watch on it?)"
                    if exc.status in (401, 403)
                    else ""
                )
                log.warning(
                    f"Kubernetes API error, retrying{hint}",
                    extra={
                        "kind": resource.kind.value,
                        "status": exc.status,
                        "reason": exc.reason,
                        "retry_in": round(backoff, 2),
                    },
                )
            except Exception as exc:  # connection refused, reset, timeouts: all mean "retry"
                self._restart(resource.kind, "error")
                log.warning(
                    "Kubernetes API unreachable, retrying",
                    extra={
                        "kind": resource.kind.value,
                        "error": str(exc),
                        "retry_in": round(backoff, 2),
                    },
                )
            if self._stopping.is_set():
                break
            if listed_at is not None and time.monotonic() - listed_at > HEALTHY_AFTER:
                backoff = BACKOFF_START  # it worked for a while: this is a new incident
            self._stopping.wait(backoff * random.uniform(0.8, 1.2))
            # A list that succeeds followed by a watch that fails at once must not hammer
            # the API server, so the back-off only resets after a healthy stretch.
            backoff = min(backoff * 2, BACKOFF_MAX)

    def _list(self, resource: _Resource) -> str:
        candidates = resource.candidates()
        for kwargs in candidates:
            try:
                response = resource.list_call(**kwargs, _preload_content=False, _request_timeout=60)
            except ApiException as exc:
                if exc.status == 404 and kwargs is not candidates[-1]:
                    continue  # this version is not served: try the next
                raise
            break
        if self._served.get(resource.kind) != kwargs and kwargs is not candidates[0]:
            log.info(
                "kind served under an older version, watching that",
                extra={"kind": resource.kind.value, "version": kwargs.get("version")},
            )
        self._served[resource.kind] = kwargs
        self._absent.discard(resource.kind)
        body = json.loads(response.data)
        items = list(body.get("items") or [])
        kind = resource.kind
        self._on_loop(lambda: self._replace(kind, items))
        return str(body.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, resource: _Resource, version: str) -> str:
        """Watch from ``version`` until the server ends the watch; returns the last version seen."""
        stream = watch.Watch()
        kind = resource.kind
        for event in stream.stream(
            resource.list_call,
            **self._served.get(resource.kind, resource.kwargs),
            resource_version=version,
            allow_watch_bookmarks=True,
            timeout_seconds=WATCH_SECONDS,
            _request_timeout=WATCH_SECONDS + 30,
            deserialize=False,
        ):
            if self._stopping.is_set():
                stream.stop()
                break
            event_type = event.get("type")
            obj = event.get("object") or {}
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if event_type == "BOOKMARK":
                continue
            self._on_loop(partial(self._event, kind, str(event_type), obj))
        return version
