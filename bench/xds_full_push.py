"""Full push: 1,000 services x 10 endpoints to one connected Envoy, time to the last ACK.

The Envoy is connected and synced on an empty mesh first; the clock starts just before the
control plane publishes the full mesh (translation included) and stops when every xDS type
of that proxy is ACKed at the published version. Each run uses a fresh control plane and
Envoy. Envoy runs with the sidecar agent's own bootstrap and command line
(:class:`xds_common.SidecarEnvoy`): ``--stats product`` is that bootstrap (Istio's stats
inclusion list, deferred stats), ``--stats every`` the same without them (every stat, created
up front: the bootstrap before the inclusion list).

Run: .venv/bin/python bench/xds_full_push.py [--runs 5] [--concurrency 2] [--stats product,every]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xds_common import SidecarEnvoy, mesh

from controlplane.app import DiscoveryOptions
from controlplane.resources import PUSH_ORDER, ProxyResources
from controlplane.sources.files import load_into
from controlplane.store import MeshStore
from controlplane.testing import ControlPlaneThread, wait_for
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
    services: int, endpoints: int, delta: bool, every_stat: bool, concurrency: int
) -> tuple[float, float, int, dict[str, float], int]:
    """(seconds to the last ACK, seconds to the first response on the wire, clusters in Envoy,
    Envoy's memory after the push, stats Envoy holds)."""
    store = MeshStore()
    load_into(store, mesh(services, endpoints))
    snapshot = store.snapshot()
    cp = ControlPlaneThread(DiscoveryOptions(xds_address="127.0.0.1:0", monitoring_address=None))
    try:
        with SidecarEnvoy(
            "client-0",
            "bench",
            "10.200.0.1",
            cp.xds_port,
            delta=delta,
            concurrency=concurrency,
            every_stat=every_stat,
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
            return (
                elapsed,
                first_send[0] - started,
                envoy.active_clusters(),
                envoy.memory(),
                envoy.stat_count(),
            )
    finally:
        cp.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--concurrency",
        type=int,
        default=2,
        help="Envoy worker threads (the agent's default without a CPU limit is 2)",
    )
    parser.add_argument("--stats", default="product,every", help="product, every, or both")
    parser.add_argument("--modes", default="delta,sotw", help="delta, sotw, or both")
    args = parser.parse_args()
    with open("/proc/loadavg") as loadavg:
        load = " ".join(loadavg.read().split()[:3])
    print(
        f"full push: {args.services} services x {args.endpoints} endpoints to one Envoy "
        f"(--concurrency {args.concurrency}), {args.runs} runs each, load average {load}"
    )
    for stats in args.stats.split(","):
        for mode in args.modes.split(","):
            results = [
                one_run(
                    args.services,
                    args.endpoints,
                    mode == "delta",
                    stats == "every",
                    args.concurrency,
                )
                for _ in range(args.runs)
            ]
            totals = [r[0] * 1000 for r in results]
            firsts = [r[1] * 1000 for r in results]
            memory = results[-1][3]
            print(
                f"  {mode:5} stats={stats:7}: last ACK median {statistics.median(totals):.0f} ms "
                f"(runs {', '.join(f'{t:.0f}' for t in totals)}); first response sent after "
                f"{statistics.median(firsts):.0f} ms; Envoy holds {results[-1][2]} clusters, "
                f"{results[-1][4]} stats, RSS {memory['Rss']:.0f} MiB "
                f"({memory['Anonymous']:.0f} MiB anonymous)"
            )
    with open("/proc/loadavg") as loadavg:
        print(f"load average after: {' '.join(loadavg.read().split()[:3])}")


if __name__ == "__main__":
    main()
