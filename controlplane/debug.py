"""The monitoring port: Prometheus metrics, readiness, and the control plane's view of proxies.

``/debug/syncz`` is what ``remora proxy-status`` reads; ``/debug/config_dump`` is what
``remora proxy-config`` reads. Both only describe; nothing here changes state.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, HTTPException, Query, Response
from google.protobuf import json_format
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from controlplane.metrics import ControlPlaneMetrics
from controlplane.resources import TYPE_BY_SHORT_NAME
from controlplane.store import MeshStore
from controlplane.xds.server import PushHub


# Every handler is ``async``: it then runs on the event loop, like the xDS server, and never
# races it from a thread pool over the (single-threaded) store and generator.
def _json(value: Any) -> Response:
    # Plain json.dumps: FastAPI's generic encoder costs milliseconds per call on the
    # event loop that also serves xDS, and these answers are already plain data.
    return Response(json.dumps(value, separators=(",", ":")), media_type="application/json")


def create_debug_app(
    hub: PushHub, store: MeshStore, metrics: ControlPlaneMetrics, is_ready: Callable[[], bool]
) -> FastAPI:
    app = FastAPI(title="remora discovery", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/metrics")
    async def prometheus_metrics() -> Response:
        for kind, count in store.counts().items():
            metrics.model_objects.labels(kind).set(count)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/ready")
    async def ready() -> Response:
        if is_ready():
            return Response("ready\n", media_type="text/plain")
        return Response(
            "waiting for the first complete view of the mesh\n",
            status_code=503,
            media_type="text/plain",
        )

    @app.get("/debug/syncz")
    async def syncz() -> Response:
        """Every connected proxy: per xDS type the version sent, ACKed, and the last NACK."""
        statuses = sorted(
            (conn.status() for conn in hub.connections),
            key=lambda s: (s["proxy"], s["connected_at"]),
        )
        return _json(statuses)

    @app.get("/debug/config_dump")
    async def config_dump(
        proxy: str = Query(description="<pod>.<namespace> or a node id"),
        type: str = Query("all", description="clusters, listeners, routes, endpoints or all"),
    ) -> Response:
        """The resources the control plane wants ``proxy`` to have, as Envoy JSON."""
        conn = hub.find(proxy)
        if conn is None:
            connected = sorted(c.identity.pod_ref for c in hub.connections)
            raise HTTPException(
                404, f"no connected proxy {proxy!r}; connected: {', '.join(connected) or 'none'}"
            )
        if conn.desired is None:
            raise HTTPException(503, "the control plane has no complete view of the mesh yet")
        wanted = TYPE_BY_SHORT_NAME if type == "all" else {type: TYPE_BY_SHORT_NAME.get(type, "")}
        if "" in wanted.values():
            raise HTTPException(
                400, f"unknown type {type!r}: use one of {', '.join(TYPE_BY_SHORT_NAME)} or all"
            )
        return _json(
            {
                "proxy": conn.identity.pod_ref,
                **{
                    short: [
                        {
                            "name": r.name,
                            "version": r.version,
                            "resource": json_format.MessageToDict(r.message),
                        }
                        for r in sorted(conn.desired[type_url], key=lambda r: r.name)
                    ]
                    for short, type_url in wanted.items()
                },
            }
        )

    @app.get("/debug/model")
    async def model() -> Response:
        snapshot = hub.snapshot
        return _json(
            {
                "objects": store.counts(),
                "published_generation": snapshot.generation if snapshot else None,
                "current_generation": store.snapshot().generation,
            }
        )

    return app
