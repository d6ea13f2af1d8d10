"""Full push: 1,000 services x 10 endpoints to one connected Envoy, time to the last ACK.

The Envoy is connected and synced on an empty mesh first; the clock starts just before the
control plane publishes the full mesh (translation included) and stops when every xDS type
of that proxy is ACKed at the published version. Each run uses a fresh control plane and
Envoy. Envoy is measured with two stats configurations: an inclusion list like Istio's
default sidecar bootstrap (what a mesh sidecar runs), and Envoy's default of every stat.

Run: .venv/bin/python bench/xds_full_push.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xds_common import ISTIO_LIKE_STATS, mesh

from controlplane.app import DiscoveryOptions
from controlplane.resources import PUSH_ORDER, ProxyResources
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.testing import ControlPlaneThread, EnvoyProcess, wait_for
from controlplane.xds.protocol import Response
from controlplane.xds.server import ProxyConnection


def fully_acked(conn: ProxyConnection) -> bool:
    desired = conn.desired
    if desired is None:
        return False
    for type_url in PUSH_ORDER:
        state = conn.protocol.types.get(type_url)
        if state is None or state.in_flight is not None:
            return False
        if state.acked_version != desired[type_url].version:
            return False
    return True


def one_run(
    services: int, endpoints: int, delta: bool, istio_stats: bool
) -> tuple[float, float, int]:
    """(seconds to the last ACK, seconds to the first response on the wire, clusters in Envoy)."""
    store = MeshStore()
    load_into(store, mesh(services, endpoints))
    snapshot = store.snapshot()
    cp = ControlPlaneThread(DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None))
    overrides: dict[str, Any] | None = ISTIO_LIKE_STATS if istio_stats else None
    try:
        with EnvoyProcess(
            "client-0",
            "bench",
            "10.200.0.1",
            cp.xds_port,
            delta=delta,
            bootstrap_overrides=overrides,
        ) as envoy:
            conn = wait_for(lambda: next(iter(cp.server.hub.connections), None), what="the proxy")
            wait_for(lambda: "virtualOutbound" in envoy.listener_names(), what="the empty mesh")
            first_send: list[float] = []
            original = conn.protocol.iter_responses

            def timed(desired: ProxyResources | None) -> Iterator[Response]:
                for response in original(desired):
                    if not first_send:
                        first_send.append(time.perf_counter())
                    yield response

            conn.protocol.iter_responses = timed  # type: ignore[method-assign]
            started = time.perf_counter()
            cp.call(lambda: cp.server.hub.publish(snapshot))
            wait_for(
                lambda: cp.call(lambda: fully_acked(conn)),
                timeout=30,
                interval=0.002,
                what="the last ACK",
            )
            elapsed = time.perf_counter() - started
            return elapsed, first_send[0] - started, len(envoy.active_clusters())
    finally:
        cp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"full push: {args.services} services x {args.endpoints} endpoints to one Envoy, {args.runs} runs each"
    )
    for stats in ("istio", "all"):
        for mode in ("delta", "sotw"):
            results = [
                one_run(args.services, args.endpoints, mode == "delta", stats == "istio")
                for _ in range(args.runs)
            ]
            totals = [r[0] * 1000 for r in results]
            firsts = [r[1] * 1000 for r in results]
            print(
                f"  {mode:5} Envoy stats={stats:5}: last ACK median {statistics.median(totals):.0f} ms "
                f"(runs {', '.join(f'{t:.0f}' for t in totals)}); first response sent after "
                f"{statistics.median(firsts):.0f} ms; Envoy holds {results[-1][2]} clusters"
            )


if __name__ == "__main__":
    main()
